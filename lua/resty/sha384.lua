-- resty.sha384: incremental sha384 (new, update, final -> raw bytes, reset).
return require("moongate.hasher")("sha384")
