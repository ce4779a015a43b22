-- net.url 1.2 essentials: parse(), parseQuery(), buildQuery() and tostring() of a parsed URL.
--   local u = url.parse("https://user:pw@Example.com:8443/a/b?x=1&y=%20#frag")
--   u.scheme "https", u.host "example.com", u.port 8443, u.path "/a/b", u.query.x "1",
--   u.fragment "frag", u.user "user", u.password "pw", u.authority "user:pw@Example.com:8443"
-- A URL without a path has path "" (as net.url does). The path is kept as written, not re-encoded.
local type = type
local tonumber = tonumber
local tostring = tostring
local pairs = pairs
local ipairs = ipairs
local setmetatable = setmetatable
local str_gsub = string.gsub
local str_format = string.format
local str_byte = string.byte
local str_char = string.char
local str_match = string.match
local str_gmatch = string.gmatch
local concat = table.concat
local sort = table.sort

local M = { version = "1.2.1", options = { separator = "&", cumulative_parameters = false } }

local function decode(s)
    s = str_gsub(s, "+", " ")
    return (str_gsub(s, "%%(%x%x)", function(h)
        return str_char(tonumber(h, 16))
    end))
end

local function encode(s)
    return (str_gsub(tostring(s), "[^%w%-%._~]", function(c)
        return str_format("%%%02X", str_byte(c))
    end))
end

-- Builds a query string with sorted keys; nested tables become key[sub]=value.
function M.buildQuery(tab, sep, key)
    sep = sep or M.options.separator or "&"
    local keys = {}
    for k in pairs(tab) do
        keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
        return tostring(a) < tostring(b)
    end)
    local out = {}
    for _, name in ipairs(keys) do
        local value = tab[name]
        local k = encode(name)
        if key then
            k = key .. "[" .. k .. "]"
        end
        if type(value) == "table" then
            out[#out + 1] = M.buildQuery(value, sep, k)
        else
            out[#out + 1] = k .. "=" .. encode(value)
        end
    end
    return concat(out, sep)
end

local query_mt = { __tostring = function(self) return M.buildQuery(self) end }

-- Parses "a=1&b=2&c[]=3&d[x]=4": values decoded, "k[]" appends, "k[name]" nests, repeated plain
-- keys keep the last value (or accumulate with options.cumulative_parameters).
function M.parseQuery(str, sep)
    sep = sep or M.options.separator or "&"
    local values = setmetatable({}, query_mt)
    for pair in str_gmatch(str, "[^" .. sep .. "]+") do
        local k, v = str_match(pair, "^([^=]*)=?(.*)$")
        if k and k ~= "" then
            k = decode(k)
            v = decode(v)
            local base, rest = str_match(k, "^([^%[]+)(%[.*%])$")
            if base then
                local t = values[base]
                if type(t) ~= "table" then
                    t = {}
                    values[base] = t
                end
                local subkeys = {}
                for sk in str_gmatch(rest, "%[([^%]]*)%]") do
                    subkeys[#subkeys + 1] = sk
                end
                for i, sk in ipairs(subkeys) do
                    if sk == "" then
                        sk = #t + 1
                    elseif str_match(sk, "^%-?%d+$") then
                        sk = tonumber(sk)
                    end
                    if i == #subkeys then
                        t[sk] = v
                    else
                        if type(t[sk]) ~= "table" then
                            t[sk] = {}
                        end
                        t = t[sk]
                    end
                end
            else
                local old = values[k]
                if M.options.cumulative_parameters and old ~= nil then
                    if type(old) ~= "table" then
                        old = { old }
                        values[k] = old
                    end
                    old[#old + 1] = v
                else
                    values[k] = v
                end
            end
        end
    end
    return values
end

local function is_ip(host)
    local chunks = { str_match(host, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
    if #chunks == 4 then
        for _, c in ipairs(chunks) do
            if tonumber(c) > 255 then
                return false
            end
        end
        return true
    end
    if str_match(host, "^%[[%x:%.]+%]$") then
        return true
    end
    return nil
end

function M.setAuthority(comp, authority)
    comp.authority = authority
    comp.port = nil
    comp.host = nil
    comp.userinfo = nil
    comp.user = nil
    comp.password = nil
    authority = str_gsub(authority, "^([^@]*)@", function(v)
        comp.userinfo = v
        return ""
    end)
    authority = str_gsub(authority, ":(%d+)$", function(v)
        comp.port = tonumber(v)
        return ""
    end)
    local ip = is_ip(authority)
    if ip then
        comp.host = authority
    elseif ip == nil and authority ~= "" then
        local host = authority:lower()
        if str_match(host, "^[%w%-%._]+$") and host:sub(1, 1) ~= "." and host:sub(-1) ~= "."
            and not host:find("..", 1, true) then
            comp.host = host
        end
    end
    if comp.userinfo then
        local userinfo = str_gsub(comp.userinfo, ":([^:]*)$", function(v)
            comp.password = v
            return ""
        end)
        comp.user = userinfo
    end
    return authority
end

function M.setQuery(comp, query)
    if type(query) == "table" then
        comp.query = setmetatable(query, query_mt)
    else
        comp.query = M.parseQuery(query or "")
    end
    return comp.query
end

function M.build(comp)
    local url = ""
    if comp.path then
        url = url .. comp.path
    end
    if comp.query then
        local q = M.buildQuery(comp.query)
        if q ~= "" then
            url = url .. "?" .. q
        end
    end
    if comp.host then
        local authority = comp.host
        if comp.port then
            authority = authority .. ":" .. comp.port
        end
        local userinfo
        if comp.user and comp.user ~= "" then
            userinfo = comp.user
            if comp.password then
                userinfo = userinfo .. ":" .. comp.password
            end
        elseif comp.userinfo and comp.userinfo ~= "" then
            userinfo = comp.userinfo
        end
        if userinfo then
            authority = userinfo .. "@" .. authority
        end
        if comp.path and comp.path ~= "" and comp.path:sub(1, 1) ~= "/" then
            url = "/" .. url
        end
        url = "//" .. authority .. url
    end
    if comp.scheme then
        url = comp.scheme .. ":" .. url
    end
    if comp.fragment then
        url = url .. "#" .. comp.fragment
    end
    return url
end

local url_mt = { __index = M, __tostring = M.build }

function M.parse(url)
    local comp = {}
    M.setAuthority(comp, "")
    M.setQuery(comp, "")
    url = tostring(url or "")
    url = str_gsub(url, "#(.*)$", function(v)
        comp.fragment = v
        return ""
    end)
    url = str_gsub(url, "^([%a][%w%+%-%.]*)%:", function(v)
        comp.scheme = v:lower()
        return ""
    end)
    url = str_gsub(url, "%?(.*)", function(v)
        M.setQuery(comp, v)
        return ""
    end)
    url = str_gsub(url, "^//([^/]*)", function(v)
        M.setAuthority(comp, v)
        return ""
    end)
    comp.path = url
    return setmetatable(comp, url_mt)
end

return M
