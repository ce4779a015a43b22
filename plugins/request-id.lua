-- request-id: gives every request an id header (the client's own if it sent one), forwards it
-- upstream and, by default, returns it in the response.
local core = require("apisix.core")
local random = require("resty.random")

local ngx = ngx
local str_byte = string.byte
local str_char = string.char
local str_format = string.format
local concat = table.concat

local plugin_name = "request-id"

local DEFAULT_CHAR_SET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
-- nanoid's URL-safe alphabet: 64 symbols, so one random byte & 63 picks one without bias.
local NANOID_ALPHABET = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
local NANOID_SIZE = 21

local schema = {
    type = "object",
    properties = {
        header_name = { type = "string", default = "X-Request-Id" },
        include_in_response = { type = "boolean", default = true },
        algorithm = {
            type = "string",
            enum = { "uuid", "nanoid", "range_id" },
            default = "uuid",
        },
        range_id = {
            type = "object",
            properties = {
                length = {
                    type = "integer",
                    minimum = 6,
                    default = 16,
                },
                char_set = {
                    type = "string",
                    -- at least 6 characters, so that ids do not repeat too easily
                    minLength = 6,
                    default = DEFAULT_CHAR_SET,
                },
            },
            default = {},
        },
    },
}

local _M = {
    version = 0.1,
    priority = 12015,
    name = plugin_name,
    schema = schema,
}

function _M.check_schema(conf)
    return core.schema.check(schema, conf)
end

-- A random (version 4) UUID.
local function uuid()
    local b = { str_byte(random.bytes(16, true), 1, 16) }
    b[7] = b[7] % 16 + 0x40
    b[9] = b[9] % 64 + 0x80
    return str_format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
        b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16])
end

local function nanoid()
    local bytes = random.bytes(NANOID_SIZE, true)
    local out = {}
    for i = 1, NANOID_SIZE do
        local idx = str_byte(bytes, i) % 64 + 1
        out[i] = str_char(str_byte(NANOID_ALPHABET, idx))
    end
    return concat(out)
end

local function range_id(range)
    range = range or {}
    local length = range.length or 16
    local char_set = range.char_set or DEFAULT_CHAR_SET
    local n = #char_set
    local bytes = random.bytes(length, true)
    local out = {}
    for i = 1, length do
        local idx = str_byte(bytes, i) % n + 1
        out[i] = str_char(str_byte(char_set, idx))
    end
    return concat(out)
end

local function get_request_id(conf)
    if conf.algorithm == "nanoid" then
        return nanoid()
    end
    if conf.algorithm == "range_id" then
        return range_id(conf.range_id)
    end
    return uuid()
end

function _M.rewrite(conf, ctx)
    local headers = ngx.req.get_headers()
    local request_id = headers[conf.header_name]
    if not request_id then
        request_id = get_request_id(conf)
        core.request.set_header(ctx, conf.header_name, request_id)
    end

    if conf.include_in_response then
        ctx["request-id-" .. conf.header_name] = request_id
    end
end

function _M.header_filter(conf, ctx)
    if not conf.include_in_response then
        return
    end

    local headers = ngx.resp.get_headers()
    if not headers[conf.header_name] then
        core.response.set_header(conf.header_name, ctx["request-id-" .. conf.header_name])
    end
end

return _M
