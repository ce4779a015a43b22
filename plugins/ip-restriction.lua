-- ip-restriction: allows (whitelist) or refuses (blacklist) requests by client IP address or CIDR.
local core = require("apisix.core")

local ipairs = ipairs
local setmetatable = setmetatable

local plugin_name = "ip-restriction"

-- APISIX's schema_def.ip_def: an IPv4 or IPv6 address, with or without a CIDR prefix length.
local ip_def = core.schema.ip_def or {
    { title = "IPv4", type = "string", format = "ipv4" },
    {
        title = "IPv4/CIDR",
        type = "string",
        pattern = [[^([0-9]{1,3}\.){3}[0-9]{1,3}/([12]?[0-9]|3[0-2])$]],
    },
    { title = "IPv6", type = "string", format = "ipv6" },
    {
        title = "IPv6/CIDR",
        type = "string",
        pattern = [[^([a-fA-F0-9]{0,4}:){1,8}(:[a-fA-F0-9]{0,4}){0,8}([a-fA-F0-9]{0,4})?/[0-9]{1,3}$]],
    },
}

local schema = {
    type = "object",
    properties = {
        message = {
            type = "string",
            minLength = 1,
            maxLength = 1024,
            default = "Your IP address is not allowed",
        },
        response_code = {
            type = "integer",
            minimum = 403,
            maximum = 404,
            default = 403,
        },
        whitelist = {
            type = "array",
            items = { anyOf = ip_def },
            minItems = 1,
        },
        blacklist = {
            type = "array",
            items = { anyOf = ip_def },
            minItems = 1,
        },
    },
    oneOf = {
        { required = { "whitelist" } },
        { required = { "blacklist" } },
    },
}

local _M = {
    version = 0.1,
    priority = 3000,
    name = plugin_name,
    schema = schema,
}

function _M.check_schema(conf)
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        return false, err
    end

    -- The patterns above let some invalid IPv6 text through; the parser has the last word.
    for _, list in ipairs({ conf.whitelist or {}, conf.blacklist or {} }) do
        for _, cidr in ipairs(list) do
            if not core.ip.validate_cidr_or_ip(cidr) then
                return false, "invalid ip address: " .. cidr
            end
        end
    end
    return true
end

-- One matcher per list table; a list stays the same table until its conf changes.
local matchers = setmetatable({}, { __mode = "k" })

local function matcher_of(list)
    local m = matchers[list]
    if m == nil then
        m = core.ip.create_ip_matcher(list) or false
        matchers[list] = m
    end
    return m or nil
end

function _M.access(conf, ctx)
    local block = false
    local remote_addr = ctx.var.remote_addr

    if conf.blacklist then
        local matcher = matcher_of(conf.blacklist)
        if matcher then
            block = matcher:match(remote_addr)
        end
    end

    if conf.whitelist then
        local matcher = matcher_of(conf.whitelist)
        if matcher then
            block = not matcher:match(remote_addr)
        end
    end

    if block then
        return conf.response_code, { message = conf.message }
    end
end

return _M
