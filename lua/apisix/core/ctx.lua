-- core.ctx: the lazy `ctx.var` table and registered variables.
--
-- `ctx.var.name` looks, in order: the per-request cache, variables registered with register_var
-- (getter(ctx)), APISIX's ctx-backed names (route_id, service_id, consumer_name, ... read from ctx),
-- then `native.var(name)` (nginx variables, http_*, arg_*, cookie_*, ...). Non-nil results are cached
-- for the request unless registered with `no_cacheable`.
--
-- Assigning `ctx.var.name = v` stores an override in the cache. For the variables nginx lets APISIX
-- write (upstream_*, var_x_forwarded_*, args) it also calls `native.var_set(name, v)`. Assigning nil
-- clears the cache entry (core.request.set_header does this for http_<name>).
local native = require("moongate.native")
local tablepool = require("apisix.core.tablepool")

local native_var = native.var
local native_var_set = native.var_set
local type = type
local error = error
local rawget = rawget
local setmetatable = setmetatable
local str_sub = string.sub

local registered = {}
local no_cacheable = {}

local apisix_var_names = {
    balancer_ip = true,
    balancer_port = true,
    consumer_name = true,
    consumer_group_id = true,
    route_id = true,
    route_name = true,
    service_id = true,
    service_name = true,
    resp_body = true,
}

local writable = {
    args = true,
}

local function is_writable(key)
    if writable[key] then
        return true
    end
    return str_sub(key, 1, 9) == "upstream_" or str_sub(key, 1, 16) == "var_x_forwarded_"
end

local mt = {
    __index = function(t, key)
        local cache = rawget(t, "_cache")
        local val = cache[key]
        if val ~= nil then
            return val
        end
        if type(key) ~= "string" then
            error("invalid argument, expect string value", 2)
        end
        local ctx = rawget(t, "_ctx") or (ngx.ctx and ngx.ctx.api_ctx)
        local getter = registered[key]
        if getter then
            val = getter(ctx)
            if no_cacheable[key] then
                return val
            end
        elseif apisix_var_names[key] then
            val = ctx and ctx[key]
            if val == nil then
                val = native_var(key)
            end
        else
            val = native_var(key)
        end
        if val ~= nil then
            cache[key] = val
        end
        return val
    end,
    __newindex = function(t, key, val)
        if type(key) == "string" and val ~= nil and is_writable(key) then
            native_var_set(key, val)
        end
        rawget(t, "_cache")[key] = val
    end,
}

local _M = { version = 0.3 }

function _M.register_var(name, getter, opts)
    if type(getter) ~= "function" then
        error("the getter of registered var should be a function")
    end
    registered[name] = getter
    if opts and opts.no_cacheable then
        no_cacheable[name] = true
    end
end

-- Gives `ctx` a fresh lazy `ctx.var`.
function _M.set_vars_meta(ctx)
    local var = tablepool.fetch("ctx_var", 0, 4)
    var._cache = tablepool.fetch("ctx_var_cache", 0, 16)
    var._ctx = ctx
    setmetatable(var, mt)
    ctx.var = var
end

-- Returns `ctx.var` to the pool at the end of a request.
function _M.release_vars(ctx)
    local var = ctx.var
    if var == nil then
        return
    end
    tablepool.release("ctx_var_cache", rawget(var, "_cache"))
    setmetatable(var, nil)
    tablepool.release("ctx_var", var)
    ctx.var = nil
end

return _M
