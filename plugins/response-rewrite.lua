-- response-rewrite: rewrites the response status, headers and body (a fixed body, or regex
-- filters over the upstream body), optionally only when `vars` match.
local core = require("apisix.core")
local expr = require("resty.expr.v1")

local ngx = ngx
local re_match = ngx.re.match
local re_find = ngx.re.find
local re_sub = ngx.re.sub
local re_gsub = ngx.re.gsub
local pairs = pairs
local ipairs = ipairs
local type = type
local tostring = tostring
local setmetatable = setmetatable
local str_lower = string.lower

local plugin_name = "response-rewrite"

local header_value_def = {
    oneOf = {
        { type = "string" },
        { type = "number" },
    },
}

local schema = {
    type = "object",
    properties = {
        headers = {
            description = "new headers for response",
            anyOf = {
                {
                    type = "object",
                    minProperties = 1,
                    patternProperties = {
                        ["^[^:]+$"] = header_value_def,
                    },
                },
                {
                    properties = {
                        add = {
                            type = "array",
                            minItems = 1,
                            items = {
                                type = "string",
                                -- "Set-Cookie: <cookie-name>=<cookie-value>; Max-Age=<number>"
                                pattern = "^[^:]+:[^:]*[^/]$",
                            },
                        },
                        set = {
                            type = "object",
                            minProperties = 1,
                            patternProperties = {
                                ["^[^:]+$"] = header_value_def,
                            },
                        },
                        remove = {
                            type = "array",
                            minItems = 1,
                            items = {
                                type = "string",
                                -- "Set-Cookie"
                                pattern = "^[^:]+$",
                            },
                        },
                    },
                },
            },
        },
        body = {
            description = "new body for response",
            type = "string",
        },
        body_base64 = {
            description = "whether new body for response need base64 decode before return",
            type = "boolean",
            default = false,
        },
        status_code = {
            description = "new status code for response",
            type = "integer",
            minimum = 200,
            maximum = 598,
        },
        vars = {
            type = "array",
        },
        filters = {
            description = "a group of filters that modify response body"
                .. "by replacing one specified string by another",
            type = "array",
            minItems = 1,
            items = {
                description = "filter that modifies response body",
                type = "object",
                required = { "regex", "replace" },
                properties = {
                    regex = {
                        description = "match pattern on response body",
                        type = "string",
                        minLength = 1,
                    },
                    scope = {
                        description = "regex substitution range",
                        type = "string",
                        enum = { "once", "global" },
                        default = "once",
                    },
                    replace = {
                        description = "regex substitution content",
                        type = "string",
                    },
                    options = {
                        description = "regex options",
                        type = "string",
                        default = "jo",
                    },
                },
            },
        },
    },
    dependencies = {
        body = {
            ["not"] = { required = { "filters" } },
        },
        filters = {
            ["not"] = { required = { "body" } },
        },
    },
}

local _M = {
    version = 0.1,
    priority = 899,
    name = plugin_name,
    schema = schema,
}

local function is_new_headers_conf(headers)
    return (headers.add and type(headers.add) == "table")
        or (headers.set and type(headers.set) == "table")
        or (headers.remove and type(headers.remove) == "table")
end

local function check_set_headers(headers)
    for field, value in pairs(headers) do
        if type(field) ~= "string" then
            return false, "invalid type as header field"
        end
        if type(value) ~= "string" and type(value) ~= "number" then
            return false, "invalid type as header value"
        end
        if #field == 0 then
            return false, "invalid field length in header"
        end
    end
    return true
end

function _M.check_schema(conf)
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return false, err
    end

    if conf.headers and not is_new_headers_conf(conf.headers) then
        ok, err = check_set_headers(conf.headers)
        if not ok then
            return false, err
        end
    end

    if conf.body_base64 then
        if not conf.body or #conf.body == 0 then
            return false, "invalid base64 content"
        end
        if not ngx.decode_base64(conf.body) then
            return false, "invalid base64 content"
        end
    end

    if conf.vars then
        local _, expr_err = expr.new(conf.vars)
        if expr_err then
            return false, "failed to validate the 'vars' expression: " .. tostring(expr_err)
        end
    end

    if conf.filters then
        for _, filter in ipairs(conf.filters) do
            local _, _, re_err = re_find("", filter.regex, filter.options)
            if re_err then
                return false, "regex \"" .. filter.regex .. "\" validation failed: " .. re_err
            end
        end
    end

    return true
end

