-- The lua-resty-string hash object API (new, update, final -> raw bytes, reset) for one algorithm,
-- over the native incremental hasher. resty.md5, resty.sha1, resty.sha256, ... are built from it.
local native = require("moongate.native")

local hasher = native.hasher
local setmetatable = setmetatable

return function(algorithm)
    local _M = { _VERSION = "0.16" }
    local mt = { __index = _M }

    function _M.new()
        return setmetatable({ h = hasher(algorithm) }, mt)
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
end
