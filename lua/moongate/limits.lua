-- luacheck: globals pcall xpcall coroutine
-- Lua past its time or memory limit must not catch the limit's error and go on running: once
-- installed, pcall, xpcall and coroutine.resume hand every other error back as usual, and raise
-- those again. The host keeps the plain versions (it captured them before) to report which plugin
-- overran.
local str_find = string.find
local tostring = tostring
local error = error
local raw_pcall = pcall
local raw_xpcall = xpcall
local raw_resume = coroutine.resume

-- The messages src/plugin/vm.rs raises from its count hook.
local function overran(err)
    local text = tostring(err)
    return str_find(text, "moongate: plugin time limit exceeded", 1, true) ~= nil
        or str_find(text, "moongate: plugin memory limit exceeded", 1, true) ~= nil
end

local function pass(ok, ...)
    if not ok and overran((...)) then
        error((...), 0)
    end
    return ok, ...
end

local _M = {}

function _M.install()
    pcall = function(f, ...)
        return pass(raw_pcall(f, ...))
    end
    xpcall = function(f, handler, ...)
        return pass(raw_xpcall(f, function(err)
            if overran(err) then
                return err
            end
            return handler(err)
        end, ...))
    end
    coroutine.resume = function(co, ...)
        return pass(raw_resume(co, ...))
    end
end

return _M
