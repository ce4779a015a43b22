-- resty.lrucache in pure Lua: a fixed-size LRU with optional per-item TTL (seconds).
--   local c = lrucache.new(100); c:set(k, v, ttl, flags); local v, stale, flags = c:get(k)
-- get() returns nil plus the stale value for an expired item (which stays until evicted).
local setmetatable = setmetatable
local type = type

local _M = { _VERSION = "0.13" }
local mt = { __index = _M }

local function now()
    return ngx.now()
end

local function unlink(node)
    node.prev.next = node.next
    node.next.prev = node.prev
end

local function push_front(self, node)
    local head = self.head
    node.next = head.next
    node.prev = head
    head.next.prev = node
    head.next = node
end

function _M.new(size)
    if type(size) ~= "number" or size < 1 then
        return nil, "size too small"
    end
    local head = {}
    head.next = head
    head.prev = head
    return setmetatable({ size = size, n = 0, head = head, map = {} }, mt)
end

function _M.get(self, key)
    local node = self.map[key]
    if not node then
        return nil
    end
    if node.expire and node.expire <= now() then
        return nil, node.value, node.flags
    end
    unlink(node)
    push_front(self, node)
    return node.value, nil, node.flags
end

function _M.set(self, key, value, ttl, flags)
    local map = self.map
    local node = map[key]
    if node then
        unlink(node)
    else
        if self.n >= self.size then
            local last = self.head.prev
            unlink(last)
            map[last.key] = nil
            self.n = self.n - 1
        end
        node = { key = key }
        map[key] = node
        self.n = self.n + 1
    end
    node.value = value
    node.flags = flags
    if ttl and ttl > 0 then
        node.expire = now() + ttl
    else
        node.expire = nil
    end
    push_front(self, node)
end

function _M.delete(self, key)
    local node = self.map[key]
    if not node then
        return false
    end
    unlink(node)
    self.map[key] = nil
    self.n = self.n - 1
    return true
end

function _M.flush_all(self)
    local head = self.head
    head.next = head
    head.prev = head
    self.map = {}
    self.n = 0
end

function _M.count(self)
    return self.n
end

function _M.capacity(self)
    return self.size
end

-- Keys from most to least recently used, at most `max_count` (0 or nil = all).
function _M.get_keys(self, max_count, res)
    res = res or {}
    local n = 0
    local node = self.head.next
    while node ~= self.head do
        if max_count and max_count > 0 and n >= max_count then
            break
        end
        n = n + 1
        res[n] = node.key
        node = node.next
    end
    return res
end

return _M
