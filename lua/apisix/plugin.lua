-- apisix.plugin: the parts of APISIX's plugin module that plugins call, answered by the host.
local native = require("moongate.native")

local _M = { version = 0.3 }

-- {value = <metadata conf>, modifiedIndex = n} or nil.
function _M.plugin_metadata(name)
    return native.plugin_metadata(name)
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
