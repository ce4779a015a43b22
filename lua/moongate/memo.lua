-- A bounded table of remembered answers, for caches whose keys are usually few (configured URIs,
-- header names) but may come from requests. Reads index the returned table directly; remember()
-- adds an answer, emptying the table first when it already holds `max` of them.
local clear_tab = require("table.clear")

local _M = {}

function _M.new(max)
    local items, size = {}, 0
    local function remember(key, value)
        if size >= max then
            clear_tab(items)
            size = 0
        end
        size = size + 1
        items[key] = value
    end
    return items, remember
end

return _M
