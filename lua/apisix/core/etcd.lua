-- core.etcd: Moongate keeps configuration in Rust; every function answers
-- nil, "etcd is not used by this gateway".
local ERR = "etcd is not used by this gateway"

local function absent()
    return nil, ERR
end

return setmetatable({ version = 0.1 }, {
    __index = function()
        return absent
    end,
})
