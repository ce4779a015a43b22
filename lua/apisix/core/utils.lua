-- core.utils: the helpers of APISIX's apisix/core/utils.lua that plugins use.
local native = require("moongate.native")
local log = require("apisix.core.log")
local ip = require("apisix.core.ip")

local type = type
local tostring = tostring
local tonumber = tonumber
local ipairs = ipairs
local str_byte = string.byte
local str_sub = string.sub
local str_find = string.find
local str_format = string.format
local str_gsub = string.gsub
local str_gmatch = string.gmatch
local re_gsub = native.re_gsub

local _M = {
    version = 0.2,
    parse_ipv4 = ip.parse_ipv4,
    parse_ipv6 = ip.parse_ipv6,
}

local function rfind_char(s, ch, idx)
    local b = str_byte(ch)
    for i = idx or #s, 1, -1 do
        if str_byte(s, i) == b then
            return i
        end
    end
    return nil
end

-- "host:port", "[v6]:port", "[v6]" or "host" -> host, port (0 when absent). IPv6 keeps brackets.
function _M.parse_addr(addr)
    local default_port = 0
    if str_byte(addr, 1) == str_byte("[") then
        if str_byte(addr, #addr) == str_byte("]") then
            return addr, default_port
        end
        local pos = rfind_char(addr, ":", #addr - 1)
        if not pos or str_byte(addr, pos - 1) ~= str_byte("]") then
            return addr, default_port
        end
        return str_sub(addr, 1, pos - 1), tonumber(str_sub(addr, pos + 1))
    end
    local pos = rfind_char(addr, ":", #addr - 1)
    if not pos then
        return addr, default_port
    end
    return str_sub(addr, 1, pos - 1), tonumber(str_sub(addr, pos + 1))
end

-- Substitutes $name, ${name} and ${name ?? default} from `vars` (e.g. ctx.var). A "\$" is left
-- alone. Returns the string, nil, and the number of variables that resolved.
do
    local pat = [[(?<!\\)\$(\{(\w+)(?:\s*\?\?\s*([^}]*?))?\s*\}|(\w+))]]
    local cur_vars, cur_escaper, n_resolved

    local function resolve(m)
        local name = m[2] or m[4]
        local v = cur_vars[name]
        if v == nil then
            local default = m[3]
            if default then
                n_resolved = n_resolved + 1
                return default
            end
            return ""
        end
        n_resolved = n_resolved + 1
        v = tostring(v)
        if cur_escaper then
            return cur_escaper(v)
        end
        return v
    end

    function _M.resolve_var(tpl, vars, escaper)
        n_resolved = 0
        if not tpl or type(tpl) ~= "string" or not str_find(tpl, "$", 1, true) then
            return tpl, nil, 0
        end
        cur_vars, cur_escaper = vars, escaper
        local ok, res, err = pcall(re_gsub, tpl, pat, resolve, "jo")
        cur_vars, cur_escaper = nil, nil
        if not ok then
            return nil, res
        end
        if not res then
            return nil, err
        end
        return res, nil, n_resolved
    end
end

-- Warns about plain-http URLs in the named (dotted) conf fields.
function _M.check_https(fields, conf, plugin_name)
    for _, field in ipairs(fields) do
        local val = conf
        for part in str_gmatch(field, "[^%.]+") do
            if type(val) ~= "table" then
                val = nil
                break
            end
            val = val[part]
        end
        if type(val) == "string" and not str_find(val, "^https://") and str_find(val, "^%a[%w+.-]*://") then
            log.warn("Using ", plugin_name, " ", field, " with no TLS is a security risk")
        elseif type(val) == "table" then
            for _, v in ipairs(val) do
                if type(v) == "string" and str_find(v, "^http://") then
                    log.warn("Using ", plugin_name, " ", field, " with no TLS is a security risk")
                    break
                end
            end
        end
    end
end

-- Warns when a TLS-verification boolean is turned off.
function _M.check_tls_bool(fields, conf, plugin_name)
    for _, field in ipairs(fields) do
        local val = conf
        for part in str_gmatch(field, "[^%.]+") do
            if type(val) ~= "table" then
                val = nil
                break
            end
            val = val[part]
        end
        if val == false then
            log.warn("Keeping ", field, " disabled in ", plugin_name, " configuration is a security risk")
        end
    end
end

-- Escapes each path segment of `uri` (slashes kept).
function _M.uri_safe_encode(uri)
    if type(uri) ~= "string" then
        return uri
    end
    return (str_gsub(uri, "[^/]+", function(seg)
        return native.escape_uri(native.unescape_uri(seg))
    end))
end

-- Percent-encodes control characters, space and DEL.
function _M.escape_uri_control_chars(uri)
    return (str_gsub(uri, "[%z\1-\32\127]", function(c)
        return str_format("%%%02X", str_byte(c))
    end))
end

-- "/a/b" -> {"", "a", "b"}
function _M.split_uri(uri)
    local parts = {}
    for p in str_gmatch(uri .. "/", "([^/]*)/") do
        parts[#parts + 1] = p
    end
    return parts
end

do
    local hostname
    function _M.gethostname()
        if hostname then
            return hostname
        end
        hostname = os.getenv("HOSTNAME")
        if not hostname or hostname == "" then
            local f = io.open("/etc/hostname", "r")
            if f then
                hostname = (f:read("*l") or ""):match("^%s*(.-)%s*$")
                f:close()
            end
        end
        if not hostname or hostname == "" then
            hostname = "unknown"
        end
        return hostname
    end
end

function _M.uuid()
    return require("resty.jit-uuid").generate_v4()
end

-- Yields to other requests; a no-op under Moongate's per-request coroutines.
function _M.yield()
end

return _M
