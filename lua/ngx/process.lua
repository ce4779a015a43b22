-- ngx.process (lua-resty-core): Moongate has only worker threads, no privileged agent.
local _M = { version = "0.1.28" }

function _M.type()
    return "worker"
end

function _M.enable_privileged_agent()
    return nil, "the privileged agent is not available in Moongate"
end

function _M.get_master_pid()
    return nil
end

function _M.signal_graceful_exit()
    return nil, "not available in Moongate"
end

return _M
