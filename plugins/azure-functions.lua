-- azure-functions: answers the request by calling an Azure Function over HTTP(S), authenticated
-- with a function key (x-functions-key) and optional client id (x-functions-clientid). The
-- forwarding is plugins/serverless/generic-upstream.lua; this file only adds the keys.
--
-- Keys come from the route's `authorization`, or else from the plugin metadata's master keys, and
-- are only added when the client sent neither header: a client's own key is never overridden.
-- Unlike APISIX, an empty key (the metadata default "") is not sent as an empty header.
local plugin = require("apisix.plugin")

local plugin_name = "azure-functions"
local plugin_version = 0.1
local priority = -1900

local azure_authz_schema = {
    type = "object",
    properties = {
        apikey = { type = "string" },
        clientid = { type = "string" },
    },
}

local metadata_schema = {
    type = "object",
    properties = {
        master_apikey = { type = "string", default = "" },
        master_clientid = { type = "string", default = "" },
    },
    encrypt_fields = { "master_apikey" },
}

local function set_key(headers, name, value)
    if value ~= nil and value ~= "" then
        headers[name] = value
    end
end

local function request_processor(conf, _, params)
    local headers = params.headers
    if headers["x-functions-key"] or headers["x-functions-clientid"] then
        return
    end
    local auth = conf.authorization
    if auth then
        set_key(headers, "x-functions-key", auth.apikey)
        set_key(headers, "x-functions-clientid", auth.clientid)
        return
    end
    -- Neither the client nor the route has a key: fall back to the master keys, if any.
    local metadata = plugin.plugin_metadata(plugin_name)
    local value = metadata and metadata.value
    if value then
        set_key(headers, "x-functions-key", value.master_apikey)
        set_key(headers, "x-functions-clientid", value.master_clientid)
    end
end

local _M = require("apisix.plugins.serverless.generic-upstream")(plugin_name, plugin_version,
    priority, request_processor, azure_authz_schema, metadata_schema)

_M.schema.encrypt_fields = { "authorization.apikey" }

return _M
