-- resty.md5: incremental md5 (new, update, final -> raw bytes, reset).
return require("moongate.hasher")("md5")
