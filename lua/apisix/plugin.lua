-- apisix.plugin: the parts of APISIX's plugin module that plugins call, answered by the host.
local native = require("moongate.native")

local _M = { version = 0.3 }

-- {value = <metadata conf>, modifiedIndex = n} or nil.
function _M.plugin_metadata(name)
    local metadata = native.plugin_metadata(name)
    local mod = native.plugin_module(name)
    if metadata and mod and mod.metadata_schema then
        require("moongate.host").decrypt_fields(metadata.value, mod.metadata_schema.encrypt_fields)
    end
    return metadata
end

-- The plugin_attr.<name> block of config.yaml, or nil.
function _M.plugin_attr(name)
    return native.plugin_attr(name)
end

-- The loaded module of plugin `name`, or nil.
function _M.get(name)
    return native.plugin_module(name)
end

return _M
