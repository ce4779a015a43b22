-- resty.random: bytes(len [, strong]) from the OS random source (always strong).
local native = require("moongate.native")

local _M = { _VERSION = "0.16" }

function _M.bytes(len, strong)
    return native.random_bytes(len, strong)
end

function _M.number(min, max)
    return math.random(min, max)
end

return _M
