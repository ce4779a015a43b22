-- resty.sha1: incremental sha1 (new, update, final -> raw bytes, reset).
return require("moongate.hasher")("sha1")
