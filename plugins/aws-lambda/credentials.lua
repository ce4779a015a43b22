-- AWS credentials for aws-lambda (aws.md §9), used when `authorization.iam` has no `accesskey`:
--   1. `iam.credentials_file` / `iam.profile` set in the conf: that shared credentials file first;
--   2. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN;
--   3. the shared credentials file: AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, section
--      `iam.profile`, else AWS_PROFILE, else "default".
-- Static keys (`iam.accesskey`) always win. Then, when `iam.assume_role_arn` is set, those base
-- credentials call STS AssumeRole (signed, service sts) and the temporary credentials are used,
-- cached per conf until 5 minutes before their Expiration.
-- Secrets, tokens and signatures are never logged.
local core = require("apisix.core")
local http = require("resty.http")
local native = require("moongate.native")

local aws_sign = native.aws_sign
local type = type
local pairs = pairs
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local os_getenv = os.getenv
local str_match = string.match
local str_find = string.find
local str_gsub = string.gsub
local str_format = string.format
local str_byte = string.byte
local floor = math.floor

local _M = {}

-- Seconds before Expiration at which assumed credentials are refreshed.
local REFRESH_MARGIN = 300
-- How long credentials read from the environment or a file are reused.
local CHAIN_TTL = 60
local NO_IAM = {}

local function nonempty(v)
    if type(v) == "string" and v ~= "" then
        return v
    end
    return nil
end

local function trim(s)
    return (str_gsub(s, "^%s+", ""):gsub("%s+$", ""))
end

-- Parses an INI-style credentials file; returns the keys of `profile` or nil.
local function read_profile(path, profile)
    local content = core.io.get_file(path)
    if not content then
        return nil
    end
    local section
    local found = nil
    for line in (content .. "\n"):gmatch("([^\n]*)\n") do
        line = trim(line)
        local name = str_match(line, "^%[%s*(.-)%s*%]$")
        if name then
            -- ~/.aws/config spells non-default sections "profile NAME".
            section = str_match(name, "^profile%s+(.+)$") or name
        elseif section == profile and line ~= "" and not str_match(line, "^[#;]") then
            local key, value = str_match(line, "^([%w_]+)%s*=%s*(.-)$")
            if key then
                found = found or {}
                found[key] = value
            end
        end
    end
    if not found then
        return nil
    end
    local access, secret = nonempty(found.aws_access_key_id), nonempty(found.aws_secret_access_key)
    if not access or not secret then
        return nil
    end
    return {
        access_key = access,
        secret_key = secret,
        session_token = nonempty(found.aws_session_token),
    }
end

local function from_env()
    local access = nonempty(os_getenv("AWS_ACCESS_KEY_ID"))
    local secret = nonempty(os_getenv("AWS_SECRET_ACCESS_KEY"))
    if access and secret then
        return {
            access_key = access,
            secret_key = secret,
            session_token = nonempty(os_getenv("AWS_SESSION_TOKEN")),
        }
    end
    return nil
end

local function from_file(iam)
    local path = nonempty(iam.credentials_file) or nonempty(os_getenv("AWS_SHARED_CREDENTIALS_FILE"))
    if not path then
        local home = nonempty(os_getenv("HOME"))
        if not home then
            return nil
        end
        path = home .. "/.aws/credentials"
    end
    local profile = nonempty(iam.profile) or nonempty(os_getenv("AWS_PROFILE")) or "default"
    return read_profile(path, profile)
end

-- Per-VM caches keyed by the iam conf table.
local chain_cache = setmetatable({}, { __mode = "k" })
local role_cache = setmetatable({}, { __mode = "k" })

local function base_credentials(iam)
    if nonempty(iam.accesskey) then
        return {
            access_key = iam.accesskey,
            secret_key = iam.secretkey or iam.secret_key,
            session_token = nonempty(iam.session_token),
        }
    end
    local now = ngx.now()
    local cached = chain_cache[iam]
    if cached and cached.until_ > now then
        return cached.creds
    end
    local creds
    if nonempty(iam.credentials_file) or nonempty(iam.profile) then
        creds = from_file(iam) or from_env()
    else
        creds = from_env() or from_file(iam)
    end
    if not creds then
        return nil, "no AWS credentials: set authorization.iam.accesskey/secretkey, "
            .. "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a shared credentials file profile"
    end
    chain_cache[iam] = { creds = creds, until_ = now + CHAIN_TTL }
    return creds
end

local function form_encode(s)
    return (str_gsub(s, "[^%w%-%._~]", function(c)
        return str_format("%%%02X", str_byte(c))
    end))
end

-- Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

-- ISO 8601 UTC ("2026-11-25T15:44:06Z", fraction and offset "+00:00" tolerated) to epoch seconds.
function _M.parse_iso8601(s)
    if type(s) ~= "string" then
        return nil
    end
    local y, mo, d, h, mi, sec = str_match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)")
    if not y then
        return nil
    end
    return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
        + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

