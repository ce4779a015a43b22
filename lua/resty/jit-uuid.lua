-- resty.jit-uuid: random (v4) UUIDs from the OS random source.
local native = require("moongate.native")

local random_bytes = native.random_bytes
local str_byte = string.byte
local str_format = string.format

local _M = { _VERSION = "0.0.7" }

function _M.seed()
    return true
end

function _M.generate_v4()
    local b = { str_byte(random_bytes(16), 1, 16) }
    b[7] = b[7] % 16 + 0x40
    b[9] = b[9] % 64 + 0x80
    return str_format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
        b[15], b[16])
end

function _M.is_valid(str)
    return type(str) == "string"
        and str:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end

return setmetatable(_M, {
    __call = function()
        return _M.generate_v4()
    end,
})