-- Per-conf derived objects (compiled `vars`, flattened header operations, decoded body), kept
-- while the conf table lives.
local derived = setmetatable({}, { __mode = "k" })

local function derived_of(conf)
    local d = derived[conf]
    if not d then
        d = {}
        derived[conf] = d
    end
    return d
end

local function vars_matched(conf, ctx)
    if not conf.vars then
        return true
    end
    local d = derived_of(conf)
    if not d.response_expr then
        local response_expr, err = expr.new(conf.vars)
        if not response_expr then
            core.log.error("failed to create the vars expression: ", err)
            return false
        end
        d.response_expr = response_expr
    end
    return d.response_expr:eval(ctx.var)
end

local function new_body(conf)
    local d = derived_of(conf)
    if d.body == nil then
        if conf.body_base64 then
            d.body = ngx.decode_base64(conf.body) or ""
        else
            d.body = conf.body
        end
    end
    return d.body
end

local function create_header_operation(hdr_conf)
    local set, add = {}, {}
    if is_new_headers_conf(hdr_conf) then
        if hdr_conf.add then
            for _, value in ipairs(hdr_conf.add) do
                local m, err = re_match(value, [[^([^:\s]+)\s*:\s*([^:]+)$]], "jo")
                if not m then
                    return nil, err or ("invalid header " .. value)
                end
                core.table.insert_tail(add, m[1], m[2])
            end
        end
        if hdr_conf.set then
            for field, value in pairs(hdr_conf.set) do
                core.table.insert_tail(set, field, value)
            end
        end
    else
        for field, value in pairs(hdr_conf) do
            core.table.insert_tail(set, field, value)
        end
    end
    return { add = add, set = set, remove = hdr_conf.remove or {} }
end

local function header_operation(conf)
    local d = derived_of(conf)
    if not d.hdr_op then
        local op, err = create_header_operation(conf.headers)
        if not op then
            return nil, err
        end
        d.hdr_op = op
    end
    return d.hdr_op
end

function _M.header_filter(conf, ctx)
    ctx.response_rewrite_matched = vars_matched(conf, ctx)
    if not ctx.response_rewrite_matched then
        return
    end

    if conf.status_code then
        ngx.status = conf.status_code
    end

    if conf.filters or conf.body then
        local encoding = ngx.header["Content-Encoding"]
        if type(encoding) == "table" then
            encoding = encoding[#encoding]
        end
        if conf.filters and encoding and str_lower(encoding) ~= "identity" then
            -- Moongate cannot inflate the upstream body, so the filters are skipped and the encoded
            -- body passes through untouched (with its Content-Encoding).
            core.log.warn("filters may not work as expected: unsupported content encoding ",
                encoding)
            ctx.response_rewrite_skip_filters = true
            core.response.set_header("Content-Length", nil)
        else
            core.response.clear_header_as_body_modified()
        end
    end

    if not conf.headers then
        return
    end

    local hdr_op, err = header_operation(conf)
    if not hdr_op then
        core.log.error("failed to create header operation: ", err)
        return
    end

    local add = hdr_op.add
    for i = 1, #add, 2 do
        core.response.add_header(add[i], (core.utils.resolve_var(add[i + 1], ctx.var)))
    end

    local set = hdr_op.set
    for i = 1, #set, 2 do
        core.response.set_header(set[i], (core.utils.resolve_var(set[i + 1], ctx.var)))
    end

    for _, name in ipairs(hdr_op.remove) do
        core.response.set_header(name, nil)
    end
end

function _M.body_filter(conf, ctx)
    if not ctx.response_rewrite_matched then
        return
    end

    if conf.filters then
        if ctx.response_rewrite_skip_filters then
            return
        end
        local body = core.response.hold_body_chunk(ctx)
        if not body then
            return
        end
        for _, filter in ipairs(conf.filters) do
            local res, err
            if filter.scope == "once" then
                res, _, err = re_sub(body, filter.regex, filter.replace, filter.options)
            else
                res, _, err = re_gsub(body, filter.regex, filter.replace, filter.options)
            end
            if err ~= nil then
                core.log.error("regex \"", filter.regex, "\" substitutes failed:", err)
            else
                body = res
            end
        end
        ngx.arg[1] = body
        return
    end

    if conf.body then
        -- The new body goes out with the first chunk; what the upstream sends after is dropped.
        if ctx.response_rewrite_body_sent then
            ngx.arg[1] = ""
            return
        end
        ctx.response_rewrite_body_sent = true
        ngx.arg[1] = new_body(conf)
        ngx.arg[2] = true
    end
end

return _M
