-- proxy-rewrite: rewrites what is sent upstream: the URI (fixed, templated, or by regex), the Host,
-- the method and request headers.
local core = require("apisix.core")

local ngx = ngx
local pairs = pairs
local ipairs = ipairs
local type = type
local tostring = tostring
local tonumber = tonumber
local pcall = pcall
local setmetatable = setmetatable
local re_sub = ngx.re.sub
local re_match = ngx.re.match
local sub_str = string.sub
local str_find = core.string.find
local str_byte = string.byte

local plugin_name = "proxy-rewrite"

local switch_map = {
    GET = ngx.HTTP_GET, POST = ngx.HTTP_POST, PUT = ngx.HTTP_PUT, HEAD = ngx.HTTP_HEAD,
    DELETE = ngx.HTTP_DELETE, OPTIONS = ngx.HTTP_OPTIONS, MKCOL = ngx.HTTP_MKCOL,
    COPY = ngx.HTTP_COPY, MOVE = ngx.HTTP_MOVE, PROPFIND = ngx.HTTP_PROPFIND,
    LOCK = ngx.HTTP_LOCK, UNLOCK = ngx.HTTP_UNLOCK, PATCH = ngx.HTTP_PATCH,
    TRACE = ngx.HTTP_TRACE,
}
local schema_method_enum = {}
for key in pairs(switch_map) do
    core.table.insert(schema_method_enum, key)
end
core.table.sort(schema_method_enum)

core.ctx.register_var("proxy_rewrite_regex_uri_captures", function(ctx)
    return ctx.proxy_rewrite_regex_uri_captures
end)

local header_value_def = {
    oneOf = {
        { type = "string" },
        { type = "number" },
    },
}

local schema = {
    type = "object",
    properties = {
        uri = {
            description = "new uri for upstream",
            type = "string",
            minLength = 1,
            maxLength = 4096,
            pattern = [[^\/.*]],
        },
        method = {
            description = "proxy route method",
            type = "string",
            enum = schema_method_enum,
        },
        regex_uri = {
            description = "new uri that substitute from client uri for upstream, "
                .. "lower priority than uri property",
            type = "array",
            minItems = 2,
            items = {
                description = "regex uri",
                type = "string",
            },
        },
        host = {
            description = "new host for upstream",
            type = "string",
            pattern = [[^[0-9a-zA-Z.-]+(:\d{1,5})?$]],
        },
        headers = {
            description = "new headers for request",
            oneOf = {
                {
                    type = "object",
                    minProperties = 1,
                    additionalProperties = false,
                    properties = {
                        add = {
                            type = "object",
                            minProperties = 1,
                            patternProperties = {
                                ["^[^:]+$"] = header_value_def,
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
                                pattern = "^[^:]+$",
                            },
                        },
                    },
                },
                {
                    type = "object",
                    minProperties = 1,
                    patternProperties = {
                        ["^[^:]+$"] = header_value_def,
                    },
                },
            },
        },
        use_real_request_uri_unsafe = {
            description = "use real_request_uri instead, THIS IS VERY UNSAFE.",
            type = "boolean",
            default = false,
        },
    },
    minProperties = 1,
}

local _M = {
    version = 0.1,
    priority = 1008,
    name = plugin_name,
    schema = schema,
}

local function is_new_headers_conf(headers)
    return (headers.add and type(headers.add) == "table")
        or (headers.set and type(headers.set) == "table")
        or (headers.remove and type(headers.remove) == "table")
end

-- RFC 7230 token characters, and field values without control characters (tab allowed).
local function valid_header_field(field)
    return not str_find(field, "[^!#$%%&'*+%-.^_`|~%w]")
end

local function valid_header_value(value)
    value = tostring(value)
    for i = 1, #value do
        local b = str_byte(value, i)
        if (b < 32 and b ~= 9) or b == 127 then
            return false
        end
    end
    return true
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
        if not valid_header_field(field) then
            return false, "invalid field character in header"
        end
        if not valid_header_value(value) then
            return false, "invalid value character in header"
        end
    end
    return true
end

function _M.check_schema(conf)
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return false, err
    end

    if conf.regex_uri and #conf.regex_uri > 0 then
        if #conf.regex_uri % 2 ~= 0 then
            return false, "The length of regex_uri should be an even number"
        end
        for i = 1, #conf.regex_uri, 2 do
            local _, _, sub_err = re_sub("/fake_uri", conf.regex_uri[i], conf.regex_uri[i + 1], "jo")
            if sub_err then
                return false, "invalid regex_uri(" .. conf.regex_uri[i] .. ", "
                    .. conf.regex_uri[i + 1] .. "): " .. sub_err
            end
        end
    end

    if conf.headers and not is_new_headers_conf(conf.headers) then
        return check_set_headers(conf.headers)
    end
    return true
end

-- A '?' produced by a template is a literal character of the path, not a query separator.
local function escape_separator(s)
    return (re_sub(s, [[\?]], "%3F", "jo"))
