-- The host side of the plugin convention: loading and checking plugin modules, building the
-- per-route plugin chains, creating the request ctx, and running phases. Rust calls these
-- functions; everything here runs on the worker's own VM.

local native = require("moongate.native")
local core = require("apisix.core")
local expr = require("resty.expr.v1")
local EXIT = require("moongate.ngx").EXIT
local overran = require("moongate.limits").overran

local pcall = pcall
local xpcall = xpcall
local type = type
local tostring = tostring
local pairs = pairs
local ipairs = ipairs
local sort = table.sort
local setmetatable = setmetatable
local rawget = rawget
local rawset = rawset
local traceback = debug.traceback
local json_decode = native.json_decode
local clear_tab = require("table.clear")
local new_tab = require("table.new")
local release_vars = core.ctx.release_vars

local MARK = "this is a mark for our injected plugin schema"
local PHASES = { "rewrite", "access", "before_proxy", "header_filter", "body_filter", "log" }
local EXITING = { rewrite = true, access = true, before_proxy = true }

local _M = { plugins = {} }
local meta_schema
local runners_of

-- `require("apisix.plugin").get(name)` finds the loaded module here.
native.plugin_module = function(name)
    return _M.plugins[name]
end

-- `injected` is schema_def.plugin_injected_schema: { ["$comment"] = MARK, _meta = {...} }.
function _M.init(injected)
    meta_schema = injected._meta
    require("moongate.limits").install()
end

local function encode(value)
    if value == nil then
        return nil
    end
    return core.json.encode(value)
end

-- Loads one plugin module and checks it against the convention; returns what it declares.
function _M.load(name)
    local modname = "apisix.plugins." .. name
    local ok, mod = pcall(require, modname)
    if not ok then
        package.loaded[modname] = nil
        return nil, "failed to load plugin [" .. name .. "] err: " .. tostring(mod)
    end
    if type(mod) ~= "table" then
        package.loaded[modname] = nil
        return nil, "invalid plugin [" .. name .. "]: the module returned " .. type(mod) .. ", not a table"
    end
    if not mod.priority then
        return nil, "invalid plugin [" .. name .. "], missing field: priority"
    end
    if not mod.version then
        return nil, "invalid plugin [" .. name .. "] missing field: version"
    end
    if type(mod.schema) ~= "table" then
        return nil, "invalid plugin [" .. name .. "] schema field"
    end
    local props = mod.schema.properties
    if props and props._meta and mod.schema["$comment"] ~= MARK then
        return nil, "invalid plugin [" .. name .. "]: found forbidden '_meta' field in the schema"
    end
    if not props then
        props = {}
        mod.schema.properties = props
    end
    props._meta = meta_schema
    mod.schema["$comment"] = MARK
    mod.name = name
    if mod.init then
        local ok_init, err = xpcall(mod.init, traceback)
        if not ok_init then
            return nil, "failed to init plugin [" .. name .. "] err: " .. tostring(err)
        end
    end
    _M.plugins[name] = mod
    return {
        priority = mod.priority,
        schema = encode(mod.schema),
        consumer_schema = encode(mod.consumer_schema),
        metadata_schema = encode(mod.metadata_schema),
    }
end

local function check_conf(mod, conf, schema_type)
    if mod.check_schema then
        return mod.check_schema(conf, schema_type)
    end
    local schema = mod.schema
    if schema_type == core.schema.TYPE_CONSUMER then
        schema = mod.consumer_schema or mod.schema
    elseif schema_type == core.schema.TYPE_METADATA then
        schema = mod.metadata_schema
        if not schema then
            return true
        end
    end
    return core.schema.check(schema, conf)
end

-- Compiles `_meta.pre_function`: a chunk returning a function, as APISIX loads it.
local pre_functions = setmetatable({}, { __mode = "v" })
local function compile_pre_function(code)
    local cached = pre_functions[code]
    if cached then
        return cached
    end
    local chunk, err = load(code, "=_meta.pre_function", "t")
    if not chunk then
        return nil, err
    end
    local ok, fn = pcall(chunk)
    if not ok then
        return nil, fn
    end
    if type(fn) ~= "function" then
        return nil, "the chunk must return a function, got " .. type(fn)
    end
    pre_functions[code] = fn
    return fn