local function xml_field(xml, name)
    return str_match(xml, "<" .. name .. ">%s*(.-)%s*</" .. name .. ">")
end

local function xml_unescape(s)
    if not s then
        return nil
    end
    s = str_gsub(s, "&lt;", "<")
    s = str_gsub(s, "&gt;", ">")
    s = str_gsub(s, "&quot;", "\"")
    s = str_gsub(s, "&apos;", "'")
    s = str_gsub(s, "&amp;", "&")
    return s
end

-- An AWS error message fit for the log: cut before an echoed canonical request or string to sign
-- (they may hold the session token), one line, at most 300 bytes.
function _M.safe_message(msg)
    if type(msg) ~= "string" then
        return nil
    end
    local cut = str_find(msg, "The Canonical String", 1, true) or str_find(msg, "\n", 1, true)
    if cut then
        msg = msg:sub(1, cut - 1)
    end
    if #msg > 300 then
        msg = msg:sub(1, 300) .. "..."
    end
    return msg
end

local function assume_role(iam, base, timeout, ssl_verify)
    local endpoint = nonempty(iam.sts_endpoint) or "https://sts.amazonaws.com"
    local parsed, perr = http:parse_uri(endpoint, false)
    if not parsed then
        return nil, "invalid sts_endpoint: " .. tostring(perr)
    end
    local scheme, host, port, path = parsed[1], parsed[2], parsed[3], parsed[4]
    local host_header = host
    if (scheme == "https" and port ~= 443) or (scheme ~= "https" and port ~= 80) then
        host_header = host .. ":" .. port
    end
    if not path or path == "" then
        path = "/"
    end
    local body = "Action=AssumeRole&Version=2011-06-15&RoleArn=" .. form_encode(iam.assume_role_arn)
        .. "&RoleSessionName=" .. form_encode(nonempty(iam.role_session_name) or "moongate")
    if iam.external_id then
        body = body .. "&ExternalId=" .. form_encode(iam.external_id)
    end
    if iam.duration_seconds then
        body = body .. "&DurationSeconds=" .. tostring(iam.duration_seconds)
    end
    local content_type = "application/x-www-form-urlencoded; charset=utf-8"
    local signed = aws_sign({
        method = "POST",
        path = path,
        query = "",
        headers = { { "host", host_header }, { "content-type", content_type } },
        body = body,
        access_key = base.access_key,
        secret_key = base.secret_key,
        session_token = base.session_token,
        region = nonempty(iam.sts_region) or "us-east-1",
        service = "sts",
    })
    local headers = { host = host_header, ["content-type"] = content_type }
    for name, value in pairs(signed.headers) do
        headers[name] = value
    end
    local httpc = http.new()
    httpc:set_timeout(timeout)
    local uri = scheme .. "://" .. host_header .. path
    local res, err = httpc:request_uri(uri, {
        method = "POST",
        body = body,
        headers = headers,
        ssl_verify = ssl_verify,
    })
    if not res then
        return nil, "STS AssumeRole request failed: " .. tostring(err)
    end
    local xml = res.body or ""
    if res.status ~= 200 then
        local message = _M.safe_message(xml_unescape(xml_field(xml, "Message")))
        return nil, "STS AssumeRole answered " .. res.status .. ": "
            .. tostring(xml_field(xml, "Code")) .. ": " .. tostring(message)
    end
    local creds_xml = xml_field(xml, "Credentials")
    if not creds_xml then
        return nil, "STS AssumeRole answer has no Credentials"
    end
    local creds = {
        access_key = xml_unescape(xml_field(creds_xml, "AccessKeyId")),
        secret_key = xml_unescape(xml_field(creds_xml, "SecretAccessKey")),
        session_token = xml_unescape(xml_field(creds_xml, "SessionToken")),
    }
    if not nonempty(creds.access_key) or not nonempty(creds.secret_key) then
        return nil, "STS AssumeRole answer lacks AccessKeyId or SecretAccessKey"
    end
    local expiration = _M.parse_iso8601(xml_field(creds_xml, "Expiration"))
    return creds, nil, expiration or (ngx.now() + 900)
end

-- get(conf) -> {access_key, secret_key, session_token} | nil, err
function _M.get(conf)
    -- Invoke mode without `iam`: the environment and the default profile.
    local iam = conf.authorization and conf.authorization.iam or NO_IAM
    local base, err = base_credentials(iam)
    if not base then
        return nil, err
    end
    if not nonempty(iam.assume_role_arn) then
        return base
    end
    local now = ngx.now()
    local cached = role_cache[iam]
    if cached and cached.refresh_at > now then
        return cached.creds
    end
    local creds, rerr, expiration = assume_role(iam, base, conf.timeout or 3000, conf.ssl_verify ~= false)
    if not creds then
        return nil, rerr
    end
    role_cache[iam] = { creds = creds, refresh_at = expiration - REFRESH_MARGIN }
    return creds
end


return _M
