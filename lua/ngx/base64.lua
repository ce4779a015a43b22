-- ngx.base64 (lua-resty-core): URL-safe base64 without padding.
local native = require("moongate.native")

return {
    version = "0.1.28",
    encode_base64url = native.base64url_encode,
    decode_base64url = native.base64url_decode,
}
