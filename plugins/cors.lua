-- cors: answers CORS preflight requests and adds the Access-Control-* headers to responses whose
-- Origin is allowed (by list, by regex, or by a named list in the plugin metadata).
local core = require("apisix.core")
local plugin = require("apisix.plugin")

local ngx = ngx
local re_find = ngx.re.find
local re_gmatch = ngx.re.gmatch
local str_find = core.string.find
local ipairs = ipairs
local type = type
local setmetatable = setmetatable

local plugin_name = "cors"

local origins_pattern = [[^(\*|\*\*|null|\w+://[^,]+(,\w+://[^,]+)*)$]]

local metadata_schema = {
    type = "object",
    properties = {
        allow_origins = {
            type = "object",
            additionalProperties = {
                type = "string",
                pattern = origins_pattern,
            },
        },
    },
}

local regex_list_def = {
    type = "array",
    items = {
        type = "string",
        minLength = 1,
        maxLength = 4096,
    },
    minItems = 1,
    uniqueItems = true,
}

local schema = {
    type = "object",
    properties = {
        allow_origins = {
            description = "you can use '*' to allow all origins when no credentials,"
                .. "'**' to allow forcefully(it will bring some security risks, be carefully),"
                .. "multiple origin use ',' to split. default: *.",
            type = "string",
            pattern = origins_pattern,
            default = "*",
        },
        allow_methods = {
            description = "you can use '*' to allow all methods when no credentials,"
                .. "'**' to allow forcefully(it will bring some security risks, be carefully),"
                .. "multiple method use ',' to split. default: *.",
            type = "string",
            default = "*",
        },
        allow_headers = {
            description = "you can use '*' to allow all header when no credentials,"
                .. "'**' to allow forcefully(it will bring some security risks, be carefully),"
                .. "multiple header use ',' to split. default: *.",
            type = "string",
            default = "*",
        },
        expose_headers = {
            description = "multiple header use ',' to split."
                .. "If not specified, no custom headers are exposed.",
            type = "string",
        },
        max_age = {
            description = "maximum number of seconds the results can be cached."
                .. "-1 means no cached, the max value is depend on browser,"
                .. "more details plz check MDN. default: 5.",
            type = "integer",
            default = 5,
        },
        allow_credential = {
            description = "allow client append credential. according to CORS specification,"
                .. "if you set this option to 'true', you can not use '*' for other options.",
            type = "boolean",
            default = false,
        },
        allow_origins_by_regex = regex_list_def,
        allow_origins_by_metadata = {
            type = "array",
            description = "set allowed origins by referencing origins in plugin metadata",
            items = {
                type = "string",
                minLength = 1,
                maxLength = 4096,
            },
            minItems = 1,
            uniqueItems = true,
        },
        timing_allow_origins = {
            description = "you can use '*' to allow all origins which can view timing information "
                .. "when no credentials,"
                .. "'**' to allow forcefully (it will bring some security risks, be careful),"
                .. "multiple origin use ',' to split. default: nil",
            type = "string",
            pattern = origins_pattern,
        },
        timing_allow_origins_by_regex = regex_list_def,
    },
}

local _M = {
    version = 0.1,
    priority = 4000,
    name = plugin_name,
    schema = schema,
    metadata_schema = metadata_schema,
}

local function check_regexes(rules)
    if not rules then
        return true
    end
    for _, rule in ipairs(rules) do
        local _, _, err = re_find("", rule, "j")
        if err then
            return false, err
        end
    end
    return true
end

function _M.check_schema(conf, schema_type)
    if schema_type == core.schema.TYPE_METADATA then
        return core.schema.check(metadata_schema, conf)
    end
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return false, err
    end
    if conf.allow_credential then
        if conf.allow_origins == "*" or conf.allow_methods == "*"
            or conf.allow_headers == "*" or conf.expose_headers == "*"
            or conf.timing_allow_origins == "*" then
            return false, "you can not set '*' for other option when 'allow_credential' is true"
        end
    end
    ok, err = check_regexes(conf.allow_origins_by_regex)
    if not ok then
        return false, err
    end
    return check_regexes(conf.timing_allow_origins_by_regex)
end

-- "a,b,c" -> {a = true, ...}; nil for a single origin. Cached per origins string.
local origin_sets = {}
local origin_sets_count = 0

local function multiple_origins(allow_origins)
    if not str_find(allow_origins, ",") then
        return nil
    end
    local set = origin_sets[allow_origins]
    if set then
        return set
    end
    set = {}
    local iterator, err = re_gmatch(allow_origins, "([^,]+)", "jiox")
    if not iterator then
        core.log.error("match origins failed: ", err)
        return nil
    end
    while true do
        local origin, iter_err = iterator()
        if iter_err then
            core.log.error("iterate origins failed: ", iter_err)
            return nil
        end
        if not origin then
            break
        end
        set[origin[0]] = true
    end
    -- Bounded: origin lists come from confs and metadata, so this only grows with configuration.
    if origin_sets_count >= 1024 then
        origin_sets = {}
        origin_sets_count = 0
    end
    origin_sets[allow_origins] = set
    origin_sets_count = origin_sets_count + 1
    return set
end

local function process_with_allow_origins(allow_origins, req_origin)
    if allow_origins == "**" then
        allow_origins = req_origin or "*"
    end
    local set = multiple_origins(allow_origins)
    if set then
        if req_origin and set[req_origin] then
            return req_origin
        end
        return nil
    end
    return allow_origins
end

-- The regex rules of a conf joined into one alternation, once per conf table.
local regex_concat = setmetatable({}, { __mode = "k" })

local function joined_rules(conf, field)
    local per_conf = regex_concat[conf]
    if not per_conf then
        per_conf = {}
        regex_concat[conf] = per_conf
    end
    local joined = per_conf[field]
    if not joined then
        local rules = {}
        for i, rule in ipairs(conf[field]) do
            rules[i] = "(" .. rule .. ")"
        end
        joined = core.table.concat(rules, "|")
        per_conf[field] = joined
    end
    return joined
end

local function process_with_regex(conf, field, req_origin)
    if conf[field] == nil or not req_origin then
        return nil
    end
    if re_find(req_origin, joined_rules(conf, field), "jo") then
        return req_origin
    end
    return nil
end

local function process_with_metadata(names, req_origin)
    local metadata = plugin.plugin_metadata(plugin_name)
    local origins = metadata and type(metadata.value) == "table" and metadata.value.allow_origins
    if type(origins) ~= "table" then
        return nil
    end
    for _, name in ipairs(names) do
        local allowed = origins[name]
        if type(allowed) == "string" then
            local matched = process_with_allow_origins(allowed, req_origin)
            if matched and matched == req_origin then
                return matched
            end
        end
    end
    return nil
end

local function match_origins(req_origin, allow_origins)
    return req_origin == allow_origins or allow_origins == "*"
end

local function set_cors_headers(conf, ctx, allow_origin)
    local allow_methods = conf.allow_methods
    if allow_methods == "**" then
        allow_methods = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE"
    end

    core.response.set_header("Access-Control-Allow-Origin", allow_origin)
    core.response.set_header("Access-Control-Allow-Methods", allow_methods)
    core.response.set_header("Access-Control-Max-Age", conf.max_age)
    core.response.set_header("Access-Control-Expose-Headers", conf.expose_headers)
    if conf.allow_headers == "**" then
        core.response.set_header("Access-Control-Allow-Headers",
            core.request.header(ctx, "Access-Control-Request-Headers"))
    else
        core.response.set_header("Access-Control-Allow-Headers", conf.allow_headers)
    end
    if conf.allow_credential then
        core.response.set_header("Access-Control-Allow-Credentials", true)
    end
end

function _M.rewrite(_, ctx)
    -- Kept before other plugins get a chance to change the request headers.
    ctx.original_request_origin = core.request.header(ctx, "Origin")
    if ctx.var.request_method == "OPTIONS" then
        return 200
    end
end

function _M.header_filter(conf, ctx)
    -- When a plugin ended the request before this rewrite ran, the Origin is read now.
    local req_origin = ctx.original_request_origin or core.request.header(ctx, "Origin")

    local allow_origins
    local use_local = true
    if conf.allow_origins_by_metadata then
        allow_origins = process_with_metadata(conf.allow_origins_by_metadata, req_origin)
        use_local = not match_origins(req_origin, allow_origins)
            and conf.allow_origins ~= nil and conf.allow_origins ~= "*"
    end
    if use_local then
        if conf.allow_origins_by_regex == nil then
            allow_origins = process_with_allow_origins(conf.allow_origins, req_origin)
        else
            allow_origins = process_with_regex(conf, "allow_origins_by_regex", req_origin)
        end
    end
    if not match_origins(req_origin, allow_origins) then
        allow_origins = process_with_regex(conf, "allow_origins_by_regex", req_origin)
    end
    if allow_origins then
        set_cors_headers(conf, ctx, allow_origins)
    end

    local timing_allow_origin
    if conf.timing_allow_origins then
        timing_allow_origin = process_with_allow_origins(conf.timing_allow_origins, req_origin)
        if not match_origins(req_origin, timing_allow_origin) then
            timing_allow_origin = nil
        end
    end
    if not timing_allow_origin and conf.timing_allow_origins_by_regex then
        timing_allow_origin = process_with_regex(conf, "timing_allow_origins_by_regex", req_origin)
    end
    if timing_allow_origin then
        core.response.set_header("Timing-Allow-Origin", timing_allow_origin)
    end
end

return _M