end

-- The Admin API check of one conf. `schema_type`: 0 route/service/..., 1 consumer, 2 metadata.
function _M.check(name, conf_json, schema_type)
    local mod = _M.plugins[name]
    if not mod then
        return false, "unknown plugin [" .. name .. "]"
    end
    local conf, err = json_decode(conf_json)
    if type(conf) ~= "table" then
        return false, "invalid plugin conf " .. tostring(err or conf_json) .. " for plugin [" .. name .. "]"
    end
    if schema_type == 0 then
        schema_type = nil
    end
    local ok, check_err = check_conf(mod, conf, schema_type)
    if not ok then
        if type(conf._meta) == "table" and conf._meta.disable then
            core.log.warn("failed to check the configuration of plugin ", name, " err: ", check_err)
            return true
        end
        return false, "failed to check the configuration of plugin " .. name .. " err: " .. tostring(check_err)
    end
    local meta = conf._meta
    if type(meta) == "table" and meta.filter then
        local _, expr_err = expr.new(meta.filter)
        if expr_err then
            return false, "failed to validate the 'vars' expression: " .. tostring(expr_err)
        end
    end
    if type(meta) == "table" and type(meta.pre_function) == "string" then
        local _, load_err = compile_pre_function(meta.pre_function)
        if load_err then
            return false, "failed to load _meta.pre_function in plugin " .. name .. ": " .. tostring(load_err)
        end
    end
    return true
end

-- Highest priority first; equal priorities by name, so the order is stable across reloads.
local function by_priority(a, b)
    if a.priority == b.priority then
        return a.name < b.name
    end
    return a.priority > b.priority
end

-- Fields listed in a schema's encrypt_fields are stored encrypted (apisix.data_encryption): the
-- plugin runs on the plaintext. A value no key decrypts stays as it is.
function _M.decrypt_fields(conf, fields)
    if type(conf) ~= "table" or type(fields) ~= "table" then
        return conf
    end
    for _, path in ipairs(fields) do
        local node, last = conf, nil
        for segment in string.gmatch(path, "[^%.]+") do
            if last ~= nil then
                node = type(node) == "table" and node[last] or nil
            end
            last = segment
        end
        if type(node) == "table" and type(node[last]) == "string" then
            local plain = native.decrypt(node[last])
            if plain then
                node[last] = plain
            end
        end
    end
    return conf
end

