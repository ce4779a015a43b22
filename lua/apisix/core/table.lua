-- core.table: the table helpers of APISIX's apisix/core/table.lua. Falls back to `table` via __index.
local new_tab = require("table.new")
local clear_tab = require("table.clear")

local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local select = select
local tostring = tostring
local getmetatable = getmetatable
local setmetatable = setmetatable

local function nkeys(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

local function clone(t)
    local copy = new_tab(#t, 0)
    for k, v in pairs(t) do
        copy[k] = v
    end
    return copy
end

local function isarray(t)
    if type(t) ~= "table" then
        return false
    end
    local n = #t
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
            return false
        end
    end
    return true
end

local function isempty(t)
    return next(t) == nil
end

local _M = {
    version = 0.2,
    new = new_tab,
    clear = clear_tab,
    nkeys = nkeys,
    insert = table.insert,
    concat = table.concat,
    sort = table.sort,
    remove = table.remove,
    clone = clone,
    isarray = isarray,
    isempty = isempty,
}

function _M.insert_tail(tab, ...)
    local idx = #tab
    for i = 1, select("#", ...) do
        idx = idx + 1
        tab[idx] = select(i, ...)
    end
    return idx
end

function _M.set(tab, ...)
    for i = 1, select("#", ...) do
        tab[i] = select(i, ...)
    end
end

function _M.try_read_attr(tab, ...)
    for i = 1, select("#", ...) do
        if type(tab) ~= "table" then
            return nil
        end
        tab = tab[select(i, ...)]
    end
    return tab
end

local function array_find(array, val)
    if type(array) ~= "table" then
        return nil
    end
    for i, v in ipairs(array) do
        if v == val then
            return i
        end
    end
    return nil
end
_M.array_find = array_find

local function _deepcopy(orig, copied, parent, opts)
    local len = #orig
    local copy = new_tab(len, 0)
    copied[orig] = copy
    for k, v in pairs(orig) do
        local path = parent .. "." .. tostring(k)
        if type(v) == "table" and not (opts and opts.shallows and array_find(opts.shallows, path)) then
            if copied[v] then
                copy[k] = copied[v]
            else
                copy[k] = _deepcopy(v, copied, path, opts)
            end
        else
            copy[k] = v
        end
    end
    local mt = getmetatable(orig)
    if mt ~= nil then
        setmetatable(copy, mt)
    end
    return copy
end

-- Deep copy keeping metatables and shared/cyclic references; `opts.shallows` lists paths such as
-- "self.a.b" that are copied by reference.
function _M.deepcopy(orig, opts)
    if type(orig) ~= "table" then
        return orig
    end
    return _deepcopy(orig, {}, "self", opts)
end

local function deep_eq(t1, t2)
    if t1 == t2 then
        return true
    end
    if type(t1) ~= "table" or type(t2) ~= "table" then
        return false
    end
    if nkeys(t1) ~= nkeys(t2) then
        return false
    end
    for k, v in pairs(t1) do
        if not deep_eq(v, t2[k]) then
            return false
        end
    end
    return true
end
_M.deep_eq = deep_eq

local function merge(origin, extend)
    for k, v in pairs(extend) do
        if type(v) == "table" and type(origin[k]) == "table" then
            merge(origin[k], v)
        else
            origin[k] = v
        end
    end
    return origin
end
_M.merge = merge

-- Admin API PATCH of a sub-path ("a/b/c"): returns nil, nil, new_value or code, err.
function _M.patch(node_value, sub_path, conf)
    local sub_value = node_value
    local parts = {}
    for p in (sub_path .. "/"):gmatch("([^/]*)/") do
        parts[#parts + 1] = p
    end
    for i = 1, #parts - 1 do
        local name = parts[i]
        if sub_value[name] == nil then
            sub_value[name] = {}
        end
        sub_value = sub_value[name]
        if type(sub_value) ~= "table" then
            return 400, "invalid sub-path: /" .. table.concat(parts, "/", 1, i)
        end
    end
    if type(sub_value) ~= "table" then
        return 400, "invalid sub-path: /" .. sub_path
    end
    local last = parts[#parts]
    if last and last ~= "" then
        sub_value[last] = conf
    else
        node_value = conf
    end
    return nil, nil, node_value
end

-- Whether two key sets are equal.
function _M.set_eq(a, b)
    if nkeys(a) ~= nkeys(b) then
        return false
    end
    for k in pairs(a) do
        if b[k] == nil then
            return false
        end
    end
    return true
end

return setmetatable(_M, { __index = table })
