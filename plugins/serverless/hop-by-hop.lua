-- RFC 9110 §7.6.1 connection-specific headers (plus Proxy-Authorization), never forwarded by the
-- serverless plugins in either direction. Shared by generic-upstream and aws-lambda's Invoke mode.
return {
    ["connection"] = true,
    ["keep-alive"] = true,
    ["proxy-connection"] = true,
    ["proxy-authorization"] = true,
    ["te"] = true,
    ["trailer"] = true,
    ["transfer-encoding"] = true,
    ["upgrade"] = true,
}
