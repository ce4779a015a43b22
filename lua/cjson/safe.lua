-- cjson.safe: like cjson, but encode/decode return nil, err instead of raising.
local native = require("moongate.native")

local json_encode = native.json_encode
local json_decode = native.json_decode

local escape_slash = true

local _M = {
    _NAME = "cjson.safe",
    _VERSION = "2.1.0.14",
    null = native.null,
    array_mt = native.array_mt,
    empty_array_mt = native.array_mt,
}

function _M.encode(v)
    return json_encode(v, false, escape_slash)
end

function _M.decode(s)
    local v, err = json_decode(s)
    if err then
        return nil, err
    end
    return v
end

function _M.encode_escape_forward_slash(on)
    if on ~= nil then
        escape_slash = on and true or false
    end
    return escape_slash
end

local function setting(default)
    return function(v)
        if v == nil then
            return default
        end
        return v
    end
end

_M.encode_empty_table_as_object = setting(true)
_M.decode_array_with_array_mt = setting(true)
_M.encode_sparse_array = function() return false, 2, 10 end
_M.encode_max_depth = setting(1000)
_M.decode_max_depth = setting(1000)
_M.encode_number_precision = setting(14)
_M.encode_keep_buffer = setting(true)
_M.encode_invalid_numbers = setting(false)
_M.decode_invalid_numbers = setting(true)

function _M.new()
    return _M
end

return _M
