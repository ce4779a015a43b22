-- resty.http (lua-resty-http 0.17 API, as APISIX's api7 fork uses it) over one async native,
-- `native.http_request(req)`, which performs the whole exchange (pooled, keep-alive) and yields.
--
--   local httpc = http.new()
--   httpc:set_timeout(3000)
--   local res, err = httpc:request_uri("https://host/path", {method = "POST", body = "x",
--       query = {a = 1}, headers = {["X-A"] = "b"}, ssl_verify = true, keepalive = true})
--   -- res.status, res.headers (case-insensitive), res.body, res.reason
--
-- As lua-resty-http does: a missing Host becomes host[:port] (port only when not the scheme's
-- default), a missing User-Agent becomes "lua-resty-http/0.17.2 (Lua) ngx_lua/10026", a string body
-- gets Content-Length, POST/PUT/PATCH without a body send "Content-Length: 0", a table `query` is
-- encoded with ngx.encode_args (an empty table adds nothing; lua-resty-http would add a bare "?")
-- and a string `query` is sent verbatim.
--
-- Not available: raw sockets (sock, connect to unix sockets), request pipelining, trailers,
-- streaming request bodies (a function body is read fully first), proxies.
local native = require("moongate.native")

local http_request = native.http_request
local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local setmetatable = setmetatable
local str_lower = string.lower
local str_upper = string.upper
local str_sub = string.sub
local str_find = string.find
local str_gsub = string.gsub
local concat = table.concat

local _M = { _VERSION = "0.17.2" }
_M._USER_AGENT = "lua-resty-http/" .. _M._VERSION .. " (Lua) ngx_lua/10026"

local mt = { __index = _M }

local DEFAULT_TIMEOUT = 60000

local EXPECTING_BODY = { POST = true, PUT = true, PATCH = true }

local REASONS = {
    [100] = "Continue", [101] = "Switching Protocols", [200] = "OK", [201] = "Created",
    [202] = "Accepted", [204] = "No Content", [206] = "Partial Content",
    [301] = "Moved Permanently", [302] = "Found", [303] = "See Other", [304] = "Not Modified",
    [307] = "Temporary Redirect", [308] = "Permanent Redirect", [400] = "Bad Request",
    [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
    [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
    [413] = "Payload Too Large", [415] = "Unsupported Media Type", [429] = "Too Many Requests",
    [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
    [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- Case-insensitive header tables (keys looked up lower-case, "_" as "-").
local headers_mt = {
    __index = function(t, k)
        if type(k) ~= "string" then
            return nil
        end
        local n = str_lower(k)
        if str_find(n, "_", 1, true) then
            n = str_gsub(n, "_", "-")
        end
        if n ~= k then
            return rawget(t, n)
        end
        return nil
    end,
}

function _M.new()
    return setmetatable({
        timeouts = { connect = DEFAULT_TIMEOUT, send = DEFAULT_TIMEOUT, read = DEFAULT_TIMEOUT },
        keepalive = true,
    }, mt)
end

function _M.set_timeout(self, timeout)
    local t = self.timeouts
    t.connect, t.send, t.read = timeout, timeout, timeout
    return true
end

function _M.set_timeouts(self, connect, send, read)
    local t = self.timeouts
    t.connect = connect or t.connect
    t.send = send or t.send
    t.read = read or t.read
    return true
end

function _M.set_proxy_options()
    return true
end

-- parse_uri(uri, query_in_path = true) -> {scheme, host, port, path, query} | nil, err
function _M.parse_uri(_, uri, query_in_path)
    if query_in_path == nil then
        query_in_path = true
    end
    if type(uri) ~= "string" then
        return nil, "bad uri: " .. tostring(uri)
    end
    local m, err = ngx.re.match(uri,
        [[^(?:(http[s]?):)?//(?:([^@/\?#]*)@)?((?:[^\[\]:/\?#]+)|(?:\[.+\]))(?::(\d+))?([^\?#]*)\??([^#]*)]], "jo")
    if not m then
        if err then
            return nil, "failed to match the uri: " .. uri .. ", " .. err
        end
        return nil, "bad uri: " .. uri
    end
    local scheme = m[1]
    if not scheme then
        local ok, s = pcall(function() return ngx.var.scheme end)
        scheme = ok and s or "http"
    end
    local port = m[4]
    if port then
        port = tonumber(port)
    elseif scheme == "https" then
        port = 443
    else
        port = 80
    end
    local path = m[5]
    if not path or path == "" then
        path = "/"
    end
    local query = m[6] or ""
    if query_in_path and query ~= "" then
        path = path .. "?" .. query
        query = nil
    end
    local parsed = { scheme, m[3], port, path, query }
    if m[2] and m[2] ~= "" then
        parsed.userinfo = m[2]
    end
    return parsed
end

-- connect(opts) or connect(host, port, options): only records the target; the native connects.
function _M.connect(self, opts, port, options)
    if type(opts) ~= "table" then
        local host = opts
        opts = options or {}
        opts.host = host
        opts.port = port
        opts.scheme = opts.scheme or (port == 443 and "https" or "http")
    end
    if type(opts.host) ~= "string" or opts.host == "" then
        return nil, "no host"
    end
    if str_sub(opts.host, 1, 5) == "unix:" then
        return nil, "unix domain sockets are not available in Moongate"
    end
    local scheme = opts.scheme or "http"
    self.scheme = scheme
    self.host = opts.host
    self.port = tonumber(opts.port) or (scheme == "https" and 443 or 80)
    self.ssl = scheme == "https"
    self.ssl_verify = opts.ssl_verify ~= false
    self.ssl_server_name = opts.ssl_server_name
    self.pool_size = opts.pool_size
    self.connected = true
    return true
end

local function body_string(body)
    local t = type(body)
    if body == nil or t == "string" then
        return body
    end
    if t == "table" then
        local parts = {}
        for i, v in ipairs(body) do
            parts[i] = tostring(v)
        end
        return concat(parts)
    end
    if t == "function" then
        local parts = {}
        while true do
            local chunk, err = body()
            if err then
                return nil, err
            end
            if chunk == nil or chunk == "" then
                break
            end
            parts[#parts + 1] = chunk
        end
        return concat(parts)
    end
    return tostring(body)
end

local function format_query(query)
    if type(query) == "table" then
        local q = ngx.encode_args(query)
        if q == "" then
            return ""
        end
        return "?" .. q
    end
    if query == nil or query == "" then
        return ""
    end
    query = tostring(query)
    if str_sub(query, 1, 1) ~= "?" then
        return "?" .. query
    end
    return query
end

local function build_headers(self, params, body)
    local headers = {}
    local names = {}
    if type(params.headers) == "table" then
        for k, v in pairs(params.headers) do
            local lk = str_lower(k)
            local prev = names[lk]
            if prev and prev ~= k then
                headers[prev] = nil
            end
            names[lk] = k
            if type(v) == "table" then
                local arr = {}
                for i, x in ipairs(v) do
                    arr[i] = tostring(x)
                end
                headers[k] = arr
            else
                headers[k] = tostring(v)
            end
        end
    end
    if not names["host"] then
        local host = self.host
        if (self.ssl and self.port ~= 443) or (not self.ssl and self.port ~= 80) then
            host = host .. ":" .. self.port
        end
        headers["Host"] = host
        names["host"] = "Host"
    end
    if not names["user-agent"] then
        headers["User-Agent"] = _M._USER_AGENT
    end
    local te = names["transfer-encoding"] and headers[names["transfer-encoding"]]
    if params.client_body then
        -- The client's body streams through: its length (if known) is set by the native client.
        if names["content-length"] then
            headers[names["content-length"]] = nil
        end
    elseif te and str_find(str_lower(tostring(te)), "chunked", 1, true) then
        if names["content-length"] then
            headers[names["content-length"]] = nil
        end
    elseif not names["content-length"] then
        if body == nil and EXPECTING_BODY[str_upper(params.method or "GET")] then
            headers["Content-Length"] = "0"
        elseif body ~= nil then
            headers["Content-Length"] = tostring(#body)
        end
    end
    if params.userinfo and not names["authorization"] then
        headers["Authorization"] = "Basic " .. ngx.encode_base64(ngx.unescape_uri(params.userinfo))
    end
    return headers
end

local function response(res, method)
    local status = res.status
    local headers = setmetatable(res.headers or {}, headers_mt)
    -- A streamed response (stream_response) went to the client: there is no body here.
    local body = res.body
    if body == nil and not res.streamed then
        body = ""
    end
    local has_body = method ~= "HEAD" and status ~= 204 and status ~= 304
        and not (status >= 100 and status < 200)
    local done = false
    local r = {
        status = status,
        reason = res.reason or REASONS[status] or "",
        headers = headers,
        has_body = has_body,
        streamed = res.streamed,
    }
    function r.body_reader()
        if done then
            return nil
        end
        done = true
        return body
    end
    function r.read_body()
        return body
    end
    function r.read_trailers()
    end
    return r
end

-- request(params) after connect(): performs the request; the body is read with res:read_body().
function _M.request(self, params)
    if not self.connected then
        return nil, "not connected"
    end
    params = params or {}
    local method = str_upper(params.method or "GET")
    local body, berr = body_string(params.body)
    if berr then
        return nil, berr
    end
    local path = params.path or "/"
    if path == "" then
        path = "/"
    end
    local req = {
        scheme = self.scheme,
        host = self.host,
        port = self.port,
        method = method,
        path = path .. format_query(params.query),
        headers = build_headers(self, params, body),
        body = body,
        timeout_ms = {
            connect = self.timeouts.connect,
            send = self.timeouts.send,
            read = self.timeouts.read,
        },
        ssl_verify = self.ssl_verify,
        ssl_server_name = self.ssl_server_name,
        keepalive = params.keepalive ~= false,
        keepalive_timeout = params.keepalive_timeout,
        keepalive_pool = params.keepalive_pool or self.pool_size,
        -- Moongate: send the client's own body as it arrives, and stream a successful response
        -- straight to the client (see moongate.native http_request).
        client_body = params.client_body,
        client_body_limit = params.client_body_limit,
        stream_response = params.stream_response,
    }
    local res, err = http_request(req)
    if not res then
        return nil, err
    end
    return response(res, method)
end

-- request_uri parses the same few URIs again and again (a plugin's configured endpoint), so parses
-- of URIs that name their scheme (which then do not depend on the request) are kept, up to 256.
local uri_cache, remember_uri = require("moongate.memo").new(256)

local function parse_for_request(self, uri)
    local parsed = uri_cache[uri]
    if parsed then
        return parsed
    end
    local err
    parsed, err = self:parse_uri(uri, false)
    if parsed and str_find(uri, "^https?://") then
        remember_uri(uri, parsed)
    end
    return parsed, err
end

function _M.request_uri(self, uri, params)
    local p = {}
    if params then
        for k, v in pairs(params) do
            p[k] = v
        end
    end
    local parsed, err = parse_for_request(self, uri)
    if not parsed then
        return nil, err
    end
    local scheme, host, port, path, query = parsed[1], parsed[2], parsed[3], parsed[4], parsed[5]
    p.path = p.path or path
    if p.query == nil then
        p.query = query
    end
    p.userinfo = parsed.userinfo
    local ssl_verify = p.ssl_verify
    if ssl_verify == nil then
        ssl_verify = true
    end
    local ok, cerr = self:connect({
        scheme = scheme,
        host = host,
        port = port,
        ssl_verify = ssl_verify,
        ssl_server_name = p.ssl_server_name or host,
        pool_size = p.keepalive_pool,
    })
    if not ok then
        return nil, cerr
    end
    local res, rerr = self:request(p)
    if not res then
        return nil, rerr
    end
    res.body = res:read_body()
    return res
end

function _M.set_keepalive()
    return 1
end

function _M.close()
    return 1
end

function _M.get_reused_times()
    return 0
end

function _M.get_client_body_reader()
    return nil, "chunked request bodies are not supported"
end

return _M
