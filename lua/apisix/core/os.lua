-- core.os (minimal).
local _M = {}

function _M.getenv(name)
    return os.getenv(name)
end

function _M.setenv()
    return false, "core.os.setenv is not available in Moongate"
end

function _M.usleep(us)
    return ngx.sleep(us / 1e6)
end

function _M.get_last_err()
    return nil
end

return _M
