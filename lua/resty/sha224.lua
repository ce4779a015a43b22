-- resty.sha224: incremental sha224 (new, update, final -> raw bytes, reset).
return require("moongate.hasher")("sha224")
