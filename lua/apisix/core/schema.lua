-- core.schema: JSON Schema validation (native validator with api7/jsonschema's messages). check()
-- fills defaults into `conf` in place. The APISIX schema_def entries (`core.schema.ip_def`,
-- `core.schema.route`, ...) are reachable through the module table, as in APISIX.
local native = require("moongate.native")

local schema_check = native.schema_check

local _M = {
    version = 0.3,
    TYPE_CONSUMER = 1,
    TYPE_METADATA = 2,
    TYPE_STREAM_ROUTE = 3,
}

function _M.check(schema, conf)
    local ok, err = schema_check(schema, conf)
    if ok then
        return true
    end
    return false, err
end

-- Returns a validator function(conf) -> ok, err bound to `schema`.
function _M.valid(schema)
    return function(conf)
        local defs
setmetatable(_M, {
    __index = function(_, key)
        if not defs then
            defs = native.json_decode(native.schema_def_json())
        end
        return defs[key]
    end,
})

return _M.check(schema, conf)
    end
end

local defs
setmetatable(_M, {
    __index = function(_, key)
        if not defs then
            defs = native.json_decode(native.schema_def_json())
        end
        return defs[key]
    end,
})

return _M
