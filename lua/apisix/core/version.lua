-- core.version: the APISIX version Moongate is compatible with.
local native = require("moongate.native")

return {
    VERSION = "3.18.0",
    MOONGATE_VERSION = native.moongate_version or "0.1.0",
}
