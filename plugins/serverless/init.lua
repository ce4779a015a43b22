-- The shared factory behind serverless-pre-function and serverless-post-function: inline Lua on a
-- route. Each entry of `functions` is a chunk that returns `function(conf, ctx) ... end`; the
-- functions run in order in the configured `phase`, and the first one that returns a code or a body
-- ends the chain (and, in rewrite/access/before_proxy, the request).
local core = require("apisix.core")

local ipairs = ipairs
local pcall = pcall
local loadstring = loadstring
local setmetatable = setmetatable
local tostring = tostring
local type = type

local phases = {
    "rewrite", "access", "header_filter", "body_filter", "log", "before_proxy",
}

-- Compiles one chunk and runs it to get the function it returns.
local function compile(plugin_name, index, func_str)
    local chunk, err = loadstring(func_str, "=" .. plugin_name .. ".functions[" .. index .. "]")
    if not chunk then
        return nil, "failed to loadstring: " .. tostring(err)
    end
    local ok, ret = pcall(chunk)
    if not ok then
        return nil, "pcall error: " .. tostring(ret)
    end
    if type(ret) ~= "function" then
        return nil, "only accept Lua function, the input code type is " .. type(ret)
    end
    return ret
end

return function(plugin_name, priority)
    local schema = {
        type = "object",
        properties = {
            phase = {
                type = "string",
                default = "access",
                enum = phases,
            },
            functions = {
                type = "array",
                items = { type = "string" },
                minItems = 1,
            },
        },
        required = { "functions" },
    }

    local _M = {
        version = 0.1,
        priority = priority,
        name = plugin_name,
        schema = schema,
    }

    -- Compiled functions per conf table: a conf stays the same table until its route changes,
    -- and the weak keys let an old conf's functions go with it.
    local compiled = setmetatable({}, { __mode = "k" })

    local function load_funcs(conf)
        local funcs = compiled[conf]
        if funcs then
            return funcs
        end
        funcs = core.table.new(#conf.functions, 0)
        for i, func_str in ipairs(conf.functions) do
            local fn, err = compile(plugin_name, i, func_str)
            if not fn then
                -- check_schema refused such a conf already; this only guards confs that skipped it.
                core.log.error(plugin_name, " failed to compile functions[", i, "]: ", err)
                return nil
            end
            funcs[i] = fn
        end
        compiled[conf] = funcs
        return funcs
    end

    local function call_funcs(phase, conf, ctx)
        if phase ~= conf.phase then
            return
        end
        local functions = load_funcs(conf)
        if not functions then
            return 500
        end
        for _, func in ipairs(functions) do
            local code, body = func(conf, ctx)
            if code or body then
                return code, body
            end
        end
    end

    function _M.check_schema(conf)
        local ok, err = core.schema.check(schema, conf)
        if not ok then
            return false, err
        end
        for i, func_str in ipairs(conf.functions) do
            local fn, compile_err = compile(plugin_name, i, func_str)
            if not fn then
                return false, compile_err
            end
        end
        return true
    end

    for _, phase in ipairs(phases) do
        _M[phase] = function(conf, ctx)
            return call_funcs(phase, conf, ctx)
        end
    end

    return _M
end
