-- core.timer (minimal): core.timer.new(name, fn, opts) runs fn every `opts.check_interval` seconds
-- (default 1) through ngx.timer.at until :close().
local _M = {}
local mt = { __index = _M }

function _M.new(name, callback_fn, opts)
    opts = opts or {}
    local self = setmetatable({ name = name, callback_fn = callback_fn, running = true,
                                interval = opts.check_interval or opts.sleep_succ or 1 }, mt)
    local function tick(premature)
        if premature or not self.running then
            return
        end
        local ok, err = pcall(self.callback_fn)
        if not ok then
            ngx.log(ngx.ERR, "timer[", name, "] failed: ", err)
        end
        if self.running then
            ngx.timer.at(self.interval, tick)
        end
    end
    local ok, err = ngx.timer.at(0, tick)
    if not ok then
        return nil, err
    end
    return self
end

function _M.close(self)
    self.running = false
    return true
end

return _M
