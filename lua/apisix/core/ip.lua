-- core.ip: IPv4/IPv6 parsing and CIDR matching in pure Lua (lua-resty-ipmatcher's API).
--   local m = core.ip.create_ip_matcher({"127.0.0.1", "10.0.0.0/8", "::1", "fe80::/10"})
--   m:match("10.1.2.3") --> true
local type = type
local tonumber = tonumber
local ipairs = ipairs
local floor = math.floor
local str_find = string.find
local str_sub = string.sub
local str_match = string.match
local str_gmatch = string.gmatch
local setmetatable = setmetatable

local _M = {}

-- IPv4 text -> integer in [0, 2^32), or false.
local function parse_ipv4(ip)
    if type(ip) ~= "string" then
        return false
    end
    local a, b, c, d = str_match(ip, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
    if not a then
        return false
    end
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    if a > 255 or b > 255 or c > 255 or d > 255 then
        return false
    end
    return ((a * 256 + b) * 256 + c) * 256 + d
end
_M.parse_ipv4 = parse_ipv4

local function parse_groups(s, out)
    if s == "" then
        return true
    end
    for g in str_gmatch(s .. ":", "([^:]*):") do
        if str_find(g, ".", 1, true) then
            local v4 = parse_ipv4(g)
            if not v4 then
                return false
            end
            out[#out + 1] = floor(v4 / 65536)
            out[#out + 1] = v4 % 65536
        else
            if not str_match(g, "^%x%x?%x?%x?$") then
                return false
            end
            out[#out + 1] = tonumber(g, 16)
        end
    end
    return true
end

-- IPv6 text (brackets and zone allowed) -> {w1, w2, w3, w4} of 32-bit words, or false.
local function parse_ipv6(ip)
    if type(ip) ~= "string" then
        return false
    end
    if str_sub(ip, 1, 1) == "[" and str_sub(ip, -1) == "]" then
        ip = str_sub(ip, 2, -2)
    end
    local zone = str_find(ip, "%", 1, true)
    if zone then
        ip = str_sub(ip, 1, zone - 1)
    end
    if not str_find(ip, ":", 1, true) then
        return false
    end
    local head, tail = str_match(ip, "^(.-)::(.*)$")
    local groups = {}
    if head then
        if str_find(tail, "::", 1, true) then
            return false
        end
        local left, right = {}, {}
        if not parse_groups(head, left) or not parse_groups(tail, right) then
            return false
        end
        if #left + #right > 7 then
            return false
        end
        for i = 1, #left do
            groups[i] = left[i]
        end
        for _ = 1, 8 - #left - #right do
            groups[#groups + 1] = 0
        end
        for i = 1, #right do
            groups[#groups + 1] = right[i]
        end
    else
        if not parse_groups(ip, groups) or #groups ~= 8 then
            return false
        end
    end
    return {
        groups[1] * 65536 + groups[2],
        groups[3] * 65536 + groups[4],
        groups[5] * 65536 + groups[6],
        groups[7] * 65536 + groups[8],
    }
end
_M.parse_ipv6 = parse_ipv6

local function prefix_eq(a, b, bits)
    if bits <= 0 then
        return true
    end
    if bits >= 32 then
        return a == b
    end
    local shift = 2 ^ (32 - bits)
    return floor(a / shift) == floor(b / shift)
end

local function split_cidr(s)
    local slash = str_find(s, "/", 1, true)
    if not slash then
        return s, nil
    end
    local bits = str_sub(s, slash + 1)
    if not str_match(bits, "^%d%d?%d?$") then
        return nil
    end
    return str_sub(s, 1, slash - 1), tonumber(bits)
end

-- Parses "ip" or "ip/bits": returns family (4 or 6), address, bits, or nil.
local function parse_entry(s)
    if type(s) ~= "string" then
        return nil
    end
    local addr, bits = split_cidr(s)
    if not addr then
        return nil
    end
    local v4 = parse_ipv4(addr)
    if v4 then
        bits = bits or 32
        if bits > 32 then
            return nil
        end
        return 4, v4, bits
    end
    local v6 = parse_ipv6(addr)
    if v6 then
        bits = bits or 128
        if bits > 128 then
            return nil
        end
        return 6, v6, bits
    end
    return nil
end

function _M.validate_cidr_or_ip(ip)
    return parse_entry(ip) ~= nil
end

local matcher = {}
local matcher_mt = { __index = matcher }

-- Returns true when `ip` is in one of the matcher's entries; nil, err for an invalid address.
function matcher.match(self, ip)
    local v4 = parse_ipv4(ip)
    if v4 then
        if self.exact4[v4] then
            return true
        end
        for _, e in ipairs(self.cidr4) do
            if prefix_eq(v4, e[1], e[2]) then
                return true
            end
        end
        return false
    end
    local v6 = parse_ipv6(ip)
    if not v6 then
        return nil, "invalid ip address, not ipv4 and ipv6"
    end
    for _, e in ipairs(self.cidr6) do
        local words, bits = e[1], e[2]
        local ok = true
        for i = 1, 4 do
            local wbits = bits - (i - 1) * 32
            if wbits <= 0 then
                break
            end
            if not prefix_eq(v6[i], words[i], wbits) then
                ok = false
                break
            end
        end
        if ok then
            return true
        end
    end
    return false
end

-- Same as create_ip_matcher, but returns nil, err instead of logging.
function _M.new_matcher(list)
    if type(list) ~= "table" then
        return nil, "invalid argument: expect a table of ip addresses"
    end
    local m = setmetatable({ exact4 = {}, cidr4 = {}, cidr6 = {} }, matcher_mt)
    for _, s in ipairs(list) do
        local family, addr, bits = parse_entry(s)
        if not family then
            return nil, "invalid ip address: " .. tostring(s)
        end
        if family == 4 then
            if bits == 32 then
                m.exact4[addr] = true
            else
                m.cidr4[#m.cidr4 + 1] = { addr, bits }
            end
        else
            m.cidr6[#m.cidr6 + 1] = { addr, bits }
        end
    end
    return m
end

function _M.create_ip_matcher(list)
    local m, err = _M.new_matcher(list)
    if not m then
        ngx.log(ngx.ERR, "failed to create ip matcher: ", err, " ip list: ",
                require("apisix.core.json").delay_encode(list))
        return nil
    end
    return m
end

return _M
