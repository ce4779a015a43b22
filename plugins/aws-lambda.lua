-- aws-lambda: answers the request by calling an AWS Lambda function through its API Gateway URL or
-- Function URL, authenticated with an API key (x-api-key) or AWS SigV4 (IAM). The forwarding is
-- plugins/serverless/generic-upstream.lua; this file only adds the authentication.
--
-- Differences from APISIX's signer (apisix.md §5, aws.md §11), on purpose:
-- * signing is native (moongate.native.aws_sign): canonical path double-encoded and normalized the
--   way AWS does, header values whitespace-folded, query canonicalized and sent exactly as signed;
-- * only `host` is signed (plus x-amz-date and x-amz-security-token, which the signer adds), so
--   client headers neither leak into the signature nor break it when a proxy rewrites them;
-- * a client Authorization, X-Amz-Date, X-Amz-Security-Token or X-Amz-Content-Sha256 is removed
--   before signing: it can neither disable signing nor be forwarded next to the signature;
-- * `iam.session_token` (temporary credentials) is sent and signed, and `iam.secret_key` is accepted
--   as a spelling of `iam.secretkey`.
--
-- Moongate additions (all optional; without them the behaviour above is unchanged):
-- * `aws_endpoint` ("http://127.0.0.1:4566"): replaces scheme, host and port of the AWS endpoint
--   (function_uri in HTTP mode, lambda.REGION.amazonaws.com in Invoke mode); the signing region and
--   service stay as configured. For LocalStack-style endpoints and tests.
-- * Lambda Invoke mode (aws-lambda/invoke.lua) when function_uri is
--   `https://lambda.REGION.amazonaws.com/2015-03-31/functions/NAME/invocations` or
--   `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`: the request becomes an API Gateway
--   proxy event (`payload_version` "2.0" default, or "1.0"), sent with a signed Invoke call
--   (service lambda, region of the ARN/host), and the function's proxy response is unwrapped.
--   Options: `qualifier`, `invocation_type` (RequestResponse | Event -> 202 | DryRun -> 204),
--   `log_type` (None | Tail; the log never reaches the client), `unhandled_status` (502), the status
--   answered for an X-Amz-Function-Error. Malformed output -> 502 {"message":"Internal server
--   error"}; Lambda service errors -> 502 (429 stays 429), logged with x-amzn-ErrorType and message.
-- * Credentials (aws-lambda/credentials.lua) when `iam` has no accesskey (neither accesskey nor
--   secretkey: the schema keeps APISIX's "required" error when only one of them is given):
--   `iam.credentials_file`/`iam.profile` when set, env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/
--   AWS_SESSION_TOKEN, then AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials (profile from
--   `iam.profile`, AWS_PROFILE or "default"). `iam.assume_role_arn` (+ `role_session_name`,
--   `external_id`, `duration_seconds`, `sts_endpoint`, `sts_region`) then assumes a role with STS;
--   its credentials are cached per conf and worker until 5 minutes before they expire.
local native = require("moongate.native")
local credentials = require("apisix.plugins.aws-lambda.credentials")
local invoke = require("apisix.plugins.aws-lambda.invoke")

local aws_sign = native.aws_sign
local pairs = pairs
local type = type
local setmetatable = setmetatable
local str_find = string.find

local plugin_name = "aws-lambda"
local plugin_version = 0.1
local priority = -1899

local IAM_PREFIX =
    'property "authorization" validation failed: property "iam" validation failed: '

local aws_authz_schema = {
    type = "object",
    properties = {
        apikey = { type = "string" },
        iam = {
            type = "object",
            properties = {
                accesskey = {
                    description = "access key id from from aws iam console",
                    type = "string",
                },
                secretkey = {
                    description = "secret access key from from aws iam console",
                    type = "string",
                },
                secret_key = {
                    description = "Moongate: another spelling of secretkey",
                    type = "string",
                },
                session_token = {
                    description = "Moongate: session token of temporary credentials",
                    type = "string",
                },
                aws_region = {
                    type = "string",
                    default = "us-east-1",
                    description = "the aws region that is receiving the request",
                },
                service = {
                    type = "string",
                    default = "execute-api",
                    description = "the service that is receiving the request "
                        .. "(\"lambda\" for Function URLs)",
                },
                -- Moongate: credentials when accesskey/secretkey are absent (see credentials.lua).
                profile = {
                    description = "Moongate: shared credentials file profile (default: "
                        .. "AWS_PROFILE, else \"default\")",
                    type = "string",
                },
                credentials_file = {
                    description = "Moongate: shared credentials file (default: "
                        .. "AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials); when set, or when "
                        .. "profile is set, it is read before the environment",
                    type = "string",
                },
                assume_role_arn = {
                    description = "Moongate: role assumed with STS AssumeRole",
                    type = "string",
                },
                role_session_name = { type = "string", default = "moongate" },
                external_id = { type = "string" },
                duration_seconds = { type = "integer", minimum = 900, maximum = 43200 },
                sts_endpoint = {
                    description = "Moongate: STS endpoint (default https://sts.amazonaws.com)",
                    type = "string",
                },
                sts_region = { type = "string", default = "us-east-1" },
            },
            -- APISIX requires {"accesskey", "secretkey"}: check_schema below keeps that error for an
            -- iam with one of them, and allows neither (credential chain).
        },
    },
}

-- Headers a client may not send to a signed function: the signer owns them.
local SIGNER_OWNED = {
    ["authorization"] = true,
    ["x-amz-date"] = true,
    ["x-amz-security-token"] = true,
    ["x-amz-content-sha256"] = true,
}

local function request_processor(conf, _, params)
    local headers = params.headers
    local auth = conf.authorization
    if not auth then
        return
    end

    -- API key: as APISIX, a key the client sent is kept, and a configured key wins over IAM.
    if auth.apikey and not headers["x-api-key"] then
        headers["x-api-key"] = auth.apikey
        return
    end

    local iam = auth.iam
    if not iam then
        return
    end

    for name in pairs(SIGNER_OWNED) do
        headers[name] = nil
    end

    local creds, err = credentials.get(conf)
    if not creds then
        return (err and str_find(err, "^STS")) and 502 or 500, err
    end

    local signed = aws_sign({
        method = params.method,
        path = params.path,
        query = params.query,
        headers = { { "host", params.host } },
        body = params.body,
        access_key = creds.access_key,
        secret_key = creds.secret_key,
        session_token = creds.session_token,
        region = iam.aws_region,
        service = iam.service,
    })
    for name, value in pairs(signed.headers) do
        headers[name] = value
    end
    -- Send exactly the query that was signed.
    params.query = signed.query
end

-- SigV4 signs the body's hash: with `iam` the body is read whole before the call; otherwise it
-- streams to the function.
local function body_needed(conf)
    return type(conf.authorization) == "table" and conf.authorization.iam ~= nil
end

local _M = require("apisix.plugins.serverless.generic-upstream")(plugin_name, plugin_version,
    priority, request_processor, aws_authz_schema, nil, body_needed)

-- Moongate additions, all optional (defaults keep the plain HTTP behaviour above).
local props = _M.schema.properties
props.aws_endpoint = {
    description = "Moongate: replaces scheme, host and port of the AWS endpoint "
        .. "(e.g. http://127.0.0.1:4566); the signing region and service stay as configured",
    type = "string",
    pattern = "^https?://",
}
props.qualifier = {
    description = "Moongate (Invoke): function version or alias, sent as ?Qualifier=",
    type = "string",
    minLength = 1,
    maxLength = 128,
}
props.invocation_type = {
    type = "string",
    enum = { "RequestResponse", "Event", "DryRun" },
    default = "RequestResponse",
}
props.log_type = { type = "string", enum = { "None", "Tail" }, default = "None" }
props.payload_version = { type = "string", enum = { "1.0", "2.0" }, default = "2.0" }
props.unhandled_status = {
    description = "Moongate (Invoke): status answered when the function reports an error",
    type = "integer",
    minimum = 100,
    maximum = 599,
    default = 502,
}

_M.schema.encrypt_fields = {
    "authorization.apikey",
    "authorization.iam.accesskey",
    "authorization.iam.secretkey",
    "authorization.iam.secret_key",
    "authorization.iam.session_token",
}

local check_schema = _M.check_schema

function _M.check_schema(conf, schema_type)
    local ok, err = check_schema(conf, schema_type)
    if not ok then
        return ok, err
    end
    local iam = type(conf) == "table" and type(conf.authorization) == "table"
        and conf.authorization.iam
    if type(iam) == "table" then
        local has_secret = iam.secretkey ~= nil or iam.secret_key ~= nil
        if iam.accesskey == nil and has_secret then
            return false, IAM_PREFIX .. 'property "accesskey" is required'
        end
        if iam.accesskey ~= nil and not has_secret then
            return false, IAM_PREFIX .. 'property "secretkey" is required'
        end
    end
    return true
end

-- A copy of conf whose function_uri goes to aws_endpoint (plain HTTP mode), one per conf.
local endpoint_confs = setmetatable({}, { __mode = "k" })

local function with_endpoint(conf)
    local copy = endpoint_confs[conf]
    if copy then
        return copy
    end
    copy = {}
    for k, v in pairs(conf) do
        copy[k] = v
    end
    local tail = conf.function_uri:match("^%a+://[^/%?#]*(.*)$") or ""
    copy.function_uri = conf.aws_endpoint:gsub("/+$", "") .. tail
    endpoint_confs[conf] = copy
    return copy
end

local http_access = _M.access

function _M.access(conf, ctx)
    local target = invoke.target(conf)
    if target then
        return invoke.access(plugin_name, conf, ctx, target)
    end
    if conf.aws_endpoint and conf.aws_endpoint ~= "" then
        conf = with_endpoint(conf)
    end
    return http_access(conf, ctx)
end

return _M
