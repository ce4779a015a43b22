-- cjson: encode/decode raise on error.
return require("moongate.cjson").new("cjson", false)
