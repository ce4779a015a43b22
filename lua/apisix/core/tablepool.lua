-- core.tablepool: small per-VM free lists of tables (lua-tablepool API).
local new_tab = require("table.new")
local clear_tab = require("table.clear")

local MAX_POOL = 200
local pools = {}

local _M = {}

function _M.fetch(name, narr, nrec)
    local pool = pools[name]
    if pool then
        local n = pool.n
        if n > 0 then
            local t = pool[n]
            pool[n] = nil
            pool.n = n - 1
            return t
        end
    end
    return new_tab(narr or 0, nrec or 0)
end

function _M.release(name, t, noclear)
    if type(t) ~= "table" then
        return
    end
    if not noclear then
        clear_tab(t)
    end
    local pool = pools[name]
    if not pool then
        pool = { n = 0 }
        pools[name] = pool
    end
    if pool.n < MAX_POOL then
        pool.n = pool.n + 1
        pool[pool.n] = t
    end
end

return _M
