-- The global `ngx` table of ngx_lua, rebuilt on top of `moongate.native`.
--
-- The host calls `require("moongate.ngx").install(native)` once per VM, before any APISIX module is
-- loaded. Anything ngx_lua has but Moongate does not raises "ngx.<name> is not available in Moongate"
-- when it is read (for `ngx`, `ngx.req` and `ngx.resp`), so a plugin fails loudly at the first use.
--
-- Simplifications, by design:
-- * `ngx.thread.spawn` runs the function to completion right away (inside pcall, in the calling
--   coroutine, so yielding natives still work); `ngx.thread.wait` returns its results in spawn order.
-- * `ngx.req.read_body` and `ngx.flush` are no-ops; `ngx.eof` only returns 1.
-- * `ngx.update_time` is a no-op: `ngx.now` reads the clock on every call.
-- * `ngx.socket.*` and `ngx.location.capture*` exist only to raise a clear error when called.

local _M = {}

-- Raised (as the error value) by ngx.exit after `native.exit(code)`, so the host can tell a deliberate
-- exit from a failure. Compare with `==`; it is a unique table.
local EXIT = setmetatable({}, { __tostring = function() return "ngx.exit" end })
_M.EXIT = EXIT

local type = type
local tostring = tostring
local select = select
local error = error
local pcall = pcall
local rawget = rawget
local rawset = rawset
local setmetatable = setmetatable
local concat = table.concat
local str_lower = string.lower
local str_find = string.find
local str_gsub = string.gsub
local unpack = unpack

local function pack(...)
    return { n = select("#", ...), ... }
end

local function unavailable(path)
    return function()
        error(path .. " is not available in Moongate", 2)
    end
end

local function strict(tab, prefix)
    return setmetatable(tab, {
        __index = function(_, k)
            error(prefix .. tostring(k) .. " is not available in Moongate", 2)
        end,
    })
end

