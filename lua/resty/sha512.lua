-- resty.sha512: incremental sha512 (new, update, final -> raw bytes, reset).
return require("moongate.hasher")("sha512")
