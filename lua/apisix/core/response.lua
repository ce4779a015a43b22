-- core.response: APISIX's response helpers (see apisix.md §2.4 for the exit contract).
local native = require("moongate.native")
local json = require("apisix.core.json")

local native_say = native.say
local native_exit = native.exit
local native_resp_set_header = native.resp_set_header
local native_resp_add_header = native.resp_add_header
local native_resp_header = native.resp_header
local type = type
local select = select
local error = error
local pairs = pairs
local tostring = tostring
local tonumber = tonumber
local concat = table.concat
local str_sub = string.sub

local _M = { version = 0.1 }

local function ctx_of()
    local ngx_ctx = ngx.ctx
    return ngx_ctx and (ngx_ctx.api_ctx or ngx_ctx)
end

local moongate_ngx = require("moongate.ngx")
local header_name = moongate_ngx.header_name
local header_ids = moongate_ngx.header_ids
local header_id = moongate_ngx.header_id
local native_resp_set_header_id = native.resp_set_header_id

-- Registers fn(code, body, headers, conf) -> code, body, headers, run by exit() for this request.
function _M.exit_insert_callback(fn, conf)
    local ctx = ctx_of()
    if not ctx then
        return
    end
    local cbs = ctx._resp_exit_callbacks
    if not cbs then
        cbs = {}
        ctx._resp_exit_callbacks = cbs
    end
    cbs[#cbs + 1] = { fn = fn, conf = conf }
end

local function print_body(buf, n)
    if n > 0 then
        native_say(concat(buf, "", 1, n))
    end
end

-- Sets the status, runs the exit callbacks and prints the body pieces; returns the status, or nil
-- when the first argument was not a number (then nothing ends).
local function prepare_exit(code, ...)
    local buf = {}
    local n = 0
    if code and type(code) ~= "number" then
        n = n + 1
        buf[n] = tostring(code)
        code = nil
    end

    local nargs = select("#", ...)
    local first = (...)
    if code then
        local ctx = ctx_of()
        local cbs = ctx and ctx._resp_exit_callbacks
        if cbs then
            local body, headers = first, nil
            for i = 1, #cbs do
                local cb = cbs[i]
                local new_code, new_body, new_headers = cb.fn(code, body, headers, cb.conf)
                code = new_code or code
                body = new_body
                headers = new_headers or headers
            end
            if headers then
                for k, v in pairs(headers) do
                    native_resp_set_header(k, v)
                end
            end
            first = body
            nargs = nargs > 0 and nargs or 1
        end
        ngx.status = code
    end

    for i = 1, nargs do
        local v
        if i == 1 then
            v = first
        else
            v = select(i, ...)
        end
        if type(v) == "table" then
            local body, err = json.encode(v)
            if err then
                error("failed to encode data: " .. err, 2)
            end
            n = n + 1
            buf[n] = body
            n = n + 1
            buf[n] = "\n"
        elseif v ~= nil then
            n = n + 1
            buf[n] = tostring(v)
        end
    end

    print_body(buf, n)
    return code
end

local function resp_exit(code, ...)
    code = prepare_exit(code, ...)
    if code then
        return ngx.exit(code)
    end
end

-- exit(code, ...): sets the status, prints the body pieces (tables as JSON + "\n") and ends the
-- request. A non-number first argument is printed as body and nothing ends.
function _M.exit(code, ...)
    return resp_exit(code, ...)
end

-- Moongate: what `exit` does, without raising to end the running code. The host uses it for a
-- phase's `return code, body`, where the phase has already ended: raising would cost an unwind on
-- every such request.
function _M.exit_returned(code, ...)
    code = prepare_exit(code, ...)
    if code then
        native_exit(code)
    end
end

function _M.say(...)
    return resp_exit(nil, ...)
end

-- The natives refuse a change once the headers went out ("headers have already been sent").

-- One header: a number or boolean value becomes text as tostring writes it; nil removes the header
-- (set) or adds nothing (add).
local function put_header(append, name, value)
    local kind = type(value)
    if kind ~= "string" and kind ~= "table" and kind ~= "nil" then
        value = tostring(value)
    end
    if append then
        if value ~= nil then
            native_resp_add_header(header_name(name), value)
        end
    else
        native_resp_set_header(header_name(name), value)
    end
end

local function set_header(append, ...)
    local count = select("#", ...)
    if count == 1 then
        local headers = select(1, ...)
        if type(headers) ~= "table" then
            -- set_header(name) removes the header
            native_resp_set_header(header_name(headers), nil)
            return
        end
        for k, v in pairs(headers) do
            if append then
                native_resp_add_header(header_name(k), v)
            else
                native_resp_set_header(header_name(k), v)
            end
        end
        return
    end
    for i = 1, count, 2 do
        local name, value = select(i, ...)
        put_header(append, name, value)
    end
end

-- set_header(name, value) is by far the most common call: it names the header by its id and skips
-- the general path (the native takes any value put_header takes).
function _M.set_header(name, value, ...)
    if ... == nil then
        local id = header_ids[name] or header_id(name)
        if id then
            return native_resp_set_header_id(id, value)
        end
    end
    if type(name) ~= "string" or select("#", ...) > 0 then
        if value == nil and select("#", ...) == 0 then
            return set_header(false, name) -- set_header({name = value, ...})
        end
        return set_header(false, name, value, ...)
    end
    put_header(false, name, value)
end

function _M.add_header(...)
    set_header(true, ...)
end

function _M.get_header(name)
    return native_resp_header(header_name(name))
end

-- For body_filter: collects chunks and returns the whole body at eof (or the first
-- max_resp_body_bytes bytes once that many arrived). Unless hold_the_copy, each chunk is removed
-- from the output (ngx.arg[1] = nil) while it is held.
function _M.hold_body_chunk(ctx, hold_the_copy, max_resp_body_bytes)
    local arg = ngx.arg
    local chunk, eof = arg[1], arg[2]
    local key = ctx._plugin_name or "default"
    local buffers = ctx._body_buffer
    if not buffers then
        buffers = {}
        ctx._body_buffer = buffers
    end

    if type(chunk) == "string" and chunk ~= "" then
        local body_buffer = buffers[key]
        if not body_buffer then
            body_buffer = { chunk, n = 1 }
            buffers[key] = body_buffer
            ctx._resp_body_bytes = #chunk
        else
            local n = body_buffer.n + 1
            body_buffer.n = n
            body_buffer[n] = chunk
            ctx._resp_body_bytes = ctx._resp_body_bytes + #chunk
        end
        if max_resp_body_bytes and ctx._resp_body_bytes >= max_resp_body_bytes then
            local body_data = concat(body_buffer, "", 1, body_buffer.n)
            return str_sub(body_data, 1, max_resp_body_bytes)
        end
    end

    if eof then
        local body_buffer = buffers[key]
        if not body_buffer then
            if max_resp_body_bytes and type(chunk) == "string" and #chunk >= max_resp_body_bytes then
                chunk = str_sub(chunk, 1, max_resp_body_bytes)
            end
            return chunk
        end
        local body_data = concat(body_buffer, "", 1, body_buffer.n)
        buffers[key] = nil
        return body_data
    end

    if not hold_the_copy then
        arg[1] = nil
    end
    return nil
end

function _M.clear_header_as_body_modified()
    native_resp_set_header("Content-Length", nil)
    native_resp_set_header("Content-Encoding", nil)
    native_resp_set_header("Last-Modified", nil)
    native_resp_set_header("ETag", nil)
end

-- The last status in $upstream_status, as a number.
function _M.get_upstream_status(ctx)
    local v
    if ctx and ctx.var then
        v = ctx.var.upstream_status
    else
        v = native.var("upstream_status")
    end
    return tonumber(str_sub(v or "", -3))
end

function _M.get_response_source(ctx)
    if ctx and ctx._resp_source then
        return ctx._resp_source
    end
    local status
    if ctx and ctx.var then
        status = ctx.var.upstream_status
    else
        status = native.var("upstream_status")
    end
    if status and status ~= "" then
        return "upstream"
    end
    return "apisix"
end

return _M
