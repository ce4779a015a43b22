-- core.id: this gateway instance's id.
local native = require("moongate.native")

local _M = {}

function _M.get()
    return native.instance_id()
end

function _M.init()
end

return _M
