-- pl.path (penlight 1.14), POSIX part, without file-system access: normpath, splitpath, basename,
-- dirname, join, splitext, extension, isabs. exists/isdir/isfile answer false.
local type = type
local error = error
local select = select
local str_sub = string.sub
local str_match = string.match
local str_gmatch = string.gmatch
local concat = table.concat

local path = { sep = "/", dirsep = ":", is_windows = false }

local function assert_string(n, s)
    if type(s) ~= "string" then
        error("argument " .. n .. " expected a 'string', got a '" .. type(s) .. "'", 3)
    end
end

local function at(s, i)
    return str_sub(s, i, i)
end

-- Collapses "//", "." and "..", drops a trailing "/"; "" becomes "."; a leading "//" (but not "///")
-- is kept, as POSIX allows.
function path.normpath(P)
    assert_string(1, P)
    local anchor = ""
    if str_match(P, "^//") and at(P, 3) ~= "/" then
        anchor = "//"
        P = str_sub(P, 3)
    elseif str_match(P, "^/") then
        anchor = "/"
        P = str_match(P, "^/*(.*)$")
    end
    local parts = {}
    for part in str_gmatch(P, "[^/]+") do
        if part == ".." then
            if #parts ~= 0 and parts[#parts] ~= ".." then
                parts[#parts] = nil
            else
                parts[#parts + 1] = part
            end
        elseif part ~= "." then
            parts[#parts + 1] = part
        end
    end
    P = anchor .. concat(parts, "/")
    if P == "" then
        P = "."
    end
    return P
end

function path.splitpath(P)
    assert_string(1, P)
    local i = #P
    local ch = at(P, i)
    while i > 0 and ch ~= "/" do
        i = i - 1
        ch = at(P, i)
    end
    if i == 0 then
        return "", P
    end
    return str_sub(P, 1, i - 1), str_sub(P, i + 1)
end

function path.basename(P)
    local _, p2 = path.splitpath(P)
    return p2
end

function path.dirname(P)
    local p1 = path.splitpath(P)
    return p1
end

function path.isabs(P)
    assert_string(1, P)
    return at(P, 1) == "/"
end

function path.join(p1, p2, ...)
    assert_string(1, p1)
    assert_string(2, p2)
    if select("#", ...) > 0 then
        local p = path.join(p1, p2)
        for i = 1, select("#", ...) do
            local a = select(i, ...)
            assert_string(i + 2, a)
            p = path.join(p, a)
        end
        return p
    end
    if path.isabs(p2) then
        return p2
    end
    local endc = at(p1, #p1)
    if endc ~= "/" and endc ~= "" then
        p1 = p1 .. "/"
    end
    return p1 .. p2
end

function path.splitext(P)
    assert_string(1, P)
    local i = #P
    local ch = at(P, i)
    while i > 0 and ch ~= "." do
        if ch == "/" then
            return P, ""
        end
        i = i - 1
        ch = at(P, i)
    end
    if i == 0 then
        return P, ""
    end
    return str_sub(P, 1, i - 1), str_sub(P, i)
end

function path.extension(P)
    local _, ext = path.splitext(P)
    return ext
end

function path.exists()
    return false
end

function path.isdir()
    return false
end

function path.isfile()
    return false
end

return path
