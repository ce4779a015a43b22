-- resty.string: to_hex and atoi.
local native = require("moongate.native")

local _M = { _VERSION = "0.16" }

_M.to_hex = native.to_hex

function _M.atoi(s)
    return tonumber(s)
end

return _M
