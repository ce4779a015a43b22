-- luacheck: globals pcall xpcall coroutine load loadstring loadfile dofile package
-- What keeps plugin code within the VM's limits, installed once the trusted runtime is loaded:
-- - Lua past its time or memory limit must not catch the limit's error and go on running: pcall,
--   xpcall and coroutine.resume hand every other error back as usual, and raise those again. The
--   host keeps the plain versions (it captured them before) to report which plugin overran.
-- - The count hook that enforces the time limit never runs inside JIT-compiled code, so plugin files
--   load with the JIT off (src/plugin/vm.rs). Code compiled later (serverless functions,
--   `_meta.pre_function`, a plugin's own `loadstring`, a module found on package.path) gets the
--   same treatment here.
local str_find = string.find
local tostring = tostring
local error = error
local type = type
local raw_pcall = pcall
local raw_xpcall = xpcall
local raw_resume = coroutine.resume
local jit_off = jit.off

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

-- Turns the JIT off for a compiled chunk and every function defined in it (a C function, as a C
-- module loader returns, has no JIT mode to set).
local function without_jit(fn, ...)
    if type(fn) == "function" then
        raw_pcall(jit_off, fn, true)
    end
    return fn, ...
end

local function compiling(compile)
    return function(...)
        return without_jit(compile(...))
    end
end

local _M = { overran = overran }

function _M.install()
    load = compiling(load)
    loadstring = compiling(loadstring)
    loadfile = compiling(loadfile)
    dofile = function(...)
        local fn, err = loadfile(...)
        if not fn then
            error(err, 2)
        end
        return fn()
    end
    -- Every searcher but package.preload's, which holds the runtime's own modules.
    local loaders = package.loaders
    for i = 2, #loaders do
        loaders[i] = compiling(loaders[i])
    end

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
