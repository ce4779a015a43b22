-- serverless-post-function: inline Lua functions that run late (priority -2000) in one phase.
-- See plugins/serverless/init.lua.
return require("apisix.plugins.serverless.init")("serverless-post-function", -2000)
