-- core.json: cjson.safe semantics (nil, err on failure), forward slashes not escaped, decoded arrays
-- keep the array marker so they re-encode as arrays.
local native = require("moongate.native")

local json_encode = native.json_encode
local json_decode = native.json_decode
local stably_encode = native.json_stably_encode
local null = native.null
local type = type
local pairs = pairs
local tostring = tostring
local setmetatable = setmetatable
local getmetatable = getmetatable

local _M = {
    version = 0.1,
    array_mt = native.array_mt,
    null = null,
}

-- Copies `data`, turning what JSON cannot hold (functions, userdata, cdata, cycles) into strings.
local function serialise_obj(data, seen)
    local t = type(data)
    if t == "function" or t == "userdata" or t == "cdata" or t == "thread" then
        if data == null then
            return data
        end
        return tostring(data)
    end
    if t ~= "table" then
        return data
    end
    if seen[data] then
        return tostring(data)
    end
    seen[data] = true
    local copy = {}
    for k, v in pairs(data) do
        copy[k] = serialise_obj(v, seen)
    end
    local mt = getmetatable(data)
    if mt == native.array_mt then
        setmetatable(copy, mt)
    end
    seen[data] = nil
    return copy
end

function _M.encode(data, force)
    if force then
        data = serialise_obj(data, {})
    end
    return json_encode(data)
end

local function strip_null(v)
    if v == null then
        return nil
    end
    if type(v) == "table" then
        for k, x in pairs(v) do
            if x == null then
                v[k] = nil
            elseif type(x) == "table" then
                strip_null(x)
            end
        end
    end
    return v
end

function _M.decode(str, opts)
    local v, err = json_decode(str)
    if err then
        return nil, err
    end
    if opts and opts.null_as_nil then
        v = strip_null(v)
    end
    return v
end

function _M.stably_encode(data)
    return stably_encode(data)
end

-- APISIX uses rapidjson's sorted-key encoder here; sorted keys give the same canonical form.
function _M.canonical_encode(data)
    return stably_encode(data)
end

-- A lazy value for log lines: encoded only when converted with tostring.
local delay_mt = {
    __tostring = function(self)
        local res, err = _M.encode(self.data, self.force)
        if not res then
            return "failed to encode: " .. tostring(err)
        end
        return res
    end,
}
function _M.delay_encode(data, force)
    return setmetatable({ data = data, force = force }, delay_mt)
end

return _M
