-- aws-lambda, Lambda Invoke mode (aws.md §4-§6): when function_uri is
-- `https://lambda.REGION.amazonaws.com/2015-03-31/functions/NAME/invocations` or an ARN
-- `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`, the plugin builds an API Gateway proxy
-- event (payload 2.0 or 1.0) from the client request, invokes the function with a SigV4-signed
-- POST (service lambda) and unwraps the function's proxy response.
local core = require("apisix.core")
local http = require("resty.http")
local native = require("moongate.native")
local credentials = require("apisix.plugins.aws-lambda.credentials")

local aws_sign = native.aws_sign
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local getmetatable = getmetatable
local unpack = unpack
local concat = table.concat
local sort = table.sort
local str_lower = string.lower
local str_match = string.match
local str_gsub = string.gsub
local str_format = string.format
local str_byte = string.byte
local str_sub = string.sub
local str_find = string.find
local floor = math.floor
local os_date = os.date

local _M = {}

local INTERNAL_ERROR = '{"message":"Internal server error"}'
local JSON_TYPE = "application/json"

-- Headers never put into the event nor copied from a function's proxy response.
local HOP_BY_HOP = require("apisix.plugins.serverless.hop-by-hop")

local function pct(c)
    return str_format("%%%02X", str_byte(c))
end

-- RFC 3986 unreserved characters stay, every other byte is %XX (":" -> %3A, "$" -> %24).
local function uri_encode(s)
    return (str_gsub(s, "[^%w%-%._~]", pct))
end

-- The Invoke target of a function_uri, or nil when it is not one (then: plain HTTP mode).
-- {region = string|nil, function_name = decoded FunctionName}
local targets = setmetatable({}, { __mode = "k" })
local NOT_INVOKE = {}

function _M.target(conf)
    local t = targets[conf]
    if t then
        return t ~= NOT_INVOKE and t or nil
    end
    local uri = conf.function_uri
    local region, name
    if type(uri) == "string" then
        if str_find(uri, "^arn:") then
            local r, fname = str_match(uri, "^arn:aws[%w%-]*:lambda:([%w%-]+):%d+:function:(.+)$")
            if r and str_match(fname, "^[%w%-_%.]+:?[%w%-_%$%.]*$") then
                region, name = r, uri
            end
        else
            local r, encoded = str_match(uri,
                "^https?://lambda%.([%w%-]+)%.amazonaws%.com[:%d]*/2015%-03%-31/functions/([^/%?#]+)/invocations/?$")
            if r then
                region, name = r, ngx.unescape_uri(encoded)
            end
        end
    end
    if not name then
        targets[conf] = NOT_INVOKE
        return nil
    end
    t = { region = region, function_name = name }
    targets[conf] = t
    return t
end

-- True when `s` is valid UTF-8 (ASCII runs are skipped by string.find, in C).
local function valid_utf8(s)
    local pos, len = 1, #s
    while true do
        local i = str_find(s, "[\128-\255]", pos)
        if not i then
            return true
        end
        local c = str_byte(s, i)
        local n, min
        if c >= 0xC2 and c <= 0xDF then
            n, min = 1, 0x80
        elseif c >= 0xE0 and c <= 0xEF then
            n, min = 2, 0x800
        elseif c >= 0xF0 and c <= 0xF4 then
            n, min = 3, 0x10000
        else
            return false
        end
        if i + n > len then
            return false
        end
        local cp = c % (2 ^ (6 - n))
        for k = 1, n do
            local b = str_byte(s, i + k)
            if b < 0x80 or b > 0xBF then
                return false
            end
            cp = cp * 64 + (b - 0x80)
        end
        if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
            return false
        end
        pos = i + n + 1
    end
end
_M.valid_utf8 = valid_utf8

local function as_list(v)
    if type(v) == "table" then
        return v
    end
    return { v }
end

local function array(t)
    return setmetatable(t, core.json.array_mt)
end

