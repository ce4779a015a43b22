-- resty.sha256: incremental sha256 (new, update, final -> raw bytes, reset).
local native = require("moongate.native")

local hasher = native.hasher

local _M = { _VERSION = "0.16" }
local mt = { __index = _M }

function _M.new()
    return setmetatable({ h = hasher("sha256") }, mt)
end

function _M.update(self, s)
    return self.h:update(s)
end

function _M.final(self)
    return self.h:final()
end

function _M.reset(self)
    return self.h:reset()
end

return _M
