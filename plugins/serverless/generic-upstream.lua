-- The shared factory behind aws-lambda and azure-functions (APISIX's
-- apisix/plugins/serverless/generic-upstream.lua): the plugin answers the request itself by making
-- one HTTP call to a function endpoint and handing its status, headers and body back.
--
--   return require("apisix.plugins.serverless.generic-upstream")(plugin_name, version, priority,
--       request_processor, authz_schema, metadata_schema, body_needed)
--
-- `request_processor(conf, ctx, params)` adds the plugin's authentication to `params` (headers,
-- query) before the call. params: method, path (as sent), query (raw string, without "?"), headers
-- (a fresh table, lower-case names), body (string, or nil when it streams), host (the Host header
-- sent), keepalive... It returns nothing, or `status, err` to end the request with that status
-- (logged as an error).
--
-- Bodies stream both ways (Moongate): the client's body goes to the function as it arrives, and a
-- successful (< 400) function response goes to the client as it arrives, so neither is held in
-- memory. `body_needed(conf)` (optional, Moongate) returns true when the processor must see the
-- whole request body (SigV4 signs its hash): the body is then read first, as APISIX always does. A
-- function error (>= 400) is read whole, to be logged.
--
-- Differences from APISIX, on purpose (apisix.md §5):
-- * the request's shared header table (core.request.headers) is never modified; a copy is sent;
-- * hop-by-hop headers are dropped both ways, Content-Length is recomputed, Host keeps a non-default
--   port, and the query goes out exactly as the client sent it (a processor may replace it);
-- * an empty function_uri path is "/", and the wildcard tail is percent-encoded for the request line;
-- * a body over max_req_body_size is 413 (not 400); a timeout is 504 and any other transport failure
--   502 (not 503); a function 4xx/5xx is logged at warn;
-- * a query in function_uri is kept (sent before the client's arguments).
local core = require("apisix.core")
local http = require("resty.http")

local type = type
local pairs = pairs
local tostring = tostring
local setmetatable = setmetatable
local str_lower = string.lower
local str_sub = string.sub
local str_gsub = string.gsub
local str_find = string.find
local str_format = string.format
local str_byte = string.byte

-- RFC 7230 §6.1 connection-specific headers, never forwarded.
local HOP_BY_HOP = require("apisix.plugins.serverless.hop-by-hop")

-- Request headers not forwarded: hop-by-hop, the ones recomputed for the new request, and Expect
-- (the body has already been read in full, so a 100-continue handshake has no meaning upstream).
local SKIP_REQUEST = setmetatable({
    ["host"] = true,
    ["content-length"] = true,
    ["expect"] = true,
}, { __index = HOP_BY_HOP })

-- Response headers not handed back: hop-by-hop, and Lambda's log tail (function logs, base64).
local SKIP_RESPONSE = setmetatable({
    ["x-amz-log-result"] = true,
}, { __index = HOP_BY_HOP })

-- The error native http_request gives for a client body over client_body_limit.
local TOO_LARGE = "request body too large"

-- At most this much of a function's error body goes into the warn log.
local MAX_LOGGED_BODY = 512

local function pct(c)
    return str_format("%%%02X", str_byte(c))
end

-- Percent-encodes a decoded path for the request line: RFC 3986 pchar and "/" stay as they are.
local function encode_path(path)
    return (str_gsub(path, "[^%w%-%._~!%$&'%(%)%*%+,;=:@/]", pct))
end

-- AWS's signature-mismatch answer echoes the canonical request it expected, which holds the
-- x-amz-security-token: that part is cut before the body is logged or handed to the client (APISIX
-- passes it on). A JSON {"message": ...} stays valid JSON.
local function without_echoed_request(body)
    local at = str_find(body, "The Canonical String", 1, true)
    if not at then
        return body
    end
    local decoded = core.json.decode(body)
    if type(decoded) == "table" and type(decoded.message) == "string" then
        local cut = str_find(decoded.message, "The Canonical String", 1, true)
        if cut then
            decoded.message = str_sub(decoded.message, 1, cut - 1) .. "..."
            local encoded = core.json.encode(decoded)
            if encoded then
                return encoded
            end
        end
    end
    return str_sub(body, 1, at - 1) .. "..."
end

-- The names listed in a Connection header are hop-by-hop for this message too.
local function connection_tokens(value, out)
    if type(value) == "table" then
        for i = 1, #value do
            connection_tokens(value[i], out)
        end
        return out
    end
    if type(value) == "string" then
        for token in value:gmatch("[^,%s]+") do
            out[str_lower(token)] = true
        end
    end
    return out
end

-- function_uri, parsed once per conf table.
local parsed_uris = setmetatable({}, { __mode = "k" })

local function parse_function_uri(conf)
    local parsed = parsed_uris[conf]
    if parsed then
        return parsed
    end
    local p, err = http:parse_uri(conf.function_uri, false)
    if not p then
        return nil, err
    end
    local scheme, host, port, path, query = p[1], p[2], p[3], p[4], p[5]
    local host_header = host
    if (scheme == "https" and port ~= 443) or (scheme ~= "https" and port ~= 80) then
        host_header = host .. ":" .. port
    end
    if path == nil or path == "" then
        path = "/"
    end
    parsed = {
        host = host,
        host_header = host_header,
        path = path,
        query = query or "",
    }
    parsed_uris[conf] = parsed
    return parsed
end

-- The path sent: function_uri's path plus the route's wildcard tail, as APISIX joins them.
local function request_path(base, ctx)
    local matched = ctx.curr_req_matched
    local ext = matched and matched[":ext"]
    if type(ext) ~= "string" then
        return base
    end
    ext = encode_path(ext)
    if str_sub(base, -1) == "/" or str_sub(ext, 1, 1) == "/" then
        return base .. ext
    end
    return base .. "/" .. ext
end

local function forwarded_headers(ctx)
    local incoming = core.request.headers(ctx)
    local dropped = connection_tokens(incoming["connection"], {})
    local headers = {}
    for name, value in pairs(incoming) do
        local lname = str_lower(name)
        if not SKIP_REQUEST[lname] and not dropped[lname] then
            headers[lname] = value
        end
    end
    return headers
end

local function join_query(a, b)
    if a == "" then
        return b
    end
    if b == "" then
        return a
    end
    return a .. "&" .. b
end

return function(plugin_name, version, priority, request_processor, authz_schema, metadata_schema,
                body_needed)
    if request_processor and type(request_processor) ~= "function" then
        return "Failed to generate plugin due to invalid header processor type, "
            .. "expecting a function."
    end

    local schema = {
        type = "object",
        properties = {
            function_uri = { type = "string" },
            authorization = authz_schema,
            timeout = { type = "integer", minimum = 100, default = 3000 },
            ssl_verify = { type = "boolean", default = true },
            keepalive = { type = "boolean", default = true },
            keepalive_timeout = { type = "integer", minimum = 1000, default = 60000 },
            keepalive_pool = { type = "integer", minimum = 1, default = 5 },
            max_req_body_size = { type = "integer", minimum = 1, default = 67108864 },
        },
        required = { "function_uri" },
    }

    local _M = {
        version = version,
        priority = priority,
        name = plugin_name,
        schema = schema,
        metadata_schema = metadata_schema,
    }

    function _M.check_schema(conf, schema_type)
        if schema_type == core.schema.TYPE_METADATA then
            return core.schema.check(metadata_schema, conf)
        end
        return core.schema.check(schema, conf)
    end

    function _M.access(conf, ctx)
        local target, perr = parse_function_uri(conf)
        if not target then
            core.log.error("failed to process ", plugin_name, ", err: invalid function_uri: ", perr)
            return 500
        end

        local body, err
        local streamed_body = not (body_needed and body_needed(conf))
        if not streamed_body then
            body, err = core.request.get_body(conf.max_req_body_size, ctx)
            if err then
                if str_find(err, "greater than the maximum size", 1, true) then
                    core.log.warn(plugin_name, ": ", err)
                    return 413
                end
                core.log.error("failed to process ", plugin_name,
                    ", err: failed to read the request body: ", err)
                return 400
            end
        end

        local headers = forwarded_headers(ctx)
        headers["host"] = target.host_header

        local params = {
            method = core.request.get_method(),
            path = request_path(target.path, ctx),
            query = join_query(target.query, ctx.var.args or ""),
            headers = headers,
            body = body,
            host = target.host_header,
            keepalive = conf.keepalive,
            ssl_verify = conf.ssl_verify,
            client_body = streamed_body or nil,
            client_body_limit = streamed_body and conf.max_req_body_size or nil,
            stream_response = true,
        }
        if conf.keepalive then
            params.keepalive_timeout = conf.keepalive_timeout
            params.keepalive_pool = conf.keepalive_pool
        end

        if request_processor then
            local code, proc_err = request_processor(conf, ctx, params)
            if code then
                core.log.error("failed to process ", plugin_name, ", err: ", proc_err, " host: ", target.host)
                return code
            end
        end
        -- The processor sees `host`; the HTTP client only needs the header.
        params.host = nil

        local httpc = http.new()
        httpc:set_timeout(conf.timeout)
        local res, rerr = httpc:request_uri(conf.function_uri, params)
        if not res then
            if rerr == TOO_LARGE then
                core.log.warn(plugin_name, ": the request body is larger than ", conf.max_req_body_size,
                    " bytes")
                return 413
            end
            core.log.error("failed to process ", plugin_name, ", err: ", rerr, " host: ", target.host)
            if rerr == "timeout" then
                return 504
            end
            return 502
        end

        local dropped = connection_tokens(res.headers["connection"], {})
        if res.streamed then
            -- The body streams to the client unchanged, so the function's framing headers stand.
            for name, value in pairs(res.headers) do
                local lname = str_lower(name)
                if not SKIP_RESPONSE[lname] and not dropped[lname] then
                    core.response.set_header(name, value)
                end
            end
            return res.status
        end

        local res_body = res.body or ""
        if res.status >= 400 then
            res_body = without_echoed_request(res_body)
            local shown = res_body
            if #shown > MAX_LOGGED_BODY then
                shown = str_sub(shown, 1, MAX_LOGGED_BODY) .. "..."
            end
            core.log.warn(plugin_name, ": function at ", target.host, " answered ", res.status,
                ", body: ", shown)
        end

        local is_head = params.method == "HEAD"
        for name, value in pairs(res.headers) do
            local lname = str_lower(name)
            if not SKIP_RESPONSE[lname] and not dropped[lname] then
                -- The body is handed back whole, so its length is known; a HEAD answer keeps the
                -- function's length, which describes the body it did not send.
                if lname ~= "content-length" or is_head or tostring(#res_body) == value then
                    core.response.set_header(name, value)
                end
            end
        end

        return res.status, res_body
    end

    return _M
end
