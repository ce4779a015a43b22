-- serverless-pre-function: inline Lua functions that run early (priority 10000) in one phase.
-- See plugins/serverless/init.lua.
return require("apisix.plugins.serverless.init")("serverless-pre-function", 10000)
