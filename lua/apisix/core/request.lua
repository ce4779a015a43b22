-- core.request: request accessors with APISIX's caching (see apisix.md §3.3).
--
-- headers(ctx) is cached in ctx.headers: lower-case keys, case-insensitive lookup with "_" -> "-",
-- a Lua array for a repeated header. Every caller shares and may mutate that table; set_header and
-- add_header keep it in step with the real request and clear ctx.var's http_<name> cache entry.
local native = require("moongate.native")
local json = require("apisix.core.json")
local header_mt = require("moongate.ngx").header_mt

local native_req_headers = native.req_headers
local native_req_set_header = native.req_set_header
local native_req_add_header = native.req_add_header
local native_decode_args = native.decode_args
local native_encode_args = native.encode_args
local type = type
local tostring = tostring
local tonumber = tonumber
local error = error
local setmetatable = setmetatable
local str_lower = string.lower
local str_gsub = string.gsub
local str_find = string.find
local str_sub = string.sub

local _M = { version = 0.2 }

local function get_ctx(ctx)
    if ctx then
        return ctx
    end
    return ngx.ctx.api_ctx
end

local function headers(ctx)
    ctx = get_ctx(ctx)
    if not ctx then
        return setmetatable(native_req_headers(), header_mt)
    end
    local h = ctx.headers
    if not h then
        h = setmetatable(native_req_headers(), header_mt)
        ctx.headers = h
    end
    return h
end
_M.headers = headers

function _M.header(ctx, name)
    if type(ctx) == "string" then
        -- header(name): APISIX tolerates the ctx-less form.
        name, ctx = ctx, nil
    end
    local v = headers(ctx)[name]
    if type(v) == "table" then
        return v[1]
    end
    return v
end

local function var_name_of(lname)
    if str_find(lname, "-", 1, true) then
        lname = str_gsub(lname, "-", "_")
    end
    return "http_" .. lname
end

local function modify_header(ctx, name, value, override)
    if type(ctx) == "string" then
        -- set_header(name, value): the deprecated ctx-less form.
        ctx, name, value = nil, ctx, name
    end
    if type(name) ~= "string" then
        error("invalid header name: " .. tostring(name), 3)
    end
    if value ~= nil and type(value) ~= "string" and type(value) ~= "table" then
        value = tostring(value)
    end
    ctx = get_ctx(ctx)
    if override then
        native_req_set_header(name, value)
    elseif value ~= nil then
        native_req_add_header(name, value)
    end
    if not ctx then
        return
    end
    local lname = str_lower(name)
    local var = ctx.var
    if var then
        var[var_name_of(lname)] = nil
    end
    local h = ctx.headers
    if h then
        if override or value == nil then
            h[lname] = value
        else
            local old = h[lname]
            if old == nil then
                h[lname] = value
            else
                if type(old) ~= "table" then
                    old = { old }
                end
                if type(value) == "table" then
                    for i = 1, #value do
                        old[#old + 1] = value[i]
                    end
                else
                    old[#old + 1] = value
                end
                h[lname] = old
            end
        end
    end
end

function _M.set_header(ctx, name, value)
    modify_header(ctx, name, value, true)
end

function _M.add_header(ctx, name, value)
    modify_header(ctx, name, value, false)
end

function _M.get_method()
    return native.req_method()
end

function _M.set_method(method)
    return ngx.req.set_method(method)
end

-- Decoded query arguments (no limit), cached in ctx.req_uri_args.
function _M.get_uri_args(ctx)
    ctx = get_ctx(ctx)
    if ctx and ctx.req_uri_args then
        return ctx.req_uri_args
    end
    local args = native_decode_args(native.req_args() or "", 0)
    if ctx then
        ctx.req_uri_args = args
    end
    return args
end

function _M.set_uri_args(ctx, args)
    ctx = get_ctx(ctx)
    if ctx then
        ctx.req_uri_args = nil
        local var = ctx.var
        if var then
            var.args = nil
        end
    end
    if type(args) == "table" then
        args = native_encode_args(args)
    end
    native.req_set_args(args or "")
end

local function check_size(size, max_size)
    if max_size and size > max_size then
        return nil, "request size " .. size .. " is greater than the maximum size "
            .. max_size .. " allowed"
    end
    return true
end

-- The request body (nil when empty). `max_size` is checked against Content-Length first, then
-- against the body read.
function _M.get_body(max_size, ctx)
    if max_size then
        local var = ctx and ctx.var or ngx.var
        local content_length = tonumber(var.http_content_length)
        if content_length then
            local ok, err = check_size(content_length, max_size)
            if not ok then
                return nil, err
            end
        end
    end
    local body, err = native.req_body(max_size)
    if body == nil then
        return nil, err
    end
    local ok, size_err = check_size(#body, max_size)
    if not ok then
        return nil, size_err
    end
    if body == "" then
        return nil
    end
    return body
end

function _M.get_json_request_body_table()
    local body, err = _M.get_body()
    if not body then
        return nil, { message = "could not get body: " .. (err or "request body is empty") }
    end
    local tab, derr = json.decode(body)
    if not tab then
        return nil, { message = "could not get parse JSON request body: " .. tostring(derr) }
    end
    return tab
end

-- Decoded application/x-www-form-urlencoded body, cached in ctx.req_post_args.
function _M.get_post_args(ctx)
    ctx = get_ctx(ctx)
    if ctx and ctx.req_post_args then
        return ctx.req_post_args
    end
    local body = native.req_body_buffered()
    if body == nil then
        body = native.req_body()
    end
    local args = native_decode_args(body or "", 0)
    if ctx then
        ctx.req_post_args = args
    end
    return args
end

local function var_of(ctx)
    ctx = get_ctx(ctx)
    return ctx and ctx.var or ngx.var
end

function _M.get_remote_client_ip(ctx)
    return var_of(ctx).remote_addr
end

function _M.get_remote_client_port(ctx)
    return tonumber(var_of(ctx).remote_port)
end

function _M.get_ip(ctx)
    return var_of(ctx).remote_addr
end

function _M.get_host(ctx)
    return var_of(ctx).host
end

function _M.get_scheme(ctx)
    return var_of(ctx).scheme
end

function _M.get_port(ctx)
    return tonumber(var_of(ctx).server_port)
end

function _M.get_http_version()
    return native.req_http_version()
end

function _M.get_path(ctx)
    local uri = var_of(ctx).request_uri or ""
    local q = str_find(uri, "?", 1, true)
    if q then
        return str_sub(uri, 1, q - 1)
    end
    return uri
end

return _M
