-- limit-count: allows at most `count` requests per `time_window` seconds for each key (client
-- address by default), counting in the process-wide shared dict `plugin-limit-count`, and reports
-- the quota in X-RateLimit-* headers.
local core = require("apisix.core")
local apisix_plugin = require("apisix.plugin")

local ngx = ngx
local ceil = math.ceil
local ipairs = ipairs
local tostring = tostring
local type = type

local plugin_name = "limit-count"
local DICT_NAME = "plugin-limit-count"

local metadata_defaults = {
    limit_header = "X-RateLimit-Limit",
    remaining_header = "X-RateLimit-Remaining",
    reset_header = "X-RateLimit-Reset",
}

local metadata_schema = {
    type = "object",
    properties = {
        limit_header = {
            type = "string",
            default = metadata_defaults.limit_header,
        },
        remaining_header = {
            type = "string",
            default = metadata_defaults.remaining_header,
        },
        reset_header = {
            type = "string",
            default = metadata_defaults.reset_header,
        },
    },
}

local schema = {
    type = "object",
    properties = {
        count = { type = "integer", exclusiveMinimum = 0 },
        time_window = { type = "integer", exclusiveMinimum = 0 },
        group = { type = "string" },
        key = { type = "string", default = "remote_addr" },
        key_type = {
            type = "string",
            enum = { "var", "var_combination", "constant" },
            default = "var",
        },
        rejected_code = {
            type = "integer", minimum = 200, maximum = 599, default = 503,
        },
        rejected_msg = {
            type = "string", minLength = 1,
        },
        policy = {
            type = "string",
            enum = { "local", "redis", "redis-cluster" },
            default = "local",
        },
        allow_degradation = { type = "boolean", default = false },
        show_limit_quota_header = { type = "boolean", default = true },
    },
    required = { "count", "time_window" },
}

local _M = {
    version = 0.5,
    priority = 1002,
    name = plugin_name,
    schema = schema,
    metadata_schema = metadata_schema,
}

-- The fields that define a group's counter; routes sharing a group must agree on them. As in
-- APISIX, the first conf seen for a group is remembered for five minutes.
local group_fields = { "count", "time_window", "key", "key_type", "policy", "rejected_code",
                       "rejected_msg", "allow_degradation", "show_limit_quota_header" }
local GROUP_CONF_TTL = 300
local group_confs = {}

local function group_signature(conf)
    local parts = {}
    for i, field in ipairs(group_fields) do
        parts[i] = tostring(conf[field])
    end
    return core.table.concat(parts, "\0")
end

function _M.check_schema(conf, schema_type)
    if schema_type == core.schema.TYPE_METADATA then
        return core.schema.check(metadata_schema, conf)
    end
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return false, err
    end

    if conf.policy ~= "local" then
        return false, "policy " .. conf.policy .. " is not supported by Moongate: "
            .. "only the local policy is available"
    end

    if conf.group then
        local signature = group_signature(conf)
        local now = ngx.now()
        local prev = group_confs[conf.group]
        if prev and prev.expires > now then
            if prev.signature ~= signature then
                return false, "group conf mismatched"
            end
        else
            group_confs[conf.group] = { signature = signature, expires = now + GROUP_CONF_TTL }
        end
    end
    return true
end

-- The counter key. Counters belong to the route (or other object) the conf sits on, and to the
-- conf's counting parameters, so editing unrelated parts of the route keeps them.
local function gen_limit_key(conf, ctx, key)
    if conf.group then
        return conf.group .. ":" .. key
    end
    local conf_type = ctx.conf_type_without_consumer or ctx.conf_type
    local conf_id = ctx.conf_id_without_consumer or ctx.conf_id
    return conf_type .. tostring(conf_id) .. ":" .. conf.count .. "/" .. conf.time_window
        .. ":" .. key
end

local function limit_key(conf, ctx)
    local conf_key = conf.key
    local key
    if conf.key_type == "var_combination" then
        local err, n_resolved
        key, err, n_resolved = core.utils.resolve_var(conf_key, ctx.var)
        if err then
            core.log.error("could not resolve vars in ", conf_key, " error: ", err)
        end
        if n_resolved == 0 then
            key = nil
        end
    elseif conf.key_type == "constant" then
        key = conf_key
    else
        key = ctx.var[conf_key]
    end

    if key == nil or key == "" then
        core.log.info("The value of the configured key is empty, use client IP instead")
        key = ctx.var["remote_addr"]
    end
    return gen_limit_key(conf, ctx, tostring(key))
end

local function quota_headers()
    local metadata = apisix_plugin.plugin_metadata(plugin_name)
    local value = metadata and type(metadata.value) == "table" and metadata.value or {}
    return value.limit_header or metadata_defaults.limit_header,
        value.remaining_header or metadata_defaults.remaining_header,
        value.reset_header or metadata_defaults.reset_header
end

function _M.access(conf, ctx)
    local dict = ngx.shared[DICT_NAME]
    if not dict then
        core.log.error("failed to fetch limit.count object: shared dict ", DICT_NAME, " not found")
        if conf.allow_degradation then
            return
        end
        return 500
    end

    local key = limit_key(conf, ctx)
    local used, err = dict:incr(key, 1, 0, conf.time_window)
    if not used then
        core.log.error("failed to limit count: ", err)
        if conf.allow_degradation then
            return
        end
        return 500, { error_msg = "failed to limit count" }
    end

    -- Seconds until the window (which started with the key's first request) ends.
    local ttl = dict:ttl(key)
    local reset = ttl and ttl > 0 and ceil(ttl) or 0

    if used > conf.count then
        if conf.show_limit_quota_header then
            local limit_header, remaining_header, reset_header = quota_headers()
            core.response.set_header(limit_header, conf.count,
                remaining_header, 0,
                reset_header, reset)
        end
        if conf.rejected_msg then
            return conf.rejected_code, { error_msg = conf.rejected_msg }
        end
        return conf.rejected_code
    end

    if conf.show_limit_quota_header then
        local limit_header, remaining_header, reset_header = quota_headers()
        core.response.set_header(limit_header, conf.count,
            remaining_header, conf.count - used,
            reset_header, reset)
    end
end

return _M