-- Ordered (name, values) pairs of the raw query string.
local function parse_query(raw)
    local names, values = {}, {}
    for part in raw:gmatch("[^&]+") do
        local k, v = str_match(part, "^([^=]*)=(.*)$")
        if not k then
            k, v = part, ""
        end
        k, v = ngx.unescape_uri(k), ngx.unescape_uri(v)
        if not values[k] then
            values[k] = {}
            names[#names + 1] = k
        end
        local list = values[k]
        list[#list + 1] = v
    end
    return names, values
end

local function build_event(conf, ctx, body)
    local var = ctx.var
    local method = core.request.get_method()
    local request_uri = var.request_uri or var.uri or "/"
    local raw_path = str_match(request_uri, "^[^?]*") or "/"
    local raw_query = var.args or ""
    local now = ngx.now()
    local epoch_ms = floor(now * 1000)
    local clf_time = os_date("!%d/%b/%Y:%H:%M:%S +0000", floor(now))
    local request_id = core.utils.uuid()
    local host = core.request.get_host(ctx) or ""
    local domain_prefix = str_match(host, "^([^%.]+)") or host
    local source_ip = core.request.get_remote_client_ip(ctx)
    local protocol = var.server_protocol or "HTTP/1.1"

    local incoming = core.request.headers(ctx)
    local header_names = {}
    local header_values = {}
    for name, value in pairs(incoming) do
        local lname = str_lower(name)
        if not HOP_BY_HOP[lname] then
            header_names[#header_names + 1] = lname
            header_values[lname] = as_list(value)
        end
    end
    sort(header_names)
    local user_agent = header_values["user-agent"] and header_values["user-agent"][1] or ""

    local is_b64 = false
    if body and body ~= "" and not valid_utf8(body) then
        body = ngx.encode_base64(body)
        is_b64 = true
    end
    if body == "" then
        body = nil
    end

    local qnames, qvalues = parse_query(raw_query)

    if conf.payload_version == "1.0" then
        local headers, multi = {}, {}
        for _, name in ipairs(header_names) do
            local list = header_values[name]
            headers[name] = list[#list]
            multi[name] = array({ unpack(list) })
        end
        local qs, mqs = core.json.null, core.json.null
        if #qnames > 0 then
            qs, mqs = {}, {}
            for _, k in ipairs(qnames) do
                local list = qvalues[k]
                qs[k] = list[#list]
                mqs[k] = array(list)
            end
        end
        local path = var.uri or raw_path
        return {
            version = "1.0",
            resource = "/{proxy+}",
            path = path,
            httpMethod = method,
            headers = headers,
            multiValueHeaders = multi,
            queryStringParameters = qs,
            multiValueQueryStringParameters = mqs,
            pathParameters = { proxy = str_sub(path, 2) },
            stageVariables = core.json.null,
            body = body or core.json.null,
            isBase64Encoded = is_b64,
            requestContext = {
                accountId = "anonymous",
                apiId = "moongate",
                resourceId = "moongate",
                resourcePath = "/{proxy+}",
                stage = "$default",
                domainName = host,
                domainPrefix = domain_prefix,
                requestId = request_id,
                extendedRequestId = request_id,
                protocol = protocol,
                httpMethod = method,
                path = path,
                requestTime = clf_time,
                requestTimeEpoch = epoch_ms,
                identity = {
                    sourceIp = source_ip,
                    userAgent = user_agent,
                },
            },
        }
    end

    -- Payload 2.0: lowercased names, duplicates comma-joined, Cookie moved to `cookies`.
    local headers = {}
    local cookies
    for _, name in ipairs(header_names) do
        local list = header_values[name]
        if name == "cookie" then
            cookies = cookies or array({})
            for _, v in ipairs(list) do
                for c in tostring(v):gmatch("[^;]+") do
                    c = str_gsub(c, "^%s+", ""):gsub("%s+$", "")
                    if c ~= "" then
                        cookies[#cookies + 1] = c
                    end
                end
            end
        else
            headers[name] = concat(list, ",")
        end
    end
    local qs
    if #qnames > 0 then
        qs = {}
        for _, k in ipairs(qnames) do
            qs[k] = concat(qvalues[k], ",")
        end
    end
    return {
        version = "2.0",
        routeKey = "$default",
        rawPath = raw_path,
        rawQueryString = raw_query,
        cookies = cookies,
        headers = headers,
        queryStringParameters = qs,
        body = body,
        isBase64Encoded = is_b64,
        requestContext = {
            accountId = "anonymous",
            apiId = "moongate",
            domainName = host,
            domainPrefix = domain_prefix,
            requestId = request_id,
            routeKey = "$default",
            stage = "$default",
            time = clf_time,
            timeEpoch = epoch_ms,
            http = {
                method = method,
                path = raw_path,
                protocol = protocol,
                sourceIp = source_ip,
                userAgent = user_agent,
            },
        },
    }
end
_M.build_event = build_event

local function header_value(v)
    local t = type(v)
    if t == "string" then
        return v
    end
    if t == "number" or t == "boolean" then
        return tostring(v)
    end
    return nil
end

-- Unwraps a function's output; returns status, headers (name -> string or list), body; or nil, err.
local function unwrap(output, version)
    local decoded, derr = core.json.decode(output)
    if decoded == nil and derr then
        return nil, "function output is not JSON: " .. tostring(derr)
    end
    local is_object = type(decoded) == "table" and getmetatable(decoded) ~= core.json.array_mt
    if not is_object or decoded.statusCode == nil then
        if version == "2.0" then
            -- Inference: valid JSON without statusCode.
            return 200, { ["content-type"] = JSON_TYPE }, output
        end
        return nil, "function output has no statusCode"
    end
    local status = decoded.statusCode
    if type(status) == "string" then
        status = tonumber(status)
    end
    if type(status) ~= "number" or status ~= floor(status) or status < 100 or status > 599 then
        return nil, "invalid statusCode"
    end
    local out = {}
    local hdrs = decoded.headers
    if hdrs ~= nil and hdrs ~= core.json.null then
        if type(hdrs) ~= "table" then
            return nil, "headers is not an object"
        end
        for name, v in pairs(hdrs) do
            local value = header_value(v)
            if type(name) ~= "string" or not value then
                return nil, "invalid header " .. tostring(name)
            end
            out[str_lower(name)] = value
        end
    end
    local multi = decoded.multiValueHeaders
    if version == "1.0" and multi ~= nil and multi ~= core.json.null then
        if type(multi) ~= "table" then
            return nil, "multiValueHeaders is not an object"
        end
        for name, list in pairs(multi) do
            if type(name) ~= "string" then
                return nil, "invalid multiValueHeaders"
            end
            if list ~= core.json.null then
                local values = {}
                for _, v in ipairs(as_list(list)) do
                    local value = header_value(v)
                    if not value then
                        return nil, "invalid multiValueHeaders value for " .. name
                    end
                    values[#values + 1] = value
                end
                if #values > 0 then
                    out[str_lower(name)] = values
                end
            end
        end
    end
    local cookies = decoded.cookies
    if version == "2.0" and type(cookies) == "table" then
        local values = {}
        local existing = out["set-cookie"]
        if existing then
            for _, v in ipairs(as_list(existing)) do
                values[#values + 1] = v
            end
        end
        for _, v in ipairs(cookies) do
            if type(v) ~= "string" then
                return nil, "invalid cookies"
            end
            values[#values + 1] = v
        end
        if #values > 0 then
            out["set-cookie"] = values
        end
    end
    local body = decoded.body
    if body == nil or body == core.json.null then
        body = ""
    elseif type(body) ~= "string" then
        if version == "2.0" and type(body) == "table" then
            body = core.json.encode(body)
        else
            return nil, "body is not a string"
        end
    end
    local b64 = decoded.isBase64Encoded
    if b64 == true or b64 == "true" then
        local raw = ngx.decode_base64(body)
        if not raw then
            return nil, "body is not valid base64"
        end
        body = raw
    end
    return status, out, body
end
_M.unwrap = unwrap

local function endpoint(conf, region)
    local base = conf.aws_endpoint
    if not base or base == "" then
        base = "https://lambda." .. region .. ".amazonaws.com"
    end
    local p, err = http:parse_uri(base, false)
    if not p then
        return nil, err
    end
    local scheme, host, port = p[1], p[2], p[3]
    local host_header = host
    if (scheme == "https" and port ~= 443) or (scheme ~= "https" and port ~= 80) then
        host_header = host .. ":" .. port
    end
    return { scheme = scheme, host = host, host_header = host_header }
end

-- AWS's message (`message` or `Message`), cut before any canonical request AWS echoes back (it
-- holds the session token), to one line of at most 300 bytes.
local function message_of(body)
    local decoded = core.json.decode(body or "")
    if type(decoded) ~= "table" then
        return nil
    end
    for k, v in pairs(decoded) do
        if type(k) == "string" and str_lower(k) == "message" and type(v) == "string" then
            return credentials.safe_message(v)
        end
    end
    return nil
end

function _M.access(plugin_name, conf, ctx, target)
    local iam = conf.authorization and conf.authorization.iam or {}
    local region = target.region or iam.aws_region or "us-east-1"
    local ep, eerr = endpoint(conf, region)
    if not ep then
        core.log.error("failed to process ", plugin_name, ", err: invalid aws_endpoint: ", eerr)
        return 500
    end

    local invocation_type = conf.invocation_type or "RequestResponse"
    local limit = conf.max_req_body_size
    local body, err = core.request.get_body(limit, ctx)
    if err then
        if str_find(err, "greater than the maximum size", 1, true) then
            core.log.warn(plugin_name, ": ", err)
            return 413
        end
        core.log.error("failed to process ", plugin_name, ", err: failed to read the request body: ", err)
        return 400
    end

    local version = conf.payload_version or "2.0"
    local event = core.json.encode(build_event(conf, ctx, body))
    local event_limit = invocation_type == "Event" and 1048576 or 6291456
    if #event > event_limit then
        core.log.warn(plugin_name, ": event of ", #event, " bytes is over the Invoke limit of ",
            event_limit)
        return 413
    end

    local creds, cerr = credentials.get(conf)
    if not creds then
        core.log.error("failed to process ", plugin_name, ", err: ", cerr)
        return cerr and str_find(cerr, "^STS") and 502 or 500
    end

    local path = "/2015-03-31/functions/" .. uri_encode(target.function_name) .. "/invocations"
    local query = ""
    if conf.qualifier and conf.qualifier ~= "" then
        query = "Qualifier=" .. uri_encode(conf.qualifier)
    end
    local log_type = conf.log_type or "None"
    local signed = aws_sign({
        method = "POST",
        path = path,
        query = query,
        headers = {
            { "host", ep.host_header },
            { "x-amz-invocation-type", invocation_type },
            { "x-amz-log-type", log_type },
        },
        body = event,
        access_key = creds.access_key,
        secret_key = creds.secret_key,
        session_token = creds.session_token,
        region = region,
        service = "lambda",
    })
    local headers = {
        host = ep.host_header,
        ["x-amz-invocation-type"] = invocation_type,
        ["x-amz-log-type"] = log_type,
    }
    for name, value in pairs(signed.headers) do
        headers[name] = value
    end

    local params = {
        method = "POST",
        path = path,
        query = signed.query,
        headers = headers,
        body = event,
        keepalive = conf.keepalive,
        ssl_verify = conf.ssl_verify,
    }
    if conf.keepalive then
        params.keepalive_timeout = conf.keepalive_timeout
        params.keepalive_pool = conf.keepalive_pool
    end
    local httpc = http.new()
    httpc:set_timeout(conf.timeout)
    local uri = ep.scheme .. "://" .. ep.host_header .. path
    local res, rerr = httpc:request_uri(uri, params)
    if not res then
        core.log.error("failed to process ", plugin_name, ", err: ", rerr, " host: ", ep.host)
        if rerr == "timeout" then
            return 504
        end
        return 502
    end

    local rheaders = res.headers
    local output = res.body or ""
    local error_type = rheaders["x-amzn-errortype"]
    if res.status >= 400 or error_type then
        core.log.error(plugin_name, ": Lambda Invoke of ", target.function_name, " failed: ",
            res.status, " ", tostring(error_type), ": ", tostring(message_of(output)))
        if res.status == 429 then
            if rheaders["retry-after"] then
                core.response.set_header("Retry-After", rheaders["retry-after"])
            end
            core.response.set_header("Content-Type", JSON_TYPE)
            return 429, '{"message":"Too Many Requests"}'
        end
        core.response.set_header("Content-Type", JSON_TYPE)
        return 502, INTERNAL_ERROR
    end

    local function_error = rheaders["x-amz-function-error"]
    if function_error then
        local shown = output
        if #shown > 512 then
            shown = str_sub(shown, 1, 512) .. "..."
        end
        core.log.warn(plugin_name, ": function ", target.function_name, " error (",
            function_error, "): ", shown)
        core.response.set_header("Content-Type", JSON_TYPE)
        return conf.unhandled_status or 502, output
    end

    if invocation_type == "Event" then
        return 202, ""
    end
    if invocation_type == "DryRun" then
        return 204, ""
    end

    local status, out_headers, out_body = unwrap(output, version)
    if not status then
        core.log.error(plugin_name, ": malformed output of function ", target.function_name, ": ",
            out_headers)
        core.response.set_header("Content-Type", JSON_TYPE)
        return 502, INTERNAL_ERROR
    end
    for name, value in pairs(out_headers) do
        if not HOP_BY_HOP[name] and name ~= "content-length" then
            core.response.set_header(name, value)
        end
    end
    return status, out_body
end

return _M
