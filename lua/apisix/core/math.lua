-- core.math (minimal).
local random = math.random

local _M = {}

function _M.rand()
    return random()
end

return _M
