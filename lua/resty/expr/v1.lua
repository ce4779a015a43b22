-- resty.expr.v1 (lua-resty-expr): APISIX `vars` expressions.
--   local e, err = expr.new({{"arg_name", "==", "json"}, {"http_x", "~~", "^v[0-9]+$"}})
--   e:eval(ctx.var) --> true / false
-- A rule is a list of conditions joined by AND, or starts with "AND", "OR", "!AND" or "!OR" followed by
-- sub-rules. A condition is {var, op, value} or {var, "!", op, value}. Operators: ==, ~=, >, <, >=,
-- <=, ~~ (regex), ~* (case-insensitive regex), in, has, ipmatch.
local ip = require("apisix.core.ip")

local type = type
local tostring = tostring
local tonumber = tonumber
local ipairs = ipairs
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

local logic_ops = { AND = true, OR = true, ["!AND"] = true, ["!OR"] = true }

local function re_find(...)
    return ngx.re.find(...)
end

local compare_funcs = {
    ["=="] = function(l, r)
        if type(r) == "number" then
            l = tonumber(l)
            if not l then
                return false
            end
        end
        return l == r
    end,
    ["~="] = function(l, r)
        if type(r) == "number" then
            l = tonumber(l)
            if not l then
                return true
            end
        end
        return l ~= r
    end,
    [">"] = function(l, r)
        l, r = tonumber(l), tonumber(r)
        return l ~= nil and r ~= nil and l > r
    end,
    ["<"] = function(l, r)
        l, r = tonumber(l), tonumber(r)
        return l ~= nil and r ~= nil and l < r
    end,
    [">="] = function(l, r)
        l, r = tonumber(l), tonumber(r)
        return l ~= nil and r ~= nil and l >= r
    end,
    ["<="] = function(l, r)
        l, r = tonumber(l), tonumber(r)
        return l ~= nil and r ~= nil and l <= r
    end,
    ["~~"] = function(l, r)
        if type(l) ~= "string" then
            return false
        end
        return re_find(l, r, "jo") ~= nil
    end,
    ["~*"] = function(l, r)
        if type(l) ~= "string" then
            return false
        end
        return re_find(l, r, "joi") ~= nil
    end,
    ["in"] = function(l, r)
        if type(r) ~= "table" then
            return false
        end
        for _, v in ipairs(r) do
            if v == l then
                return true
            end
        end
        return false
    end,
    ["has"] = function(l, r)
        if type(l) ~= "table" then
            return false
        end
        for _, v in ipairs(l) do
            if v == r then
                return true
            end
        end
        return false
    end,
    ["ipmatch"] = function(l, matcher)
        if type(l) ~= "string" then
            return false
        end
        return matcher:match(l) == true
    end,
}

-- Checks a rule and compiles ipmatch values; returns the compiled rule or nil, err.
local function compile(rule)
    if type(rule) ~= "table" then
        return nil, "rule should be a table"
    end
    local first = rule[1]
    local out = {}
    local start = 1
    if type(first) == "string" then
        if not logic_ops[first] then
            return nil, "rule should be wrapped inside brackets"
        end
        out.logic = first
        start = 2
    else
        out.logic = "AND"
    end
    for i = start, #rule do
        local expr = rule[i]
        if type(expr) ~= "table" then
            return nil, "invalid expression: " .. tostring(expr)
        end
        if type(expr[1]) == "table" or logic_ops[expr[1]] then
            local sub, err = compile(expr)
            if not sub then
                return nil, err
            end
            out[#out + 1] = { sub = sub }
        else
            if #expr < 2 then
                return nil, "rule too short"
            end
            local var, op, value = expr[1], expr[2], expr[3]
            local negate = false
            if op == "!" then
                negate = true
                op, value = expr[3], expr[4]
            end
            if type(op) ~= "string" or not compare_funcs[op] then
                return nil, "invalid operator '" .. tostring(op) .. "'"
            end
            if op == "ipmatch" then
                local list = type(value) == "table" and value or { value }
                local matcher, err = ip.new_matcher(list)
                if not matcher then
                    return nil, "failed to create ip matcher: " .. tostring(err)
                end
                value = matcher
            elseif op == "~~" or op == "~*" then
                if type(value) ~= "string" then
                    return nil, "invalid regex: " .. tostring(value)
                end
                local ok, _, _, err = pcall(ngx.re.find, "", value, op == "~*" and "joi" or "jo")
                if not ok or err then
                    return nil, "failed to compile regex " .. value .. ": " .. tostring(err)
                end
            end
            if value == ngx.null then
                value = nil
            end
            out[#out + 1] = { var = var, op = op, value = value, negate = negate }
        end
    end
    return out
end

local function eval(compiled, ctx)
    local logic = compiled.logic
    local is_or = logic == "OR" or logic == "!OR"
    local result = not is_or
    for i = 1, #compiled do
        local item = compiled[i]
        local ok
        if item.sub then
            ok = eval(item.sub, ctx)
        else
            ok = compare_funcs[item.op](ctx[item.var], item.value)
            if item.negate then
                ok = not ok
            end
        end
        if is_or and ok then
            result = true
            break
        elseif not is_or and not ok then
            result = false
            break
        end
    end
    if logic == "!AND" or logic == "!OR" then
        return not result
    end
    return result
end

function _M.new(rule)
    if not rule then
        return nil, "missing argument rule"
    end
    local compiled, err = compile(rule)
    if not compiled then
        return nil, err
    end
    return setmetatable({ rule = rule, compiled = compiled }, mt)
end

-- Evaluates against `ctx` (a table such as ctx.var; defaults to ngx.var).
function _M.eval(self, ctx)
    return eval(self.compiled, ctx or ngx.var)
end

return _M
