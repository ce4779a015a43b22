-- The lua-cjson API over the native JSON codec. `cjson` raises on errors, `cjson.safe` returns
-- nil, err; each module has its own settings, as in lua-cjson. Settings functions are accepted;
-- only encode_escape_forward_slash (default true, as in cjson) changes anything.
local native = require("moongate.native")

local json_encode = native.json_encode
local json_decode = native.json_decode
local error = error

local _M = {}

local function setting(default)
    return function(v)
        if v == nil then
            return default
        end
        return v
    end
end

-- Builds one module: `safe` selects the nil, err convention.
function _M.new(name, safe)
    local escape_slash = true
    local m = {
        _NAME = name,
        _VERSION = "2.1.0.14",
        null = native.null,
        array_mt = native.array_mt,
        empty_array_mt = native.array_mt,
    }

    function m.encode(v)
        local s, err = json_encode(v, false, escape_slash)
        if not s and not safe then
            error(err, 2)
        end
        return s, err
    end

    function m.decode(s)
        local v, err = json_decode(s)
        if err then
            if safe then
                return nil, err
            end
            error(err, 2)
        end
        return v
    end

    function m.encode_escape_forward_slash(on)
        if on ~= nil then
            escape_slash = on and true or false
        end
        return escape_slash
    end

    m.encode_empty_table_as_object = setting(true)
    m.decode_array_with_array_mt = setting(true)
    m.encode_sparse_array = function() return false, 2, 10 end
    m.encode_max_depth = setting(1000)
    m.decode_max_depth = setting(1000)
    m.encode_number_precision = setting(14)
    m.encode_keep_buffer = setting(true)
    m.encode_invalid_numbers = setting(false)
    m.decode_invalid_numbers = setting(true)

    function m.new()
        return m
    end

    return m
end

return _M
