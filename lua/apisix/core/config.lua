-- core.config: access to the gateway's config.yaml. Moongate keeps resources in Rust, so the
-- APISIX config-provider API (new, fetch_created_obj) finds nothing.
local native = require("moongate.native")

local _M = { version = 0.1, type = "moongate" }

local cached

-- The parsed config.yaml (with defaults) as a Lua table; cached per VM unless `force`.
function _M.local_conf(force)
    if cached and not force then
        return cached
    end
    if not native.local_conf then
        return nil, "local configuration is not available"
    end
    local conf, err = native.local_conf()
    if not conf then
        return nil, err
    end
    cached = conf
    return conf
end

function _M.fetch_created_obj()
    return nil
end

function _M.new()
    return nil, "core.config.new is not available in Moongate"
end

function _M.init()
    return true
end

function _M.init_worker()
    return true
end

return _M