end

-- The header operations of a conf, flattened once: {add = {k, v, ...}, set = {...}, remove = {...}}.
local header_ops = setmetatable({}, { __mode = "k" })

local function header_operation(hdr_conf)
    local op = header_ops[hdr_conf]
    if op then
        return op
    end
    local set, add = {}, {}
    if is_new_headers_conf(hdr_conf) then
        if hdr_conf.add then
            for field, value in pairs(hdr_conf.add) do
                core.table.insert_tail(add, field, value)
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
    op = { add = add, set = set, remove = hdr_conf.remove or {} }
    header_ops[hdr_conf] = op
    return op
end

-- "$1" style references to the regex_uri captures, as core.utils.resolve_var_with_captures does.
local function resolve_captures(value, captures)
    if not captures or type(value) ~= "string" then
        return value
    end
    local resolved = re_sub(value, [[(?<!\\)\$(\d+)]], function(m)
        local v = captures[tonumber(m[1])]
        return v and tostring(v) or ""
    end, "jo")
    return resolved or value
end
local resolve_var_with_captures = core.utils.resolve_var_with_captures or resolve_captures

local function header_value(value, ctx)
    value = resolve_var_with_captures(value, ctx.proxy_rewrite_regex_uri_captures)
    return (core.utils.resolve_var(value, ctx.var))
end

function _M.rewrite(conf, ctx)
    if conf.host then
        ctx.var.upstream_host = conf.host
        core.request.set_header(ctx, "host", conf.host)
    end

    local upstream_uri = ctx.var.uri
    local separator_escaped = false
    if conf.use_real_request_uri_unsafe then
        upstream_uri = ctx.var.real_request_uri or ctx.var.request_uri
    end

    if conf.uri ~= nil then
        separator_escaped = true
        upstream_uri = core.utils.resolve_var(conf.uri, ctx.var, escape_separator)

    elseif conf.regex_uri ~= nil then
        if not str_find(upstream_uri, "?") then
            separator_escaped = true
        end

        local error_msg
        for i = 1, #conf.regex_uri, 2 do
            local captures, err = re_match(upstream_uri, conf.regex_uri[i], "jo")
            if err then
                error_msg = "failed to match the uri " .. ctx.var.uri .. " ("
                    .. conf.regex_uri[i] .. ")  : " .. err
                break
            end
            if captures then
                ctx.proxy_rewrite_regex_uri_captures = captures
                local uri, _, sub_err = re_sub(upstream_uri, conf.regex_uri[i],
                    conf.regex_uri[i + 1], "jo")
                if uri then
                    upstream_uri = uri
                else
                    error_msg = "failed to substitute the uri " .. ctx.var.uri .. " ("
                        .. conf.regex_uri[i] .. ") with " .. conf.regex_uri[i + 1] .. " : "
                        .. tostring(sub_err)
                end
                break
            end
        end

        if error_msg ~= nil then
            core.log.error(error_msg)
            return 500, { error_msg = error_msg }
        end
    end

    if not conf.use_real_request_uri_unsafe then
        local index
        if separator_escaped then
            index = str_find(upstream_uri, "?")
        end

        local path = upstream_uri
        if index then
            path = sub_str(upstream_uri, 1, index - 1)
            upstream_uri = core.utils.uri_safe_encode(path) .. sub_str(upstream_uri, index)
        else
            -- A '?' here came from the client as %3F (ctx.var.uri is decoded), so it is encoded back.
            upstream_uri = core.utils.uri_safe_encode(upstream_uri)
        end

        -- Later plugins see the rewritten path as $uri, as after ngx.req.set_uri in APISIX.
        if str_byte(path, 1) == str_byte("/") then
            local ok, err = pcall(ngx.req.set_uri, path)
            if not ok then
                core.log.warn("failed to set the rewritten uri as $uri: ", err)
            end
        end

        local args = ctx.var.args
        if ctx.var.is_args == "?" or (args and args ~= "") then
            if index then
                ctx.var.upstream_uri = upstream_uri .. "&" .. (args or "")
            else
                ctx.var.upstream_uri = upstream_uri .. "?" .. (args or "")
            end
        else
            ctx.var.upstream_uri = upstream_uri
        end
    else
        ctx.var.upstream_uri = upstream_uri
    end

    if conf.headers then
        local hdr_op = header_operation(conf.headers)

        local add = hdr_op.add
        for i = 1, #add, 2 do
            core.request.add_header(ctx, add[i], header_value(add[i + 1], ctx))
        end

        local set = hdr_op.set
        for i = 1, #set, 2 do
            core.request.set_header(ctx, set[i], header_value(set[i + 1], ctx))
        end

        for _, name in ipairs(hdr_op.remove) do
            core.request.set_header(ctx, name, nil)
        end
    end

    if conf.method then
        ngx.req.set_method(switch_map[conf.method])
    end
end

return _M
