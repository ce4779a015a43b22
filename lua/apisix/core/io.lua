-- core.io (minimal): whole-file reads.
local _M = {}

function _M.get_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local content = f:read("*a")
    f:close()
    return content
end

_M.read_file = _M.get_file

return _M
