-- core.string: plain-text helpers; everything else comes from `string` via __index.
local native = require("moongate.native")

local str_find = string.find
local str_byte = string.byte
local str_sub = string.sub
local type = type
local error = error

local _M = { version = 0.1 }

-- Plain (non-pattern) find.
function _M.find(haystack, needle, from)
    return str_find(haystack, needle, from or 1, true)
end

function _M.has_prefix(s, prefix)
    if type(s) ~= "string" or type(prefix) ~= "string" then
        error("unexpected type: s:" .. type(s) .. ", prefix:" .. type(prefix), 2)
    end
    return #s >= #prefix and str_sub(s, 1, #prefix) == prefix
end

function _M.has_suffix(s, suffix)
    if type(s) ~= "string" or type(suffix) ~= "string" then
        error("unexpected type: s:" .. type(s) .. ", suffix:" .. type(suffix), 2)
    end
    return #s >= #suffix and (#suffix == 0 or str_sub(s, -#suffix) == suffix)
end

-- Last position of the byte `ch` at or before `idx` (default: end of string).
function _M.rfind_char(s, ch, idx)
    local b = str_byte(ch)
    for i = idx or #s, 1, -1 do
        if str_byte(s, i) == b then
            return i
        end
    end
    return nil
end

function _M.compress_script(s)
    return s
end

function _M.decode_args(args)
    return native.decode_args(args, 0)
end

_M.encode_args = native.encode_args

return setmetatable(_M, { __index = string })