-- Consumer confs of a plugin come decrypted too (its consumer_schema's encrypt_fields, else its
-- schema's). The native hands out the same list until the consumers change: decrypt it once.
local consumers_by_plugin = native.consumers_by_plugin
local decrypted_lists = setmetatable({}, { __mode = "k" })
native.consumers_by_plugin = function(name)
    local list = consumers_by_plugin(name)
    if type(list) ~= "table" or decrypted_lists[list] then
        return list
    end
    local mod = _M.plugins[name]
    local schema = mod and (mod.consumer_schema or mod.schema)
    local fields = type(schema) == "table" and schema.encrypt_fields
    if fields then
        for _, consumer in ipairs(list) do
            if type(consumer.plugins) == "table" then
                _M.decrypt_fields(consumer.plugins[name], fields)
            end
        end
    end
    decrypted_lists[list] = true
    return list
end

local function entries(list, out, skip, global)
    local group = {}
    for i = 1, #list do
        local item = list[i]
        local mod = _M.plugins[item.name]
        if mod and not (skip and skip[item.name]) then
            local conf = _M.decrypt_fields(json_decode(item.conf), mod.schema.encrypt_fields)
            if type(conf) == "table" then
                -- The data plane runs on a conf with the schema's defaults filled in, as APISIX does.
                local ok, err = check_conf(mod, conf, nil)
                if not ok then
                    core.log.warn("plugin ", item.name, " conf failed its check: ", err)
                end
                local meta = type(conf._meta) == "table" and conf._meta or nil
                if not (meta and meta.disable) then
                    local filter, pre_function
                    if meta and meta.filter then
                        filter = expr.new(meta.filter)
                    end
                    if meta and type(meta.pre_function) == "string" then
                        local load_err
                        pre_function, load_err = compile_pre_function(meta.pre_function)
                        if not pre_function then
                            core.log.error("failed to load _meta.pre_function in plugin ",
                                           item.name, ": ", load_err)
                        end
                    end
                    group[#group + 1] = {
                        name = item.name,
                        mod = mod,
                        conf = conf,
                        priority = (meta and meta.priority) or mod.priority,
                        filter = filter,
                        pre_function = pre_function,
                        global = global,
                    }
                end
            end
        end
    end
    sort(group, by_priority)
    for i = 1, #group do
        out[#out + 1] = group[i]
    end
end

-- Chains are made with room for their entries in the array part: the interpreter indexes and
-- measures an array part on its fast path, and a chain's few entries would otherwise land in the
-- hash part.
local function new_chain(size, from)
    local chain = new_tab(size, 4)
    chain.route_id = from.route_id
    chain.conf_version = from.conf_version
    chain.service_id = from.service_id
    chain.matched_route = from.matched_route
    return chain
end

-- The chain of one route: global-rule plugins first, then the route's own (merged service,
-- plugin_config and route confs), each group by priority. Returns the chain and its runners (see
-- runners_of). `route` carries the facts every request's ctx shares: id, conf version, service id,
-- object.
function _M.build_chain(globals, own, route)
    local chain = new_chain(#globals + #own, {
        route_id = route.id,
        conf_version = route.conf_version,
        service_id = route.service_id,
        matched_route = { key = "/apisix/routes/" .. route.id, value = json_decode(route.value) },
    })
    local on_route = {}
    for i = 1, #own do
        local mod = _M.plugins[own[i].name]
        if mod and mod.run_policy == "prefer_route" then
            on_route[own[i].name] = true
        end
    end
    entries(globals, chain, on_route, true)
    entries(own, chain, nil, false)
    return chain, runners_of(chain)
end

-- The route facts APISIX puts in ctx, and the chain field each comes from.
local ROUTE_FACTS = {
    conf_id = "route_id",
    conf_version = "conf_version",
    matched_route = "matched_route",
    service_id = "service_id",
}

