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
local native = require("moongate.native")

local aws_sign = native.aws_sign
local pairs = pairs

local plugin_name = "aws-lambda"
local plugin_version = 0.1
local priority = -1899

local IAM_PREFIX =
    'property "authorization" validation failed: property "iam" validation failed: '
local IAM_ANY_OF_FAILED = IAM_PREFIX .. "object matches none of the alternatives"

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
            },
            -- APISIX requires {"accesskey", "secretkey"}; either spelling of the secret will do.
            required = { "accesskey" },
            anyOf = {
                { required = { "secretkey" } },
                { required = { "secret_key" } },
            },
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

    local signed = aws_sign({
        method = params.method,
        path = params.path,
        query = params.query,
        headers = { { "host", params.host } },
        body = params.body,
        access_key = iam.accesskey,
        secret_key = iam.secretkey or iam.secret_key,
        session_token = iam.session_token ~= "" and iam.session_token or nil,
        region = iam.aws_region,
        service = iam.service,
    })
    for name, value in pairs(signed.headers) do
        headers[name] = value
    end
    -- Send exactly the query that was signed.
    params.query = signed.query
end

local _M = require("apisix.plugins.serverless.generic-upstream")(plugin_name, plugin_version,
    priority, request_processor, aws_authz_schema)

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
    if not ok and err == IAM_ANY_OF_FAILED then
        -- Neither spelling of the secret: report it the way APISIX does.
        return false, IAM_PREFIX .. 'property "secretkey" is required'
    end
    return ok, err
end

return _M
