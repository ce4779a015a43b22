-- core.config_util: the small helpers APISIX's config modules share.
local ipairs = ipairs
local type = type

local _M = {}

-- Iterates an array of {value = ...} items (or plain values) as index, item.
function _M.iterate_values(t)
    if type(t) ~= "table" then
        return function() end
    end
    return ipairs(t)
end

function _M.add_clean_handler(item, func)
    item.clean_handlers = item.clean_handlers or {}
    local handlers = item.clean_handlers
    handlers[#handlers + 1] = func
    return #handlers
end

function _M.cancel_clean_handler(item, idx, fire)
    local handlers = item.clean_handlers
    if not handlers then
        return
    end
    local f = handlers[idx]
    table.remove(handlers, idx)
    if fire and f then
        f(item)
    end
end

function _M.fire_all_clean_handlers(item)
    local handlers = item and item.clean_handlers
    if not handlers then
        return
    end
    for _, f in ipairs(handlers) do
        f(item)
    end
    item.clean_handlers = {}
end

return _M
