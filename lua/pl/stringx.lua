-- pl.stringx (penlight 1.14): the string helpers plugins use. Arguments are checked like penlight
-- does, so a non-string raises "argument 1 expected a 'string', got a '<type>'".
local type = type
local error = error
local tostring = tostring
local str_find = string.find
local str_sub = string.sub
local str_gsub = string.gsub
local concat = table.concat

local stringx = {}

local function assert_string(n, s)
    if type(s) ~= "string" then
        error("argument " .. n .. " expected a 'string', got a '" .. type(s) .. "'", 3)
    end
end

local function escape(s)
    return (str_gsub(s, "[%-%.%+%[%]%(%)%$%^%%%?%*]", "%%%1"))
end

local function strip_pattern(chrs)
    if not chrs then
        return "%s"
    end
    return "[" .. escape(chrs) .. "]"
end

function stringx.lstrip(s, chrs)
    assert_string(1, s)
    local p = strip_pattern(chrs)
    local i = 1
    local n = #s
    while i <= n and str_find(str_sub(s, i, i), p) do
        i = i + 1
    end
    return str_sub(s, i)
end

function stringx.rstrip(s, chrs)
    assert_string(1, s)
    local p = strip_pattern(chrs)
    local j = #s
    while j >= 1 and str_find(str_sub(s, j, j), p) do
        j = j - 1
    end
    return str_sub(s, 1, j)
end

function stringx.strip(s, chrs)
    assert_string(1, s)
    return stringx.rstrip(stringx.lstrip(s, chrs), chrs)
end

-- split(s [, sep [, n]]): without sep, splits on runs of whitespace and drops empty fields; with
-- sep, a plain split keeping empty fields. `n` limits the number of fields.
function stringx.split(s, sep, n)
    assert_string(1, s)
    local res = {}
    if sep == nil or sep == "" then
        local count = 0
        local pos = 1
        while true do
            local from, to = str_find(s, "%S+", pos)
            if not from then
                break
            end
            count = count + 1
            if n and count == n then
                local rest = str_sub(s, from)
                res[count] = (str_gsub(rest, "%s+$", ""))
                break
            end
            res[count] = str_sub(s, from, to)
            pos = to + 1
        end
        return res
    end
    local pos = 1
    local count = 0
    while true do
        if n and count == n - 1 then
            break
        end
        local from, to = str_find(s, sep, pos, true)
        if not from then
            break
        end
        count = count + 1
        res[count] = str_sub(s, pos, from - 1)
        pos = to + 1
    end
    res[count + 1] = str_sub(s, pos)
    return res
end

function stringx.startswith(s, prefix)
    assert_string(1, s)
    if type(prefix) == "table" then
        for _, p in ipairs(prefix) do
            if str_sub(s, 1, #p) == p then
                return true
            end
        end
        return false
    end
    return str_find(s, prefix, 1, true) == 1
end

function stringx.endswith(s, suffix)
    assert_string(1, s)
    if type(suffix) == "table" then
        for _, p in ipairs(suffix) do
            if #p == 0 or str_sub(s, -#p) == p then
                return true
            end
        end
        return false
    end
    return #s >= #suffix and (#suffix == 0 or str_sub(s, -#suffix) == suffix)
end

function stringx.replace(s, old, new, n)
    assert_string(1, s)
    assert_string(2, old)
    assert_string(3, new)
    return (str_gsub(s, escape(old), (str_gsub(new, "%%", "%%%%")), n))
end

function stringx.join(sep, seq)
    assert_string(1, sep)
    return concat(seq, sep)
end

function stringx.count(s, sub, allow_overlap)
    assert_string(1, s)
    assert_string(2, sub)
    if sub == "" then
        return #s + 1
    end
    local count = 0
    local pos = 1
    while true do
        local from, to = str_find(s, sub, pos, true)
        if not from then
            return count
        end
        count = count + 1
        pos = allow_overlap and from + 1 or to + 1
    end
end

function stringx.splitlines(s, keep_ends)
    assert_string(1, s)
    local res = {}
    local pos = 1
    while pos <= #s do
        local from, to = str_find(s, "\r?\n", pos)
        if not from then
            res[#res + 1] = str_sub(s, pos)
            break
        end
        res[#res + 1] = str_sub(s, pos, keep_ends and to or from - 1)
        pos = to + 1
    end
    return res
end

function stringx.lines(s)
    return ipairs(stringx.splitlines(s))
end

function stringx.at(s, idx)
    assert_string(1, s)
    return str_sub(s, idx, idx)
end

function stringx.isdigit(s)
    assert_string(1, s)
    return str_find(s, "^%d+$") == 1
end

function stringx.isalpha(s)
    assert_string(1, s)
    return str_find(s, "^%a+$") == 1
end

function stringx.isspace(s)
    assert_string(1, s)
    return str_find(s, "^%s+$") == 1
end

function stringx.lower(s)
    assert_string(1, s)
    return s:lower()
end

function stringx.upper(s)
    assert_string(1, s)
    return s:upper()
end

function stringx.partition(s, ch)
    assert_string(1, s)
    local from, to = str_find(s, ch, 1, true)
    if not from then
        return s, "", ""
    end
    return str_sub(s, 1, from - 1), ch, str_sub(s, to + 1)
end

function stringx.rpartition(s, ch)
    assert_string(1, s)
    local last
    local pos = 1
    while true do
        local from = str_find(s, ch, pos, true)
        if not from then
            break
        end
        last = from
        pos = from + 1
    end
    if not last then
        return "", "", s
    end
    return str_sub(s, 1, last - 1), ch, str_sub(s, last + #ch)
end

function stringx.shorten(s, w, tail)
    assert_string(1, s)
    if #s > w then
        if w < 3 then
            return ("."):rep(w)
        end
        if tail then
            return "..." .. str_sub(s, #s - w + 4)
        end
        return str_sub(s, 1, w - 3) .. "..."
    end
    return s
end

stringx.tostring = tostring

return stringx
