-- core.log: ngx.log at fixed levels. Arguments are concatenated with tostring, as ngx.log does.
-- Messages are only built when the level is enabled (the native asks the tracing subscriber).
local native = require("moongate.native")

local native_log = native.log
local native_log_enabled = native.log_enabled
local select = select
local tostring = tostring
local concat = table.concat
local setmetatable = setmetatable
local unpack = unpack

local levels = {
    stderr = 0, emerg = 1, alert = 2, crit = 3, error = 4, warn = 5, notice = 6, info = 7, debug = 8,
}

local _M = { version = 0.4, levels = levels }

local function build(prefix, ...)
    local n = select("#", ...)
    if n == 1 and not prefix then
        return tostring((...))
    end
    local buf = {}
    local off = 0
    if prefix then
        buf[1] = prefix
        off = 1
    end
    for i = 1, n do
        buf[off + i] = tostring((select(i, ...)))
    end
    return concat(buf, "", 1, off + n)
end

local function logger(level, prefix)
    return function(...)
        if native_log_enabled(level) then
            native_log(level, build(prefix, ...))
        end
    end
end

for name, level in pairs(levels) do
    if name ~= "stderr" then
        _M[name] = logger(level)
    end
end

-- core.log.new(prefix): a logger whose messages start with `prefix`.
function _M.new(prefix)
    local m = { version = _M.version }
    for name, level in pairs(levels) do
        if name ~= "stderr" then
            m[name] = logger(level, prefix)
        end
    end
    return m
end

-- The most verbose ngx level currently enabled (8 = debug ... 4 = error).
function _M.get_level()
    for level = 8, 1, -1 do
        if native_log_enabled(level) then
            return level
        end
    end
    return 0
end

-- Whether a level (number or name) is enabled.
function _M.level_enabled(level)
    if type(level) == "string" then
        level = levels[level]
    end
    return level ~= nil and native_log_enabled(level)
end

-- log.info("x: ", log.delay_exec(fn, a, b)) runs fn(a, b) only if the line is written.
local delay_mt = {
    __tostring = function(self)
        if self.res == nil then
            self.res = tostring(self.func(unpack(self.args, 1, self.args.n)))
        end
        return self.res
    end,
}
function _M.delay_exec(func, ...)
    return setmetatable({ func = func, args = { n = select("#", ...), ... } }, delay_mt)
end

return _M
