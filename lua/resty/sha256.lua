-- resty.sha256: incremental sha256 (new, update, final -> raw bytes, reset).
return require("moongate.hasher")("sha256")