-- The per-request ctx (APISIX's api_ctx). `var`, `curr_req_matched` and the route facts are built
-- on first read: most plugins never read them, and a request should not pay for them. The facts
-- come from the request's chain, as they only change with the config.
local CTX_MT = {
    __index = function(ctx, key)
        if key == "var" then
            core.ctx.set_vars_meta(ctx)
            return rawget(ctx, "var")
        elseif key == "curr_req_matched" then
            local matched = native.curr_req_matched()
            rawset(ctx, key, matched)
            return matched
        elseif key == "conf_type" then
            return "route"
        end
        local field = ROUTE_FACTS[key]
        if field then
            local value = rawget(ctx, "_route_chain")[field]
            rawset(ctx, key, value)
            return value
        end
        return nil
    end,
}

-- Sets up `ctx` for a new request. The table may be one a finished request used: the host keeps
-- those for the next requests, as APISIX takes api_ctx from a tablepool, so that serving a request
-- leaves no garbage here. A function of its own, so that LuaJIT compiles it: the runners that call it
-- stay interpreted (they call plugin code, which runs with the JIT off).
local function init_ctx(ctx, chain)
    if rawget(ctx, "var") then
        release_vars(ctx)
    end
    -- clear_tab keeps the metatable that new_ctx gave the table.
    clear_tab(ctx)
    ctx._route_chain = chain
end

-- A table for a request's ctx, when the host has none left from finished requests.
function _M.new_ctx()
    return setmetatable({}, CTX_MT)
end

-- Consumer chains, per route chain and consumer object (both stay the same tables until the
-- configuration changes, so weak keys drop stale entries).
local consumer_chains = setmetatable({}, { __mode = "k" })

local merge

-- The plugins an authenticated consumer brings: its group's, overridden by its own (APISIX's
-- precedence: consumer over consumer group over route). Auth plugins already ran: their consumer
-- conf is credentials, not a plugin to run.
local function consumer_plugins(consumer)
    local confs = {}
    if consumer.group_id ~= nil then
        local group = native.consumer_group(tostring(consumer.group_id))
        if type(group) == "table" and type(group.plugins) == "table" then
            for name, conf in pairs(group.plugins) do
                confs[name] = conf
            end
        end
    end
    if type(consumer.plugins) == "table" then
        for name, conf in pairs(consumer.plugins) do
            confs[name] = conf
        end
    end
    local list = {}
    for name, conf in pairs(confs) do
        local mod = _M.plugins[name]
        if mod and mod.type ~= "auth" then
            list[#list + 1] = { name = name, conf = core.json.encode(conf) }
        end
    end
    return list
end

-- After rewrite, an authenticated consumer's plugins (and its group's) join the chain. Returns the
-- merged chain, its runners and the runner of the newly added entries' rewrite (which runs next, as
-- APISIX's rewrite_in_consumer), or nil when nothing changes.
function _M.merge_consumer(chain, ctx)
    local consumer = ctx.consumer
    if type(consumer) ~= "table" then
        return nil
    end
    local per_chain = consumer_chains[chain]
    if not per_chain then
        per_chain = setmetatable({}, { __mode = "k" })
        consumer_chains[chain] = per_chain
    end
    local cached = per_chain[consumer]
    if cached == false then
        return nil
    end
    if not cached then
        cached = merge(chain, consumer_plugins(consumer))
        per_chain[consumer] = cached or false
        if not cached then
            return nil
        end
    end
    -- Plugins key their state (limit-count's counters, lrucaches) on these, as APISIX sets them.
    ctx.conf_type = "route&consumer"
    ctx.conf_id = tostring(chain.route_id) .. "&" .. tostring(consumer.username)
    ctx.conf_version = tostring(chain.conf_version) .. "&"
        .. tostring(consumer.modifiedIndex or consumer.update_time or 0)
    return cached.chain, cached.runners, cached.added_rewrite
end

local function on_error(err)
    if err == EXIT then
        return EXIT
    end
    return traceback(tostring(err), 2)
end

local function filter_passes(e, ctx)
    local ok, matched = pcall(e.filter.eval, e.filter, ctx.var)
    -- APISIX runs the plugin when its filter cannot be evaluated.
    return not ok or matched
end

-- `_meta.pre_function` runs before each phase function of its plugin; its errors are only logged,
-- but one that overran the time or memory limit fails the request, as a plugin's own would.
local function run_pre_function(e, ctx)
    local ok, err = xpcall(e.pre_function, on_error, e.conf, ctx)
    if not ok and err ~= EXIT then
        if overran(err) then
            error(err, 0)
        end
        core.log.error("pre_function of plugin ", e.name, " failed: ", err)
    end
end

-- What a phase function's call came to, when it raised or returned something: true when the
-- request ended (`ngx.exit`, or `return code, body` from a phase that may end it); raises when the
-- plugin failed.
local function ended_by(e, phase, ok, code, body)
    if not ok then
        if code == EXIT then
            return true
        end
        error("plugin " .. e.name .. " failed in " .. phase .. ": " .. tostring(code), 0)
    end
    if not EXITING[phase] then
        return false
    end
    if type(code) ~= "number" then
        error("plugin " .. e.name .. " returned a non-number status code from " .. phase, 0)
    end
    if code >= 400 then
        core.log.warn(e.name, " exits with http status code ", code)
        local meta = e.conf._meta
        if type(meta) == "table" and meta.error_response then
            body = meta.error_response
        end
    end
    local exited, err = pcall(core.response.exit_returned, code, body)
    if not exited and err ~= EXIT then
        error("plugin " .. e.name .. " failed to exit: " .. tostring(err), 0)
    end
    return true
end

-- The phase function `f` of an entry with a `_meta.filter` or a `pre_function`, wrapped so that the
-- runners check nothing per entry: it does nothing when the filter does not pass, and runs the
-- pre_function first.
local function guarded(e, f)
    return function(conf, ctx)
        if e.filter and not filter_passes(e, ctx) then
            return
        end
        if e.pre_function then
            run_pre_function(e, ctx)
        end
        return f(conf, ctx)
    end
end

-- The entries of `list` that have a `phase` function, and those functions (guarded where the entry
-- has a guard), in two arrays.
local function with_phase(list, phase)
    local n = 0
    for i = 1, #list do
        if type(list[i].mod[phase]) == "function" then
            n = n + 1
        end
    end
    local found, fns = new_tab(n, 0), new_tab(n, 0)
    for i = 1, #list do
        local e = list[i]
        local f = e.mod[phase]
        if type(f) == "function" then
            found[#found + 1] = e
            fns[#fns + 1] = (e.filter or e.pre_function) and guarded(e, f) or f
        end
    end
    return found, fns, n
end

-- The runner of one phase over the entries of `list` (the chain's, or some of them): called with the
-- request's ctx, which the first call of a request sets up for `chain` (`fresh`), it runs the phase
-- function of each entry in turn and returns true when one ended the request (which only rewrite,
-- access and before_proxy can do; `ngx.exit` in a later phase ends that phase).
local function phase_runner(chain, list, phase)
    local found, fns, n = with_phase(list, phase)
    if n == 0 then
        return nil
    end
    -- Read once here rather than from each entry on every call.
    local names, confs = new_tab(n, 0), new_tab(n, 0)
    for i = 1, n do
        names[i], confs[i] = found[i].name, found[i].conf
    end
    return function(ctx, fresh)
        if fresh then
            init_ctx(ctx, chain)
        end
        for i = 1, n do
            ctx._plugin_name = names[i]
            local ok, code, body = xpcall(fns[i], on_error, confs[i], ctx)
            if (not ok or code ~= nil or body ~= nil) and ended_by(found[i], phase, ok, code, body) then
                return true
            end
        end
        ctx._plugin_name = nil
        return false
    end
end

-- The runner of body_filter: called with the ctx, `fresh` as above, and one chunk; returns the chunk
-- to send (`ngx.arg[1]` as the filters left it).
local function body_filter_runner(chain)
    local run = phase_runner(chain, chain, "body_filter")
    if not run then
        return nil
    end
    return function(ctx, fresh, chunk, eof)
        local arg = ngx.arg
        arg[1] = chunk
        arg[2] = eof
        run(ctx, fresh)
        return arg[1]
    end
end

-- A chain's runners by phase number (the position in PHASES), only for the phases some entry has.
-- Rust calls a runner per phase of each request: a runner holds the entries that have its phase,
-- so a call passes nothing but the ctx and skips the rest.
function runners_of(chain)
    local runners = {}
    for index, phase in ipairs(PHASES) do
        if phase == "body_filter" then
            runners[index] = body_filter_runner(chain)
        else
            runners[index] = phase_runner(chain, chain, phase)
        end
    end
    return runners
end

-- The chain with consumer plugins merged in, or nil when `list` adds nothing.
function merge(chain, list)
    if #list == 0 then
        return nil
    end
    local added = {}
    entries(list, added, nil)
    local replaced = {}
    for _, e in ipairs(added) do
        replaced[e.name] = true
    end
    local merged = new_chain(#chain + #added, chain)
    local own = {}
    for _, e in ipairs(chain) do
        if not replaced[e.name] then
            if e.global then
                merged[#merged + 1] = e
            else
                own[#own + 1] = e
            end
        end
    end
    for _, e in ipairs(added) do
        own[#own + 1] = e
    end
    sort(own, by_priority)
    for _, e in ipairs(own) do
        merged[#merged + 1] = e
    end
    -- The rewrite runner of the added entries alone (nil when none of them has a rewrite).
    local added_rewrite = phase_runner(merged, added, "rewrite")
    return { chain = merged, runners = runners_of(merged), added_rewrite = added_rewrite }
end

-- Calls every plugin's destroy() when the VM is replaced.
function _M.destroy()
    for name, mod in pairs(_M.plugins) do
        if mod.destroy then
            local ok, err = pcall(mod.destroy)
            if not ok then
                core.log.warn("failed to destroy plugin ", name, ": ", err)
            end
        end
    end
end

return _M
