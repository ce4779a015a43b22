-- core.env (minimal): resolves "$env://NAME" and "$env://NAME/json/sub/key" references.
local json = require("apisix.core.json")

local _M = {}
local PREFIX = "$env://"

function _M.init()
    return true
end

function _M.fetch_by_uri(env_uri)
    if type(env_uri) ~= "string" or env_uri:sub(1, #PREFIX) ~= PREFIX then
        return nil, "error env_uri type: " .. type(env_uri)
    end
    local rest = env_uri:sub(#PREFIX + 1)
    local name, sub = rest:match("^([^/]+)/?(.*)$")
    if not name then
        return nil, "error env_uri: " .. env_uri
    end
    local value = os.getenv(name)
    if value == nil or sub == "" then
        return value
    end
    local tab, err = json.decode(value)
    if not tab then
        return nil, "failed to decode env value as JSON: " .. tostring(err)
    end
    for part in sub:gmatch("[^/]+") do
        if type(tab) ~= "table" then
            return nil
        end
        tab = tab[part]
    end
    return tab
end

return _M
