-- resty.core.base64: ngx.encode_base64/decode_base64 and the base64url variants.
local native = require("moongate.native")

return {
    version = "0.1.28",
    encode_base64 = native.base64_encode,
    decode_base64 = native.base64_decode,
    encode_base64url = native.base64url_encode,
    decode_base64url = native.base64url_decode,
}