-- Case-insensitive header tables, as ngx.req.get_headers() returns: keys are stored lower-case and
-- a lookup lower-cases the name and maps "_" to "-".
local header_mt = {
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
_M.header_mt = header_mt

-- ngx.header and core.response convert "_" to "-" in names (content_type -> content-type). The
-- answers are kept: plugins use a handful of names, though a name can come from a request.
local name_cache, remember_name = require("moongate.memo").new(512)
local function header_name(k)
    local n = name_cache[k]
    if n then
        return n
    end
    if type(k) ~= "string" then
        return k
    end
    n = k
    if str_find(k, "_", 1, true) then
        n = str_gsub(k, "_", "-")
    end
    remember_name(k, n)
    return n
end
_M.header_name = header_name

-- The natives' ids of header names (see native.header_id), for the setters on the hot path: a number
-- crosses into Rust for free, where a name is copied and looked up. `false` when a name has no id
-- (it is invalid, or the worker knows too many names): callers then pass the name.
local header_ids, remember_id = require("moongate.memo").new(512)
local function header_id(k)
    local id = header_ids[k]
    if id ~= nil then
        return id
    end
    if type(k) ~= "string" then
        return false
    end
    id = require("moongate.native").header_id(header_name(k)) or false
    remember_id(k, id)
    return id
end
_M.header_ids = header_ids
_M.header_id = header_id

-- Flattens ngx.print arguments (strings, numbers, booleans, nil, ngx.null, nested arrays).
local function flatten(buf, n, v, null)
    local tv = type(v)
    if tv == "string" then
        n = n + 1
        buf[n] = v
    elseif tv == "table" then
        for i = 1, #v do
            n = flatten(buf, n, v[i], null)
        end
    elseif v == nil then
        n = n + 1
        buf[n] = "nil"
    elseif v == null then
        n = n + 1
        buf[n] = "null"
    else
        n = n + 1
        buf[n] = tostring(v)
    end
    return n
end

local METHOD_NAMES = {
    [2] = "GET", [4] = "HEAD", [8] = "POST", [16] = "PUT", [32] = "DELETE", [64] = "MKCOL",
    [128] = "COPY", [256] = "MOVE", [512] = "OPTIONS", [1024] = "PROPFIND", [2048] = "PROPPATCH",
    [4096] = "LOCK", [8192] = "UNLOCK", [16384] = "PATCH", [32768] = "TRACE",
}

local function quote_sql_str(s)
    s = tostring(s)
    s = str_gsub(s, "[%z\b\n\r\t\26\\'\"]", {
        ["\0"] = "\\0", ["\b"] = "\\b", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
        ["\26"] = "\\Z", ["\\"] = "\\\\", ["'"] = "\\'", ['"'] = '\\"',
    })
    return "'" .. s .. "'"
end

function _M.install(native)
    local ngx = {}

    local native_var = native.var
    local native_var_set = native.var_set
    local native_log = native.log
    local native_log_enabled = native.log_enabled
    local native_say = native.say
    local native_exit = native.exit
    local native_resp_header = native.resp_header
    local native_resp_set_header = native.resp_set_header
    local native_resp_set_header_id = native.resp_set_header_id
    local null = native.null

    -- constants ---------------------------------------------------------------------------------
    ngx.OK = 0
    ngx.ERROR = -1
    ngx.AGAIN = -2
    ngx.DONE = -4
    ngx.DECLINED = -5

    ngx.STDERR = 0
    ngx.EMERG = 1
    ngx.ALERT = 2
    ngx.CRIT = 3
    ngx.ERR = 4
    ngx.WARN = 5
    ngx.NOTICE = 6
    ngx.INFO = 7
    ngx.DEBUG = 8

    for code, name in pairs(METHOD_NAMES) do
        ngx["HTTP_" .. name] = code
    end

    local statuses = {
        HTTP_CONTINUE = 100, HTTP_SWITCHING_PROTOCOLS = 101, HTTP_OK = 200, HTTP_CREATED = 201,
        HTTP_ACCEPTED = 202, HTTP_NO_CONTENT = 204, HTTP_PARTIAL_CONTENT = 206,
        HTTP_SPECIAL_RESPONSE = 300, HTTP_MOVED_PERMANENTLY = 301, HTTP_MOVED_TEMPORARILY = 302,
        HTTP_SEE_OTHER = 303, HTTP_NOT_MODIFIED = 304, HTTP_TEMPORARY_REDIRECT = 307,
        HTTP_PERMANENT_REDIRECT = 308, HTTP_BAD_REQUEST = 400, HTTP_UNAUTHORIZED = 401,
        HTTP_PAYMENT_REQUIRED = 402, HTTP_FORBIDDEN = 403, HTTP_NOT_FOUND = 404,
        HTTP_NOT_ALLOWED = 405, HTTP_NOT_ACCEPTABLE = 406, HTTP_REQUEST_TIMEOUT = 408,
        HTTP_CONFLICT = 409, HTTP_GONE = 410, HTTP_REQUEST_ENTITY_TOO_LARGE = 413,
        HTTP_UPGRADE_REQUIRED = 426, HTTP_TOO_MANY_REQUESTS = 429, HTTP_CLOSE = 444,
        HTTP_ILLEGAL = 451, HTTP_INTERNAL_SERVER_ERROR = 500, HTTP_METHOD_NOT_IMPLEMENTED = 501,
        HTTP_NOT_IMPLEMENTED = 501, HTTP_BAD_GATEWAY = 502, HTTP_SERVICE_UNAVAILABLE = 503,
        HTTP_GATEWAY_TIMEOUT = 504, HTTP_VERSION_NOT_SUPPORTED = 505,
        HTTP_INSUFFICIENT_STORAGE = 507,
    }
    for k, v in pairs(statuses) do
        ngx[k] = v
    end

    ngx.null = null
    ngx.is_subrequest = false

    -- output and exit ---------------------------------------------------------------------------
    function ngx.exit(code)
        native_exit(code)
        error(EXIT, 0)
    end

    function ngx.print(...)
        local buf = {}
        local n = 0
        for i = 1, select("#", ...) do
            n = flatten(buf, n, (select(i, ...)), null)
        end
        native_say(concat(buf, "", 1, n))
        return 1
    end

    function ngx.say(...)
        local buf = {}
        local n = 0
        for i = 1, select("#", ...) do
            n = flatten(buf, n, (select(i, ...)), null)
        end
        n = n + 1
        buf[n] = "\n"
        native_say(concat(buf, "", 1, n))
        return 1
    end

    function ngx.flush()
        return 1
    end

    function ngx.eof()
        return 1
    end

    function ngx.redirect(uri, status)
        native_resp_set_header("Location", uri)
        return ngx.exit(status or 302)
    end

    -- logging -------------------------------------------------------------------------------------
    function ngx.log(level, ...)
        if not native_log_enabled(level) then
            return
        end
        local n = select("#", ...)
        local msg
        if n == 1 then
            msg = tostring((...))
        else
            local buf = {}
            for i = 1, n do
                buf[i] = tostring((select(i, ...)))
            end
            msg = concat(buf, "", 1, n)
        end
        native_log(level, msg)
    end

    -- time ----------------------------------------------------------------------------------------
    ngx.time = native.time
    ngx.now = native.now
    ngx.today = native.today
    ngx.localtime = native.localtime
    ngx.utctime = native.utctime
    ngx.http_time = native.http_time
    ngx.cookie_time = native.cookie_time
    ngx.parse_http_time = native.parse_http_time
    ngx.update_time = function() end

    -- encoding and hashing ----------------------------------------------------------------------
    ngx.encode_base64 = native.base64_encode
    ngx.decode_base64 = native.base64_decode
    ngx.md5 = native.md5
    ngx.md5_bin = native.md5_bin
    ngx.sha1_bin = native.sha1_bin
    local native_hmac = native.hmac
    function ngx.hmac_sha1(key, s)
        return native_hmac("sha1", key, s)
    end
    ngx.crc32_long = native.crc32
    ngx.crc32_short = native.crc32
    ngx.escape_uri = native.escape_uri
    ngx.unescape_uri = native.unescape_uri
    ngx.encode_args = native.encode_args
    ngx.decode_args = native.decode_args
    ngx.quote_sql_str = quote_sql_str

    -- regex ---------------------------------------------------------------------------------------
    local re_match, re_find = native.re_match, native.re_find
    local re_gmatch, re_sub, re_gsub = native.re_gmatch, native.re_sub, native.re_gsub
    local re = {}
    function re.match(subject, regex, opts, ctx)
        local m, e = re_match(subject, regex, opts, ctx and ctx.pos)
        if m then
            if ctx then
                ctx.pos = e
            end
            return m
        end
        return nil, e
    end
    function re.find(subject, regex, opts, ctx, nth)
        local from, to = re_find(subject, regex, opts, ctx and ctx.pos, nth)
        if from then
            if ctx then
                ctx.pos = to + 1
            end
            return from, to
        end
        return nil, nil, to
    end
    function re.gmatch(subject, regex, opts)
        return re_gmatch(subject, regex, opts)
    end
    function re.sub(subject, regex, replace, opts)
        local s, n = re_sub(subject, regex, replace, opts)
        if s == nil then
            return nil, nil, n
        end
        return s, n
    end
    function re.gsub(subject, regex, replace, opts)
        local s, n = re_gsub(subject, regex, replace, opts)
        if s == nil then
            return nil, nil, n
        end
        return s, n
    end
    function re.opt()
    end
    ngx.re = re

    -- variables -------------------------------------------------------------------------------------
    ngx.var = setmetatable({}, {
        __index = function(_, k)
            return native_var(k)
        end,
        __newindex = function(_, k, v)
            native_var_set(k, v)
        end,
    })

    -- request -------------------------------------------------------------------------------------
    local native_req_body_buffered = native.req_body_buffered
    local native_req_set_body = native.req_set_body
    local native_decode_args = native.decode_args
    local native_encode_args = native.encode_args
    local req = {}
    req.get_method = native.req_method
    function req.set_method(m)
        if type(m) == "number" then
            m = METHOD_NAMES[m] or error("unsupported HTTP method: " .. m, 2)
        end
        native.req_set_method(m)
    end
    function req.get_headers(_, raw)
        local t = native.req_headers()
        if not raw then
            setmetatable(t, header_mt)
        end
        return t
    end
    function req.set_header(name, value)
        if value ~= nil and type(value) ~= "table" then
            value = tostring(value)
        end
        native.req_set_header(name, value)
    end
    function req.clear_header(name)
        native.req_set_header(name, nil)
    end
    function req.get_uri_args(max)
        return native_decode_args(native.req_args() or "", max)
    end
    function req.set_uri_args(args)
        if type(args) == "table" then
            args = native_encode_args(args)
        end
        native.req_set_args(args)
    end
    function req.get_post_args(max)
        local body = native_req_body_buffered()
        if not body then
            return {}
        end
        return native_decode_args(body, max)
    end
    function req.read_body()
    end
    function req.discard_body()
    end
    req.get_body_data = native_req_body_buffered
    function req.set_body_data(data)
        native_req_set_body(data)
    end
    function req.get_body_file()
        return nil
    end
    local body_parts
    function req.init_body()
        body_parts = {}
    end
    function req.append_body(data)
        if not body_parts then
            error("request body not initialized by ngx.req.init_body()", 2)
        end
        body_parts[#body_parts + 1] = data
    end
    function req.finish_body()
        if not body_parts then
            error("request body not initialized by ngx.req.init_body()", 2)
        end
        native_req_set_body(concat(body_parts))
        body_parts = nil
    end
    req.start_time = native.req_start_time
    req.http_version = native.req_http_version
    function req.set_uri(uri, jump)
        if jump then
            error("ngx.req.set_uri with jump is not available in Moongate", 2)
        end
        native.req_set_uri(uri)
    end
    function req.is_internal()
        return false
    end
    ngx.req = strict(req, "ngx.req.")

    -- response ------------------------------------------------------------------------------------
    local resp = {}
    function resp.get_headers(_, raw)
        local t = native.resp_headers()
        if not raw then
            setmetatable(t, header_mt)
        end
        return t
    end
    function resp.add_header(name, value)
        native.resp_add_header(header_name(name), value)
    end
    ngx.resp = strict(resp, "ngx.resp.")

    ngx.header = setmetatable({}, {
        __index = function(_, k)
            return native_resp_header(header_name(k))
        end,
        __newindex = function(_, k, v)
            local id = header_ids[k] or header_id(k)
            if id then
                return native_resp_set_header_id(id, v)
            end
            if v ~= nil and type(v) ~= "table" then
                v = tostring(v)
            end
            native_resp_set_header(header_name(k), v)
        end,
    })

    -- Filled by the host before each body_filter call: arg[1] chunk, arg[2] eof.
    ngx.arg = {}

    -- timers, sleep, threads ----------------------------------------------------------------------
    ngx.sleep = native.sleep
    local timer_at = native.timer_at
    local timer = {}
    timer.at = timer_at
    function timer.every(interval, fn, ...)
        local args = { n = select("#", ...), ... }
        local function tick(premature)
            if premature then
                return
            end
            local ok, err = pcall(fn, premature, unpack(args, 1, args.n))
            if not ok then
                ngx.log(ngx.ERR, "timer.every callback failed: ", err)
            end
            timer_at(interval, tick)
        end
        return timer_at(interval, tick)
    end
    function timer.running_count()
        return 0
    end
    function timer.pending_count()
        return 0
    end
    ngx.timer = timer

    local thread = {}
    function thread.spawn(fn, ...)
        if type(fn) ~= "function" then
            error("bad argument #1 to 'spawn' (function expected)", 2)
        end
        return { results = pack(pcall(fn, ...)), waited = false }
    end
    function thread.wait(...)
        for i = 1, select("#", ...) do
            local t = select(i, ...)
            if type(t) == "table" and not t.waited and t.results then
                t.waited = true
                local r = t.results
                return unpack(r, 1, r.n)
            end
        end
        return nil, "no thread to wait for"
    end
    function thread.kill(t)
        if type(t) ~= "table" or t.waited then
            return nil, "already waited or killed"
        end
        t.waited = true
        return true
    end
    ngx.thread = thread

    -- shared dictionaries ---------------------------------------------------------------------------
    local dict_methods = {}
    local function dict_fn(name)
        local f = native["shdict_" .. name]
        return function(self, key, ...)
            if key == nil then
                return nil, "nil key"
            end
            return f(self.name, key, ...)
        end
    end
    for _, m in ipairs({ "get", "get_stale", "set", "safe_set", "add", "safe_add", "replace",
                         "delete", "incr", "ttl", "expire" }) do
        dict_methods[m] = dict_fn(m)
    end
    local flush_all, flush_expired = native.shdict_flush_all, native.shdict_flush_expired
    local get_keys, capacity = native.shdict_get_keys, native.shdict_capacity
    local free_space = native.shdict_free_space
    function dict_methods.flush_all(self)
        flush_all(self.name)
    end
    function dict_methods.flush_expired(self, max)
        return flush_expired(self.name, max)
    end
    function dict_methods.get_keys(self, max)
        return get_keys(self.name, max)
    end
    function dict_methods.capacity(self)
        return capacity(self.name)
    end
    function dict_methods.free_space(self)
        return free_space(self.name)
    end
    for _, m in ipairs({ "lpush", "rpush", "lpop", "rpop", "llen" }) do
        dict_methods[m] = unavailable("ngx.shared.DICT:" .. m)
    end
    local dict_mt = { __index = dict_methods }
    ngx.shared = setmetatable({}, {
        __index = function(t, name)
            if type(name) ~= "string" then
                return nil
            end
            local d = setmetatable({ name = name }, dict_mt)
            rawset(t, name, d)
            return d
        end,
    })

    -- worker, config, phase ---------------------------------------------------------------------------
    ngx.worker = {
        id = native.worker_id,
        count = native.worker_count,
        pid = native.worker_pid or function() return 0 end,
        exiting = native.worker_exiting or function() return false end,
    }
    ngx.config = {
        subsystem = "http",
        ngx_lua_version = 10026,
        nginx_version = 1025003,
        debug = false,
        prefix = native.prefix or function() return "" end,
        nginx_configure = function() return "" end,
    }
    ngx.get_phase = native.phase

    -- unavailable families ----------------------------------------------------------------------------
    ngx.socket = {
        tcp = unavailable("ngx.socket.tcp"),
        udp = unavailable("ngx.socket.udp"),
        stream = unavailable("ngx.socket.stream"),
        connect = unavailable("ngx.socket.connect"),
    }
    ngx.location = {
        capture = unavailable("ngx.location.capture"),
        capture_multi = unavailable("ngx.location.capture_multi"),
    }

    -- per-request fields and strictness ---------------------------------------------------------------
    local native_resp_status = native.resp_status
    local native_resp_set_status = native.resp_set_status
    local native_ngx_ctx = native.ngx_ctx
    local native_headers_sent = native.resp_headers_sent
    setmetatable(ngx, {
        __index = function(_, k)
            if k == "status" then
                return native_resp_status() or 0
            elseif k == "ctx" then
                return native_ngx_ctx()
            elseif k == "headers_sent" then
                return native_headers_sent()
            end
            error("ngx." .. tostring(k) .. " is not available in Moongate", 2)
        end,
        __newindex = function(t, k, v)
            if k == "status" then
                native_resp_set_status(v)
            elseif k == "ctx" then
                error("assigning ngx.ctx is not available in Moongate", 2)
            else
                rawset(t, k, v)
            end
        end,
    })

    _G.ngx = ngx
    return ngx
end

return _M
