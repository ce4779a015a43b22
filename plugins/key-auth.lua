-- key-auth: authenticates a request by an API key sent in a header or a query argument, and
-- attaches the consumer that owns the key.
local core = require("apisix.core")
local native = require("moongate.native")

local setmetatable = setmetatable
local type = type
local ipairs = ipairs

local plugin_name = "key-auth"

local schema = {
    type = "object",
    properties = {
        header = {
            type = "string",
            default = "apikey",
        },
        query = {
            type = "string",
            default = "apikey",
        },
        hide_credentials = {
            type = "boolean",
            default = false,
        },
    },
}

local consumer_schema = {
    type = "object",
    properties = {
        key = { type = "string" },
    },
    encrypt_fields = { "key" },
    required = { "key" },
}

local _M = {
    version = 0.1,
    priority = 2500,
    type = "auth",
    name = plugin_name,
    schema = schema,
    consumer_schema = consumer_schema,
}

function _M.check_schema(conf, schema_type)
    if schema_type == core.schema.TYPE_CONSUMER then
        return core.schema.check(consumer_schema, conf)
    end
    return core.schema.check(schema, conf)
end

-- key -> consumer, built once per consumer list. The host hands out the same list table until the
-- consumers change, so the list's identity is the cache key.
local key_maps = setmetatable({}, { __mode = "k" })

local function consumers_by_key()
    local consumers = native.consumers_by_plugin(plugin_name)
    if type(consumers) ~= "table" then
        return nil
    end
    local map = key_maps[consumers]
    if map then
        return map
    end
    map = {}
    for _, consumer in ipairs(consumers) do
        local auth_conf = type(consumer.plugins) == "table" and consumer.plugins[plugin_name]
        if type(auth_conf) == "table" and type(auth_conf.key) == "string" then
            -- The fields APISIX's consumer objects carry besides the stored ones.
            consumer.consumer_name = consumer.consumer_name or consumer.username
            consumer.auth_conf = auth_conf
            map[auth_conf.key] = consumer
        end
    end
    key_maps[consumers] = map
    return map
end

local function find_consumer(ctx, conf)
    local from_header = true
    local key = core.request.header(ctx, conf.header)
    if not key then
        local uri_args = core.request.get_uri_args(ctx) or {}
        key = uri_args[conf.query]
        from_header = false
        -- A repeated argument arrives as an array; APISIX compares the whole value, which never
        -- matches a key, so the first one is as good as refusing.
        if type(key) == "table" then
            key = key[1]
        end
        if key == true then
            key = nil
        end
    end
    if not key then
        return nil, "Missing API key in request"
    end

    local map = consumers_by_key()
    local consumer = map and map[key]
    if not consumer then
        core.log.warn("failed to find consumer: invalid api key")
        return nil, "Invalid API key in request"
    end

    if conf.hide_credentials then
        if from_header then
            core.request.set_header(ctx, conf.header, nil)
        else
            local args = core.request.get_uri_args(ctx)
            args[conf.query] = nil
            core.request.set_uri_args(ctx, args)
        end
    end
    return consumer
end

local function attach_consumer(ctx, consumer)
    ctx.consumer = consumer
    ctx.consumer_name = consumer.consumer_name
    ctx.consumer_group_id = consumer.group_id
    ctx.consumer_ver = consumer.modifiedIndex or consumer.update_time
    ctx.var.consumer_name = consumer.consumer_name
    core.request.set_header(ctx, "X-Consumer-Username", consumer.username)
    local labels = consumer.labels
    if type(labels) == "table" and labels.custom_id then
        core.request.set_header(ctx, "X-Consumer-Custom-Id", labels.custom_id)
    end
end

function _M.rewrite(conf, ctx)
    local consumer, err = find_consumer(ctx, conf)
    if not consumer then
        return 401, { message = err }
    end
    attach_consumer(ctx, consumer)
    core.log.info("hit key-auth rewrite")
end

return _M
