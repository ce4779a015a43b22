-- ngx.re (lua-resty-core): split and opt on top of ngx.re.find.
local native = require("moongate.native")

local re_find = native.re_find
local str_sub = string.sub
local type = type

local _M = { version = "0.1.28" }

-- split(subject, regex, opts, ctx, max, res) -> array | nil, err. Captures are not included;
-- `max > 0` limits the number of fields (the last one holds the rest).
function _M.split(subj, regex, opts, ctx, max, res)
    if type(subj) ~= "string" then
        return nil, "subject must be a string"
    end
    max = max or 0
    res = res or {}
    local n = 0
    local len = #subj
    local pos = (ctx and ctx.pos) or 1
    if regex == "" then
        for i = pos, len do
            if max > 0 and n == max - 1 then
                n = n + 1
                res[n] = str_sub(subj, i)
                return res
            end
            n = n + 1
            res[n] = str_sub(subj, i, i)
        end
        return res
    end
    local search = pos
    while true do
        if max > 0 and n == max - 1 then
            break
        end
        local from, to, err = re_find(subj, regex, opts, search, 0)
        if not from then
            if err then
                return nil, err
            end
            break
        end
        if to < from then
            -- empty match: split between characters
            if from > len then
                break
            end
            n = n + 1
            res[n] = str_sub(subj, pos, from)
            pos = from + 1
            search = from + 1
        else
            n = n + 1
            res[n] = str_sub(subj, pos, from - 1)
            pos = to + 1
            search = to + 1
        end
        if search > len + 1 then
            break
        end
    end
    n = n + 1
    res[n] = str_sub(subj, pos)
    for i = n + 1, #res do
        res[i] = nil
    end
    return res
end

function _M.opt()
end

return _M
