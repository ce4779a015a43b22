-- cjson.safe: like cjson, but encode/decode return nil, err instead of raising.
return require("moongate.cjson").new("cjson.safe", true)
