-- core.lrucache: APISIX's versioned LRU caches over resty.lrucache.
--   local lru = core.lrucache.new({count = 100, ttl = 60})
--   local obj, err = lru(key, version, create_fn, ...)
-- An entry is reused while its version matches; a stale (expired) entry with the same version is
-- revived unless `invalid_stale`. `serial_creating` is accepted; creation is never concurrent inside
-- one VM unless create_fn yields, so no lock is taken.
local lru_new = require("resty.lrucache").new

local PLUGIN_TTL = 5 * 60
local PLUGIN_ITEMS_COUNT = 8
local GLOBAL_TTL = 60 * 60
local GLOBAL_ITEMS_COUNT = 1024

local function fetch_valid_cache(lru_obj, invalid_stale, item_ttl, item_release, key, version)
    local obj, stale_obj = lru_obj:get(key)
    if obj and obj.ver == version then
        return obj
    end
    if not invalid_stale and stale_obj and stale_obj.ver == version then
        lru_obj:set(key, stale_obj, item_ttl)
        return stale_obj
    end
    if item_release and obj then
        item_release(obj.val)
    end
    return nil
end

local function new_lru_fun(opts)
    local item_count, item_ttl
    if opts and opts.type == "plugin" then
        item_count = opts.count or PLUGIN_ITEMS_COUNT
        item_ttl = opts.ttl or PLUGIN_TTL
    else
        item_count = opts and opts.count or GLOBAL_ITEMS_COUNT
        item_ttl = opts and opts.ttl or GLOBAL_TTL
    end
    local item_release = opts and opts.release
    local invalid_stale = opts and opts.invalid_stale
    local lru_obj = lru_new(item_count)

    return function(key, version, create_obj_fun, ...)
        local cache_obj = fetch_valid_cache(lru_obj, invalid_stale, item_ttl, item_release, key, version)
        if cache_obj then
            return cache_obj.val
        end
        local obj, err = create_obj_fun(...)
        if obj ~= nil then
            lru_obj:set(key, { val = obj, ver = version }, item_ttl)
        end
        return obj, err
    end
end

local function plugin_ctx_key_and_ver(api_ctx, extra_key)
    local key = api_ctx.conf_type .. "#" .. api_ctx.conf_id
    if extra_key then
        key = key .. "#" .. extra_key
    end
    return key, api_ctx.conf_version
end

local function plugin_ctx(lrucache, api_ctx, extra_key, create_obj_func, ...)
    local key, ver = plugin_ctx_key_and_ver(api_ctx, extra_key)
    return lrucache(key, ver, create_obj_func, ...)
end

local function plugin_ctx_id(api_ctx, extra_key)
    local key, ver = plugin_ctx_key_and_ver(api_ctx, extra_key)
    return key .. "#" .. tostring(ver)
end

local global_lru = new_lru_fun()

return setmetatable({
    version = 0.1,
    new = new_lru_fun,
    global = global_lru,
    plugin_ctx = plugin_ctx,
    plugin_ctx_id = plugin_ctx_id,
}, {
    __call = function(_, ...)
        return new_lru_fun(...)
    end,
})
