-- resty.hmac (jkeys089/lua-resty-hmac API):
--   local h = hmac:new(key, hmac.ALGOS.SHA256); h:update(s); h:final([s [, hex]]); h:reset()
-- Updates are buffered and hashed at final(), which also resets the object.
local native = require("moongate.native")

local native_hmac = native.hmac
local to_hex = native.to_hex
local concat = table.concat
local setmetatable = setmetatable

local _M = {
    _VERSION = "0.06",
    ALGOS = { MD5 = "md5", SHA1 = "sha1", SHA224 = "sha224", SHA256 = "sha256", SHA384 = "sha384",
              SHA512 = "sha512" },
}
local mt = { __index = _M }

function _M.new(_, key, hash_algo)
    if type(key) ~= "string" then
        return nil
    end
    return setmetatable({ key = key, alg = hash_algo or _M.ALGOS.MD5, buf = {} }, mt)
end

function _M.update(self, s)
    local buf = self.buf
    buf[#buf + 1] = s
    return true
end

function _M.final(self, s, hex_output)
    local buf = self.buf
    if s ~= nil then
        buf[#buf + 1] = s
    end
    local mac = native_hmac(self.alg, self.key, concat(buf))
    self.buf = {}
    if hex_output then
        return to_hex(mac)
    end
    return mac
end

function _M.reset(self)
    self.buf = {}
    return true
end

return _M
