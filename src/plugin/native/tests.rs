//! Tests of the pure natives and the Lua runtime in `lua/` (ngx shim, `apisix.core`, `resty.*`, ...).
//!
//! Each test builds its own VM with every pure native registered, fake request natives written in Lua
//! (`FAKE_REQUEST` below: they read and write a global `fake` table the assertions inspect), and the
//! `ngx` global installed, then runs Lua assertions. `eq(actual, expected, what)` raises with both
//! values on a mismatch, so a failing test names the line and the values.

use mlua::{Lua, Table, Value};

const LUA_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/lua/?.lua;",
    env!("CARGO_MANIFEST_DIR"),
    "/lua/?/init.lua"
);

/// Fake request natives over a global `fake` table, plus assertion helpers.
const FAKE_REQUEST: &str = r##"
local native = require("moongate.native")

fake = {
    vars = {}, var_sets = {}, headers = {}, resp_headers = {}, out = {}, ctx = {},
    method = "GET", uri = "/", args = nil, body = nil, status = nil, exited = nil,
    headers_sent = false, timers = {}, metadata = {}, http_requests = {},
}

local function copy(v)
    if type(v) ~= "table" then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = copy(x) end
    return t
end

native.var = function(name) return fake.vars[name] end
native.var_set = function(name, v)
    fake.vars[name] = v
    fake.var_sets[#fake.var_sets + 1] = name
end
native.req_method = function() return fake.method end
native.req_set_method = function(m) fake.method = m end
native.req_uri = function() return fake.uri end
native.req_set_uri = function(u) fake.uri = u end
native.req_raw_uri = function() return fake.uri end
native.req_http_version = function() return 1.1 end
native.req_headers = function() return copy(fake.headers) end
native.req_header = function(name) return fake.headers[name:lower()] end
native.req_set_header = function(name, v) fake.headers[name:lower()] = copy(v) end
native.req_add_header = function(name, v)
    local k = name:lower()
    local old = fake.headers[k]
    if old == nil then
        fake.headers[k] = v
    elseif type(old) == "table" then
        old[#old + 1] = v
    else
        fake.headers[k] = { old, v }
    end
end
native.req_args = function() return fake.args end
native.req_set_args = function(s) fake.args = s end
native.req_body = function(max)
    if fake.body and max and #fake.body > max then
        return nil, "request size " .. #fake.body .. " is greater than the maximum size " .. max .. " allowed"
    end
    return fake.body
end
native.req_body_buffered = function() return fake.body end
native.req_set_body = function(s) fake.body = s end
native.req_start_time = function() return 1700000000.5 end
native.resp_status = function() return fake.status end
native.resp_set_status = function(s) fake.status = s end
native.resp_headers = function() return copy(fake.resp_headers) end
native.resp_header = function(name) return fake.resp_headers[name:lower()] end
-- Like the real natives, header changes are refused once the headers went out.
local function not_sent()
    if fake.headers_sent then error("headers have already been sent") end
end
native.resp_set_header = function(name, v) not_sent(); fake.resp_headers[name:lower()] = copy(v) end
native.resp_add_header = function(name, v)
    not_sent()
    local k = name:lower()
    local old = fake.resp_headers[k]
    if old == nil then
        fake.resp_headers[k] = v
    elseif type(old) == "table" then
        old[#old + 1] = v
    else
        fake.resp_headers[k] = { old, v }
    end
end
-- Header ids as the real natives hand them out: one per name, kept for the life of the worker.
local header_names = {}
native.header_id = function(name)
    header_names[#header_names + 1] = name
    return #header_names
end
-- The real native takes any value: a number or boolean becomes text as tostring writes it.
native.resp_set_header_id = function(id, v)
    if v ~= nil and type(v) ~= "table" then
        v = tostring(v)
    end
    native.resp_set_header(header_names[id], v)
end
native.resp_headers_sent = function() return fake.headers_sent end
native.say = function(s) fake.out[#fake.out + 1] = s end
native.exit = function(code) fake.exited = code end
native.phase = function() return "access" end
native.ngx_ctx = function() return fake.ctx end
native.sleep = function() end
native.timer_at = function(delay, fn, ...)
    fake.timers[#fake.timers + 1] = { delay = delay, fn = fn, args = { ... } }
    return true
end
native.worker_id = function() return 0 end
native.worker_count = function() return 1 end
native.instance_id = function() return "test-instance" end
native.local_conf = function() return { apisix = { node_listen = { 9080 } } } end
native.plugin_metadata = function(name) return fake.metadata[name] end
native.plugin_attr = function() return nil end
native.plugin_module = function() return nil end
native.http_request = function(req)
    fake.http_requests[#fake.http_requests + 1] = req
    if fake.http_error then return nil, fake.http_error end
    return fake.http_response or { status = 200, headers = { ["content-type"] = "text/plain" }, body = "ok" }
end

local function show(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

function eq(actual, expected, what)
    if actual ~= expected then
        error((what or "value") .. ": expected " .. show(expected) .. ", got " .. show(actual), 2)
    end
end

function raises(fn, pattern, what)
    local ok, err = pcall(fn)
    if ok then error((what or "call") .. ": expected an error", 2) end
    if pattern and not tostring(err):find(pattern, 1, true) then
        error((what or "call") .. ": error " .. show(tostring(err)) .. " lacks " .. show(pattern), 2)
    end
end
"##;

/// A VM with every pure native, the fake request natives and `ngx` installed.
fn vm() -> Lua {
    let lua = Lua::new();
    let native = lua.create_table().expect("native table");
    register_all(&lua, &native).expect("register natives");
    let package: Table = lua.globals().get("package").expect("package");
    package.set("path", LUA_PATH).expect("package.path");
    let loaded: Table = package.get("loaded").expect("package.loaded");
    loaded
        .set("moongate.native", native)
        .expect("preload native");
    lua.load(FAKE_REQUEST)
        .set_name("@fake_request.lua")
        .exec()
        .expect("fake request natives");
    lua.load(r#"require("moongate.ngx").install(require("moongate.native"))"#)
        .set_name("@install.lua")
        .exec()
        .expect("ngx installed");
    lua
}

fn register_all(lua: &Lua, native: &Table) -> mlua::Result<()> {
    super::json::register(lua, native)?;
    super::crypto::register(lua, native)?;
    super::uri::register(lua, native)?;
    super::regex::register(lua, native)?;
    super::time::register(lua, native)?;
    super::shdict::register(lua, native)?;
    super::schema::register(lua, native)?;
    super::log::register(lua, native)?;
    Ok(())
}

/// Runs `code` in a fresh VM; panics with the Lua error (file:line) on failure.
fn check(name: &str, code: &str) {
    let lua = vm();
    if let Err(e) = lua.load(code).set_name(format!("@{name}")).exec() {
        panic!("{name}: {e}");
    }
}

#[test]
fn json_round_trips_keep_null_arrays_and_integers() {
    check(
        "json.lua",
        r#"
        local native = require("moongate.native")
        local cjson = require("cjson")
        local safe = require("cjson.safe")
        local json = require("apisix.core.json")

        eq(cjson.null, ngx.null, "cjson.null is ngx.null")
        eq(json.null, native.null, "core.json.null")
        eq(json.array_mt, cjson.array_mt, "array_mt shared")
        eq(cjson.empty_array_mt, cjson.array_mt, "empty_array_mt")

        eq(json.encode({}), "{}", "empty table is an object")
        eq(json.encode(setmetatable({}, json.array_mt)), "[]", "array_mt empty table")
        eq(json.encode({1, 2, 3}), "[1,2,3]", "integers stay integers")
        eq(json.encode(1.5), "1.5")
        eq(json.encode(0.1), "0.1")
        eq(json.encode(1/3), "0.33333333333333", "%.14g")
        eq(json.encode(1e20), "1e+20")
        eq(json.encode(-0.00001), "-1e-05")
        eq(json.encode(1700000000123), "1700000000123", "ms timestamps in full")
        eq(json.encode({a = cjson.null}), '{"a":null}')
        eq(json.encode("a/b\n\"\1"), '"a/b\\n\\"\\u0001"', "core.json does not escape slashes")
        eq(cjson.encode("a/b"), '"a\\/b"', "cjson escapes slashes by default")
        eq(json.encode({[1] = "a", [3] = "c"}), '["a",null,"c"]', "holes become null")
        local s, err = json.encode({[1] = 1, [100] = 2})
        eq(s, nil)
        eq(err, "Cannot serialise table: excessively sparse array")
        eq(json.encode({[1] = "a", x = 1}):find('"1":"a"', 1, true) ~= nil, true, "mixed keys")
        local bad, berr = json.encode({f = print})
        eq(bad, nil)
        eq(berr, "Cannot serialise function: type not supported")
        eq(json.encode("\255\254"), '"\255\254"', "bytes pass through")

        local nested = json.decode('{"a":[1,{"b":null}],"c":[],"d":{},"e":true,"n":-12.5}')
        eq(nested.a[1], 1)
        eq(nested.a[2].b, ngx.null, "null decodes to ngx.null")
        eq(getmetatable(nested.c), json.array_mt, "decoded arrays carry array_mt")
        eq(json.encode(nested.c), "[]", "empty array survives a round trip")
        eq(json.encode(nested.d), "{}")
        eq(nested.e, true)
        eq(nested.n, -12.5)
        eq(json.decode("123"), 123)
        eq(json.encode(json.decode("[1,2]")), "[1,2]")
        local copied = require("apisix.core.table").deepcopy(json.decode('{"a":[],"b":[1]}'))
        eq(json.encode(copied.a), "[]", "deepcopy keeps the array marker")
        eq(json.encode(copied.b), "[1]")

        local v, derr = json.decode("{bad")
        eq(v, nil)
        eq(type(derr), "string", "decode error text")
        local v2, derr2 = safe.decode(nil)
        eq(v2, nil)
        eq(derr2:find("string expected", 1, true) ~= nil, true)
        raises(function() cjson.decode("[") end, nil, "cjson.decode raises")
        raises(function() cjson.encode(print) end, "type not supported", "cjson.encode raises")
        eq(safe.encode(print), nil, "cjson.safe.encode returns nil")

        local stripped = json.decode('{"a":null,"b":{"c":null,"d":1}}', {null_as_nil = true})
        eq(stripped.a, nil)
        eq(stripped.b.c, nil)
        eq(stripped.b.d, 1)

        eq(json.stably_encode({b = 1, a = {d = 2, c = 3}}), '{"a":{"c":3,"d":2},"b":1}')
        eq(json.canonical_encode({z = 1, y = 2}), '{"y":2,"z":1}')
        eq(tostring(json.delay_encode({x = 1})), '{"x":1}')
        eq(json.encode({f = print}, true):find('"f":"function', 1, true) ~= nil, true, "force")
        eq(native.json_encode({a = {1}}, true), '{\n  "a": [\n    1\n  ]\n}', "pretty")
    "#,
    );
}

#[test]
fn crypto_natives_match_known_vectors() {
    check(
        "crypto.lua",
        r#"
        local native = require("moongate.native")
        local str = require("resty.string")
        local to_hex = str.to_hex
        eq(ngx.md5(""), "d41d8cd98f00b204e9800998ecf8427e")
        eq(ngx.md5("abc"), "900150983cd24fb0d6963f7d28e17f72")
        eq(to_hex(ngx.md5_bin("abc")), "900150983cd24fb0d6963f7d28e17f72")
        eq(to_hex(ngx.sha1_bin("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d")
        eq(to_hex(native.sha256_bin("abc")),
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")

        local key, msg = "Jefe", "what do ya want for nothing?"
        eq(to_hex(native.hmac("md5", key, msg)), "750c783e6ab0b503eaa86e310a5db738")
        eq(to_hex(ngx.hmac_sha1(key, msg)), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        eq(to_hex(native.hmac("sha256", key, msg)),
           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        eq(to_hex(native.hmac("sha512", key, msg)),
           "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")
        raises(function() native.hmac("sha3", "k", "m") end, "unsupported digest algorithm")

        local hmac = require("resty.hmac")
        local h = hmac:new(key, hmac.ALGOS.SHA256)
        eq(to_hex(h:final(msg)), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        h:update("what do ya ")
        h:update("want for nothing?")
        eq(h:final(nil, true), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        eq(to_hex(hmac:new(key):final(msg)), "750c783e6ab0b503eaa86e310a5db738", "default MD5")

        local sha256 = require("resty.sha256")
        local s = sha256:new()
        s:update("a")
        s:update("bc")
        eq(to_hex(s:final()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        s:update("x")
        s:reset()
        eq(to_hex(s:final()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "reset gives the empty digest")
        local md5 = require("resty.md5"):new()
        md5:update("abc")
        eq(to_hex(md5:final()), "900150983cd24fb0d6963f7d28e17f72")
        local sha1 = require("resty.sha1"):new()
        sha1:update("abc")
        eq(to_hex(sha1:final()), "a9993e364706816aba3e25717850c26c9cd0d89d")

        eq(ngx.crc32_long("123456789"), 3421780262)
        eq(ngx.crc32_short("hello"), 907060870)

        eq(ngx.encode_base64("hello"), "aGVsbG8=")
        eq(ngx.encode_base64("hello", true), "aGVsbG8")
        eq(ngx.decode_base64("aGVsbG8="), "hello")
        eq(ngx.decode_base64("aGVsbG8"), "hello", "padding optional")
        eq(ngx.decode_base64(""), "")
        eq(ngx.decode_base64("a"), nil, "4k+1 length")
        eq(ngx.decode_base64("aGV$bG8="), nil, "invalid byte")
        eq(ngx.decode_base64("__4"), nil, "url alphabet is not standard")
        local b64 = require("ngx.base64")
        eq(b64.encode_base64url("\255\254"), "__4")
        eq(b64.decode_base64url("__4"), "\255\254")
        eq(ngx.encode_base64("\255\254"), "//4=")

        eq(#require("resty.random").bytes(16), 16)
        eq(#native.random_bytes(0), 0)
        raises(function() native.random_bytes(-1) end, "bad random byte count")
        local uuid = require("resty.jit-uuid")
        local u = uuid.generate_v4()
        eq(uuid.is_valid(u), true, "uuid shape " .. u)
        eq(u:sub(15, 15), "4", "version nibble")
    "#,
    );
}

#[test]
fn uri_escaping_and_args_follow_ngx() {
    check(
        "uri.lua",
        r#"
        eq(ngx.escape_uri("a b/c?d=é~._-"), "a%20b%2Fc%3Fd%3D%C3%A9~._-")
        eq(ngx.escape_uri("a b/c?d=é#", 0), "a%20b/c%3Fd=%C3%A9%23")
        eq(ngx.escape_uri("plain"), "plain")
        eq(ngx.unescape_uri("b%20r56+7"), "b r56 7")
        eq(ngx.unescape_uri("%ZZ%4"), "%ZZ%4", "malformed escapes kept")
        eq(ngx.unescape_uri("%E2%82%AC"), "€")

        eq(ngx.encode_args({foo = 3, ["b r"] = "hello world", flag = true, no = false,
                            multi = {"a", "b"}}),
           "b%20r=hello%20world&flag&foo=3&multi=a&multi=b")
        eq(ngx.encode_args({}), "")
        raises(function() ngx.encode_args({a = {}, b = print}) end, "as query arg value")

        local args = ngx.decode_args("a=1&b&c=x%20y+z&a=2&=z&&d=&a=3")
        eq(type(args.a), "table", "repeated key is an array")
        eq(args.a[1], "1")
        eq(args.a[3], "3")
        eq(args.b, true, "bare key")
        eq(args.c, "x y z")
        eq(args.d, "")
        eq(args[""], nil, "empty key skipped")
        local limited, err = ngx.decode_args("a=1&b=2&c=3", 2)
        eq(limited.c, nil)
        eq(err, "truncated")
        local all = require("apisix.core.string").decode_args("a=1&b=2&c=3")
        eq(all.c, "3", "core.string.decode_args is unlimited")
        eq(ngx.quote_sql_str("it's\n"), "'it\\'s\\n'")
    "#,
    );
}

#[test]
fn regex_match_find_and_gsub_follow_ngx_re() {
    check(
        "regex.lua",
        r#"
        local m = ngx.re.match("hello 1234 world", [[(?<word>[a-z]+) (\d+)(x)?]], "jo")
        eq(m[0], "hello 1234")
        eq(m[1], "hello")
        eq(m.word, "hello", "named group")
        eq(m[2], "1234")
        eq(m[3], false, "unmatched group is false")
        eq(ngx.re.match("abc", "x"), nil, "no match")

        local ctx = {pos = 1}
        local a = ngx.re.match("a1b2", [[\d]], "jo", ctx)
        eq(a[0], "1")
        eq(ctx.pos, 3)
        local b = ngx.re.match("a1b2", [[\d]], "jo", ctx)
        eq(b[0], "2")
        eq(ctx.pos, 5)

        eq(ngx.re.match("ABC", "abc", "i")[0], "ABC", "i flag")
        eq(ngx.re.match("a\nb", "a.b", "s")[0], "a\nb", "s flag")
        eq(ngx.re.match("x\nab", "^ab", "m")[0], "ab", "m flag")
        eq(ngx.re.match("abc", "a b c", "x")[0], "abc", "x flag")
        eq(ngx.re.match("xab", "ab", "a"), nil, "a flag anchors")
        eq(ngx.re.match("abx", "ab", "a")[0], "ab")
        raises(function() ngx.re.match("a", "a", "q") end, 'unknown flag "q"')
        local none, cerr = ngx.re.match("a", "(", "jo")
        eq(none, nil)
        eq(cerr:find("failed to compile regex", 1, true) ~= nil, true)

        local from, to = ngx.re.find("hello world", "wor")
        eq(from, 7)
        eq(to, 9)
        local f2, t2 = ngx.re.find("key=val", [[(\w+)=(\w+)]], "jo", nil, 2)
        eq(f2, 5)
        eq(t2, 7)
        local fe, te = ngx.re.find("abc", "x*")
        eq(fe, 1)
        eq(te, 0, "empty match: to = from - 1")

        local s, n = ngx.re.gsub("hello world", [[(?<w>o)]], "[$1${w}$$]")
        eq(s, "hell[oo$] w[oo$]rld")
        eq(n, 2)
        local s1, n1 = ngx.re.sub("aaa", "a", "b")
        eq(s1, "baa")
        eq(n1, 1)
        local s2 = ngx.re.gsub("a1b22", [[\d+]], function(c) return "<" .. c[0] .. ">" end, "jo")
        eq(s2, "a<1>b<22>")
        eq(ngx.re.gsub("baaa", "a*", "-"), "-b--", "empty matches like PCRE")
        eq(ngx.re.gsub("héllo", "l", "L"), "héLLo", "UTF-8 subjects")
        local bad, _, terr = ngx.re.gsub("a", "a", "$x")
        eq(bad, nil)
        eq(terr:find("invalid capturing variable name", 1, true) ~= nil, true)

        local words = {}
        for w in ngx.re.gmatch("one two  three", [[(\w+)]]) do
            words[#words + 1] = w[1]
        end
        eq(table.concat(words, ","), "one,two,three")
        local it = ngx.re.gmatch("ab", "x")
        eq(it(), nil)

        local split = require("ngx.re").split
        local parts = split("a,b,,c", ",")
        eq(#parts, 4)
        eq(parts[3], "")
        eq(parts[4], "c")
        local limited = split("a,b,c", ",", nil, nil, 2)
        eq(#limited, 2)
        eq(limited[2], "b,c")
        eq(#split("/a/b", "/"), 3)
        eq(table.concat(split("abc", ""), "|"), "a|b|c")
    "#,
    );
}

#[test]
fn time_natives_format_http_dates() {
    check(
        "time.lua",
        r#"
        eq(ngx.http_time(1290079655), "Thu, 18 Nov 2010 11:27:35 GMT")
        eq(ngx.cookie_time(1290079655), "Thu, 18-Nov-10 11:27:35 GMT")
        eq(ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"), 1290079655)
        eq(ngx.parse_http_time("Thursday, 18-Nov-10 11:27:35 GMT"), 1290079655, "RFC 850")
        eq(ngx.parse_http_time("Thu Nov 18 11:27:35 2010"), 1290079655, "asctime")
        eq(ngx.parse_http_time("yesterday"), nil)
        local t, now = ngx.time(), ngx.now()
        eq(t > 1600000000, true)
        eq(math.abs(now - t) < 2, true)
        eq(#ngx.today(), 10)
        eq(ngx.localtime():match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$") ~= nil, true)
        eq(#ngx.utctime(), 19)
        ngx.update_time()
    "#,
    );
}

#[test]
fn shdict_set_get_incr_and_expiry() {
    let lua = vm();
    lua.load(
        r#"
        local d = ngx.shared["test-basic"]
        eq(ngx.shared["test-basic"], d, "one object per name")
        local ok, err, forcible = d:set("k", "v", 0, 7)
        eq(ok, true)
        eq(err, nil)
        eq(forcible, false)
        local v, flags = d:get("k")
        eq(v, "v")
        eq(flags, 7)
        d:set("n", 10)
        local nv, nflags = d:get("n")
        eq(nv, 10)
        eq(nflags, nil, "no flags when 0")
        d:set("b", false)
        eq(d:get("b"), false)

        eq(d:incr("n", 5), 15)
        local r, e = d:incr("missing", 1)
        eq(r, nil)
        eq(e, "not found")
        eq(d:incr("fresh", 2, 40), 42, "incr with init")
        local r2, e2 = d:incr("k", 1)
        eq(r2, nil)
        eq(e2, "not a number")

        local aok, aerr = d:add("k", "other")
        eq(aok, false)
        eq(aerr, "exists")
        eq(d:add("new", 1), true)
        local rok, rerr = d:replace("absent", 1)
        eq(rok, false)
        eq(rerr, "not found")
        eq(d:replace("new", 2), true)
        eq(d:get("new"), 2)
        d:delete("new")
        eq(d:get("new"), nil)
        d:set("gone", "x")
        d:set("gone", nil)
        eq(d:get("gone"), nil, "set nil deletes")

        eq(d:ttl("k"), 0, "no expiry")
        local tnil, terr = d:ttl("absent")
        eq(tnil, nil)
        eq(terr, "not found")
        d:set("short", "s", 0.05)
        local ttl = d:ttl("short")
        eq(ttl > 0 and ttl <= 0.05, true, "ttl in range")
        eq(d:expire("k", 100), true)
        eq(d:ttl("k") > 99, true)
        local _, eerr = d:expire("absent", 1)
        eq(eerr, "not found")

        local keys = d:get_keys(0)
        eq(#keys >= 4, true)
        eq(d:capacity() > 0, true)
        eq(d:free_space() < d:capacity(), true)
        local _, kerr = d:get(nil)
        eq(kerr, "nil key")
        local _, emp = d:set("", 1)
        eq(emp, "empty key")
        local _, bad = d:set("t", {})
        eq(bad, "bad value type")
    "#,
    )
    .set_name("@shdict.lua")
    .exec()
    .unwrap_or_else(|e| panic!("{e}"));

    std::thread::sleep(std::time::Duration::from_millis(80));
    lua.load(
        r#"
        local d = ngx.shared["test-basic"]
        eq(d:get("short"), nil, "expired")
        local v, _, stale = d:get_stale("short")
        eq(v, "s")
        eq(stale, true)
        eq(d:flush_expired(), 1)
        eq(d:get_stale("short"), nil)
        d:flush_all()
        eq(d:get("k"), nil, "flush_all expires everything")
        eq(#d:get_keys(), 0)
    "#,
    )
    .set_name("@shdict_expiry.lua")
    .exec()
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn shdict_is_shared_between_worker_threads() {
    let writer = std::thread::spawn(|| {
        let lua = vm();
        lua.load(r#"assert(ngx.shared["test-threads"]:set("from", "thread one"))"#)
            .exec()
            .map_err(|e| e.to_string())
    });
    writer
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("{e}"));
    let reader = std::thread::spawn(|| {
        let lua = vm();
        lua.load(r#"return ngx.shared["test-threads"]:get("from")"#)
            .eval::<String>()
            .map_err(|e| e.to_string())
    });
    let seen = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen, "thread one");
}

#[test]
fn shdict_evicts_least_recently_used_when_full() {
    let lua = vm();
    lua.load(
        r#"
        local d = ngx.shared["test-evict"]
        for i = 1, 10000 do
            assert(d:set("k" .. i, i))
        end
        eq(d:get("k1"), 1, "touch k1 so k2 is the oldest")
        local ok, _, forcible = d:set("extra", 1)
        eq(ok, true)
        eq(forcible, true, "a live entry was evicted")
        eq(d:get("k2"), nil, "least recently used evicted")
        eq(d:get("k1"), 1)
        local sok, serr = d:safe_set("extra2", 1)
        eq(sok, false)
        eq(serr, "no memory", "safe_set never evicts")
    "#,
    )
    .set_name("@shdict_evict.lua")
    .exec()
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn schema_check_fills_defaults_into_the_same_table() {
    check(
        "schema.lua",
        r#"
        local core = require("apisix.core")
        local schema = {
            type = "object",
            properties = {
                function_uri = {type = "string"},
                timeout = {type = "integer", minimum = 100, default = 3000},
                ssl_verify = {type = "boolean", default = true},
                keepalive = {type = "boolean", default = false},
                authorization = {
                    type = "object",
                    properties = {
                        iam = {
                            type = "object",
                            properties = {
                                accesskey = {type = "string"},
                                secretkey = {type = "string"},
                                aws_region = {type = "string", default = "us-east-1"},
                            },
                            required = {"accesskey", "secretkey"},
                        },
                    },
                },
                tags = {type = "array", items = {type = "string"}, default = {}},
            },
            required = {"function_uri"},
        }
        local conf = {function_uri = "https://x", authorization = {iam = {accesskey = "a", secretkey = "s"}}}
        local iam = conf.authorization.iam
        local ok, err = core.schema.check(schema, conf)
        eq(ok, true, tostring(err))
        eq(conf.timeout, 3000, "default written in place")
        eq(conf.ssl_verify, true)
        eq(conf.keepalive, false, "false defaults too")
        eq(conf.authorization.iam, iam, "nested tables stay the same objects")
        eq(iam.aws_region, "us-east-1", "nested default")
        eq(type(conf.tags), "table")

        local ok2, err2 = core.schema.check(schema, {})
        eq(ok2, false)
        eq(err2, 'property "function_uri" is required')
        local _, err3 = core.schema.check(schema, {function_uri = 1})
        eq(err3, 'property "function_uri" validation failed: wrong type: expected string, got number')
        local _, err4 = core.schema.check(schema,
            {function_uri = "x", authorization = {iam = {secretkey = "s"}}})
        eq(err4, 'property "authorization" validation failed: property "iam" validation failed: property "accesskey" is required')
        local _, err5 = core.schema.check(schema, {function_uri = "x", timeout = 50})
        eq(err5, 'property "timeout" validation failed: expected 50 to be greater than 100')

        local validate = core.schema.valid({type = "array", items = {type = "integer"}})
        eq(validate({1, 2}), true)
        eq(validate(setmetatable({}, core.json.array_mt)), true)
        eq(validate({"x"}), false)
        eq(core.schema.TYPE_CONSUMER, 1)
        eq(core.schema.TYPE_METADATA, 2)
        local nok, nerr = core.schema.check({type = "object"}, "str")
        eq(nok, false)
        eq(type(nerr), "string")
    "#,
    );
}

#[test]
fn core_table_string_and_lrucache_helpers() {
    check(
        "core_helpers.lua",
        r#"
        local core = require("apisix.core")
        local t = core.table
        eq(t.nkeys({a = 1, b = 2, 3}), 3)
        local arr = {}
        eq(t.insert_tail(arr, "a", "b"), 2)
        eq(arr[2], "b")
        eq(t.try_read_attr({a = {b = {c = 1}}}, "a", "b", "c"), 1)
        eq(t.try_read_attr({a = 1}, "a", "b"), nil)
        eq(t.array_find({"x", "y"}, "y"), 2)
        eq(t.isarray({1, 2}), true)
        eq(t.isarray({1, x = 2}), false)
        eq(t.isempty({}), true)
        eq(t.maxn({1, 2}), 2, "falls back to table")
        local orig = {a = {b = 1}, s = {1}}
        orig.self = orig
        local copy = t.deepcopy(orig, {shallows = {"self.s"}})
        eq(copy.a ~= orig.a, true, "deep")
        eq(copy.a.b, 1)
        eq(copy.s, orig.s, "shallow path kept by reference")
        eq(copy.self, copy, "cycles preserved")
        eq(t.deep_eq({a = {1, 2}}, {a = {1, 2}}), true)
        eq(t.deep_eq({a = {1, 2}}, {a = {1, 3}}), false)
        local merged = t.merge({a = {x = 1}, b = 1}, {a = {y = 2}, c = 3})
        eq(merged.a.x, 1)
        eq(merged.a.y, 2)
        eq(merged.c, 3)
        local code, _, node = t.patch({a = {b = 1}}, "a/b", 5)
        eq(code, nil)
        eq(node.a.b, 5)
        eq(t.set_eq({a = true}, {a = true}), true)
        local c = t.clone({1, 2})
        eq(c[2], 2)
        t.clear(c)
        eq(c[1], nil)

        local s = core.string
        eq(s.find("a.b", "."), 2, "plain find")
        eq(s.has_prefix("/aws/x", "/aws"), true)
        eq(s.has_suffix("file.lua", ".lua"), true)
        eq(s.has_suffix("a", "abc"), false)
        eq(s.rfind_char("a/b/c", "/"), 4)
        eq(s.format("%d", 3), "3", "falls back to string")

        local calls = 0
        local lru = core.lrucache.new({count = 2, ttl = 60})
        local function create(x) calls = calls + 1 return {x = x} end
        local o1 = lru("k", "v1", create, 1)
        eq(lru("k", "v1", create, 2), o1, "cached while the version matches")
        eq(calls, 1)
        local o2 = lru("k", "v2", create, 3)
        eq(o2.x, 3, "a new version recreates")
        eq(calls, 2)
        lru("a", 1, create, 1)
        lru("b", 1, create, 1)
        lru("k", "v2", create, 4)
        eq(calls, 5, "count bounds the cache")
        local ctx = {conf_type = "route", conf_id = "1", conf_version = 7}
        eq(core.lrucache.plugin_ctx_id(ctx, "x"), "route#1#x#7")
        local plru = core.lrucache.new({type = "plugin"})
        eq(core.lrucache.plugin_ctx(plru, ctx, nil, create, 9).x, 9)

        local rl = require("resty.lrucache").new(2)
        rl:set("a", 1)
        rl:set("b", 2)
        eq(rl:get("a"), 1)
        rl:set("c", 3)
        eq(rl:get("b"), nil, "b was least recently used")
        eq(rl:get("a"), 1)
        rl:set("t", "old", -1)
        rl:set("t", "v", 0.001)
        eq(rl:count(), 2)
        rl:delete("t")
        eq(rl:get("t"), nil)

        eq(core.version.VERSION, "3.18.0")
        eq(core.id.get(), "test-instance")
        eq(core.config.local_conf().apisix.node_listen[1], 9080)
        eq(core.config.fetch_created_obj("/routes"), nil)
        local ev, eerr = core.etcd.get("/x")
        eq(ev, nil)
        eq(eerr, "etcd is not used by this gateway")
        local pooled = core.tablepool.fetch("p", 0, 4)
        pooled.x = 1
        core.tablepool.release("p", pooled)
        eq(core.tablepool.fetch("p", 0, 4).x, nil, "released tables are cleared")
        eq(require("apisix.plugin").plugin_metadata("none"), nil)
        core.log.info("info line ", 1, nil, true, {})
        core.log.new("[prefix] ").warn("x")
        eq(tostring(core.log.delay_exec(function(a, b) return a .. b end, "x", "y")), "xy")
    "#,
    );
}

#[test]
fn utils_resolve_var_and_addresses() {
    check(
        "utils.lua",
        r#"
        local core = require("apisix.core")
        local u = core.utils
        local vars = {host = "example.com", port = 8080, empty = nil}
        local s, err, n = u.resolve_var("$host:${port}/x", vars)
        eq(s, "example.com:8080/x")
        eq(err, nil)
        eq(n, 2)
        eq(u.resolve_var("${missing ?? fallback}-$host", vars), "fallback-example.com")
        eq(u.resolve_var("${missing}x", vars), "x", "unknown vars become empty")
        eq(u.resolve_var([[\$host]], vars), [[\$host]], "escaped dollar kept")
        eq(u.resolve_var("no vars", vars), "no vars")
        eq(u.resolve_var("$host", vars, function(v) return v:upper() end), "EXAMPLE.COM")

        local h, p = u.parse_addr("127.0.0.1:8080")
        eq(h, "127.0.0.1")
        eq(p, 8080)
        h, p = u.parse_addr("[::1]:9")
        eq(h, "[::1]")
        eq(p, 9)
        h, p = u.parse_addr("example.com")
        eq(h, "example.com")
        eq(p, 0)
        eq(u.escape_uri_control_chars("/a b\1"), "/a%20b%01")
        eq(#u.split_uri("/a/b"), 3)
        eq(u.uri_safe_encode("/a b/c"), "/a%20b/c")
        eq(type(u.gethostname()), "string")
        eq(#u.uuid(), 36)

        local ip = core.ip
        eq(ip.validate_cidr_or_ip("10.0.0.0/8"), true)
        eq(ip.validate_cidr_or_ip("::1"), true)
        eq(ip.validate_cidr_or_ip("fe80::/10"), true)
        eq(ip.validate_cidr_or_ip("10.0.0.256"), false)
        eq(ip.validate_cidr_or_ip("10.0.0.0/33"), false)
        eq(ip.validate_cidr_or_ip("nonsense"), false)
        local m = ip.create_ip_matcher({"127.0.0.1", "10.0.0.0/8", "::1", "fe80::/10", "::ffff:1.2.3.4"})
        eq(m:match("127.0.0.1"), true)
        eq(m:match("10.200.1.1"), true)
        eq(m:match("11.0.0.1"), false)
        eq(m:match("::1"), true)
        eq(m:match("fe80::1234"), true)
        eq(m:match("fec0::1"), false)
        eq(m:match("::ffff:1.2.3.4"), true)
        eq(ip.create_ip_matcher({"bad"}), nil)
        eq(u.parse_ipv4("1.2.3.4"), 16909060)
        eq(u.parse_ipv6("::1")[4], 1)
    "#,
    );
}

#[test]
fn request_headers_follow_ngx_get_headers_semantics() {
    check(
        "request_headers.lua",
        r#"
        local core = require("apisix.core")
        fake.headers = {["content-type"] = "application/json", ["x-multi"] = {"a", "b"},
                        ["x-api-key"] = "k"}
        local ctx = {}
        core.ctx.set_vars_meta(ctx)
        local h = core.request.headers(ctx)
        eq(ctx.headers, h, "cached in ctx.headers")
        eq(core.request.headers(ctx), h, "same table every call")
        eq(h["Content-Type"], "application/json", "case-insensitive")
        eq(h.content_type, "application/json", "underscore maps to dash")
        eq(h["x-multi"][2], "b", "repeated header is an array")
        eq(core.request.header(ctx, "X-Multi"), "a", "header() gives the first value")
        eq(core.request.header(ctx, "absent"), nil)

        fake.vars.http_x_api_key = "k"
        eq(ctx.var.http_x_api_key, "k")
        core.request.set_header(ctx, "X-Api-Key", "new")
        eq(fake.headers["x-api-key"], "new", "native updated")
        eq(h["x-api-key"], "new", "cache updated")
        fake.vars.http_x_api_key = "new"
        eq(ctx.var.http_x_api_key, "new", "ctx.var cache cleared")
        core.request.add_header(ctx, "X-Api-Key", "second")
        eq(h["x-api-key"][2], "second")
        eq(fake.headers["x-api-key"][2], "second")
        core.request.set_header(ctx, "X-Api-Key", nil)
        eq(h["x-api-key"], nil, "nil removes")
        eq(fake.headers["x-api-key"], nil)

        local raw = ngx.req.get_headers(100, true)
        eq(raw["Content-Type"], nil, "raw tables have no metatable")
        eq(ngx.req.get_headers()["CONTENT-TYPE"], "application/json")
        eq(core.request.get_method(), "GET")
        fake.vars.remote_addr = "10.0.0.1"
        fake.vars.host = "example.com"
        fake.vars.server_port = "9080"
        fake.vars.scheme = "http"
        eq(core.request.get_remote_client_ip(ctx), "10.0.0.1")
        eq(core.request.get_ip(ctx), "10.0.0.1")
        eq(core.request.get_host(ctx), "example.com")
        eq(core.request.get_port(ctx), 9080)
        eq(core.request.get_scheme(ctx), "http")
        eq(core.request.get_http_version(), 1.1)
    "#,
    );
}

#[test]
fn uri_args_and_body_follow_apisix() {
    check(
        "request_args.lua",
        r#"
        local core = require("apisix.core")
        fake.args = "with%20space=a%2Fb%20c&multi=m2&multi=m1&flag&a=*&a-=x"
        local ctx = {}
        local args = core.request.get_uri_args(ctx)
        eq(args["with space"], "a/b c", "decoded keys and values")
        eq(args.multi[1], "m2")
        eq(args.multi[2], "m1")
        eq(args.flag, true, "valueless arg is true")
        eq(args["a-"], "x")
        eq(ctx.req_uri_args, args, "cached")
        eq(core.request.get_uri_args(ctx), args)
        core.request.set_uri_args(ctx, {b = "2", a = "1 2"})
        eq(fake.args, "a=1%202&b=2")
        eq(ctx.req_uri_args, nil, "cache dropped")
        eq(ngx.req.get_uri_args().b, "2")
        ngx.req.set_uri_args("raw=1")
        eq(fake.args, "raw=1")

        fake.body = "hello"
        eq(core.request.get_body(nil, ctx), "hello")
        fake.vars.http_content_length = "5"
        local b, err = core.request.get_body(3, ctx)
        eq(b, nil)
        eq(err, "request size 5 is greater than the maximum size 3 allowed")
        fake.vars.http_content_length = nil
        local b2, err2 = core.request.get_body(3, {})
        eq(b2, nil)
        eq(err2, "request size 5 is greater than the maximum size 3 allowed")
        fake.body = nil
        eq(core.request.get_body(), nil, "no body")
        fake.body = '{"a":[1]}'
        eq(core.request.get_json_request_body_table().a[1], 1)
        fake.body = "k=v&x=1"
        eq(core.request.get_post_args({}).k, "v")
        eq(ngx.req.get_post_args().x, "1")
        eq(ngx.req.get_body_data(), "k=v&x=1")
        ngx.req.set_body_data("new")
        eq(fake.body, "new")
        eq(ngx.req.get_body_file(), nil)
        ngx.req.read_body()
    "#,
    );
}

#[test]
fn response_exit_contract_and_headers() {
    check(
        "response.lua",
        r#"
        local core = require("apisix.core")
        local EXIT = require("moongate.ngx").EXIT
        local ok, err = pcall(core.response.exit, 403, {message = "nope"})
        eq(ok, false)
        eq(err, EXIT, "ngx.exit raises the EXIT marker")
        eq(fake.exited, 403)
        eq(fake.status, 403)
        eq(table.concat(fake.out), '{"message":"nope"}\n', "table body is JSON plus newline")

        fake.out, fake.exited, fake.status = {}, nil, nil
        core.response.exit("just text", "more")
        eq(fake.exited, nil, "non-number code does not exit")
        eq(fake.status, nil)
        eq(table.concat(fake.out), "just textmore")

        fake.out = {}
        pcall(core.response.exit, 200, "raw", nil, "tail")
        eq(table.concat(fake.out), "rawtail", "strings raw, nils skipped")
        fake.out = {}
        pcall(core.response.exit, 204)
        eq(#fake.out, 0, "no body, nothing printed")
        eq(fake.exited, 204)

        fake.ctx.api_ctx = {}
        core.response.exit_insert_callback(function(code, body, headers, conf)
            return code + 1, {wrapped = body, conf = conf}, {["X-Cb"] = "1"}
        end, "c")
        fake.out = {}
        pcall(core.response.exit, 400, "b")
        eq(fake.exited, 401, "callback changes the code")
        local printed = table.concat(fake.out)
        eq(printed:find('"wrapped":"b"', 1, true) ~= nil, true, "callback body " .. printed)
        eq(printed:sub(-1), "\n")
        eq(fake.resp_headers["x-cb"], "1")

        fake.out = {}
        eq(core.response.exit_returned(400, "c"), nil, "exit_returned does not raise")
        eq(fake.exited, 401, "exit_returned runs the callbacks too")
        eq(table.concat(fake.out):find('"wrapped":"c"', 1, true) ~= nil, true)
        fake.ctx.api_ctx = nil

        core.response.set_header("X-A", "1", "X-B", 2)
        eq(fake.resp_headers["x-a"], "1")
        eq(fake.resp_headers["x-b"], "2")
        core.response.set_header({["X-C"] = "3"})
        eq(core.response.get_header("X-C"), "3")
        core.response.add_header("X-C", "4")
        eq(fake.resp_headers["x-c"][2], "4")
        core.response.set_header("X-A")
        eq(fake.resp_headers["x-a"], nil, "name only removes")
        core.response.set_header("X_D", 5)
        eq(fake.resp_headers["x-d"], "5", "a number value, a name with _")
        core.response.set_header("X-E", {"a", "b"})
        eq(fake.resp_headers["x-e"][2], "b", "a list value")
        core.response.set_header({["X-F"] = "6"}, nil)
        eq(fake.resp_headers["x-f"], "6", "a table of headers with a trailing nil")
        local native = require("moongate.native")
        local with_ids = native.header_id
        native.header_id = function() return nil end
        core.response.set_header("X-No-Id", "v")
        ngx.header["X-No-Id-Either"] = "w"
        native.header_id = with_ids
        eq(fake.resp_headers["x-no-id"], "v", "a name without an id goes by its text")
        eq(fake.resp_headers["x-no-id-either"], "w")
        core.response.set_header("X-G", "7")
        core.response.set_header("X-G", "8")
        eq(fake.resp_headers["x-g"], "8", "a name with an id, set twice")
        ngx.header["Content_Type"] = "text/plain"
        eq(fake.resp_headers["content-type"], "text/plain", "ngx.header maps _ to -")
        eq(ngx.header.content_type, "text/plain")
        fake.headers_sent = true
        raises(function() core.response.set_header("X", "1") end, "headers have already been sent")
        fake.headers_sent = false

        fake.resp_headers["content-length"] = "10"
        fake.resp_headers["etag"] = "x"
        core.response.clear_header_as_body_modified()
        eq(fake.resp_headers["content-length"], nil)
        eq(fake.resp_headers["etag"], nil)

        fake.vars.upstream_status = "502, 200"
        eq(core.response.get_upstream_status({}), 200)
        eq(core.response.get_response_source({}), "upstream")

        local ctx = {_plugin_name = "p"}
        ngx.arg[1], ngx.arg[2] = "ab", false
        eq(core.response.hold_body_chunk(ctx), nil)
        eq(ngx.arg[1], nil, "chunk withheld")
        ngx.arg[1], ngx.arg[2] = "cd", true
        eq(core.response.hold_body_chunk(ctx), "abcd", "whole body at eof")

        ngx.status = 201
        eq(ngx.status, 201)
        eq(fake.status, 201)
        ngx.say("a", 1, true, nil, {"x", {"y"}})
        eq(fake.out[#fake.out], "a1truenilxy\n")
        ngx.print(ngx.null)
        eq(fake.out[#fake.out], "null")
    "#,
    );
}

#[test]
fn ngx_shim_exposes_ctx_var_and_rejects_missing_fields() {
    check(
        "ngx.lua",
        r#"
        raises(function() return ngx.nonexistent end, "ngx.nonexistent is not available in Moongate")
        raises(function() return ngx.req.raw_header end, "ngx.req.raw_header is not available in Moongate")
        raises(function() return ngx.resp.whatever end, "ngx.resp.whatever is not available in Moongate")
        raises(function() ngx.socket.tcp() end, "ngx.socket.tcp is not available in Moongate")
        raises(function() ngx.location.capture("/x") end, "ngx.location.capture is not available in Moongate")

        eq(ngx.OK, 0)
        eq(ngx.ERR, 4)
        eq(ngx.DEBUG, 8)
        eq(ngx.HTTP_UNAUTHORIZED, 401)
        eq(ngx.HTTP_OK, 200)
        eq(ngx.HTTP_POST, 8)
        eq(ngx.config.subsystem, "http")
        eq(ngx.config.ngx_lua_version, 10026)
        eq(ngx.worker.id(), 0)
        eq(ngx.worker.count(), 1)
        eq(ngx.worker.exiting(), false)
        eq(ngx.get_phase(), "access")
        eq(ngx.req.start_time(), 1700000000.5)
        eq(ngx.req.http_version(), 1.1)
        eq(ngx.req.is_internal(), false)

        fake.ctx.hello = "world"
        eq(ngx.ctx.hello, "world", "ngx.ctx is the request native's table")
        fake.vars.uri = "/x"
        eq(ngx.var.uri, "/x")
        ngx.var.upstream_uri = "/y"
        eq(fake.vars.upstream_uri, "/y")

        ngx.req.set_method(ngx.HTTP_POST)
        eq(fake.method, "POST")
        ngx.req.set_uri("/new")
        eq(fake.uri, "/new")
        ngx.req.set_header("X-N", 5)
        eq(fake.headers["x-n"], "5")
        ngx.req.clear_header("X-N")
        eq(fake.headers["x-n"], nil)

        local core = require("apisix.core")
        local ctx = {route_id = "r1"}
        core.ctx.set_vars_meta(ctx)
        fake.vars.remote_addr = "1.2.3.4"
        eq(ctx.var.remote_addr, "1.2.3.4")
        fake.vars.remote_addr = "changed"
        eq(ctx.var.remote_addr, "1.2.3.4", "cached for the request")
        eq(ctx.var.route_id, "r1", "APISIX vars come from ctx")
        local n = 0
        core.ctx.register_var("counter", function(c) n = n + 1 return n end, {no_cacheable = true})
        core.ctx.register_var("route_again", function(c) return c.route_id end)
        eq(ctx.var.counter, 1)
        eq(ctx.var.counter, 2, "no_cacheable")
        eq(ctx.var.route_again, "r1")
        ctx.var.upstream_uri = "/over"
        eq(ctx.var.upstream_uri, "/over")
        eq(fake.vars.upstream_uri, "/over", "writable vars reach the native")
        fake.var_sets = {}
        ctx.var.custom = "c"
        eq(ctx.var.custom, "c")
        eq(#fake.var_sets, 0, "other vars stay in the cache")
        core.ctx.release_vars(ctx)
        eq(ctx.var, nil)

        local t = ngx.thread.spawn(function(a) return a * 2 end, 21)
        local ok, v = ngx.thread.wait(t)
        eq(ok, true)
        eq(v, 42)
        local ok2 = ngx.timer.at(1, function() end)
        eq(ok2, true)
        eq(#fake.timers, 1)
        ngx.timer.every(5, function() end)
        eq(fake.timers[2].delay, 5)
        ngx.log(ngx.ERR, "bytes \255 ok ", nil, 1)
        ngx.sleep(0)
        eq(ngx.encode_base64(12), "MTI=", "numbers coerce to strings")
        eq(ngx.shared.coerce:set(1, "one"), true)
        eq(ngx.shared.coerce:get(1), "one", "number keys coerce")
        raises(function() ngx.escape_uri(nil) end)
        eq(require("ngx.process").type(), "worker")
        eq(require("table.new")(2, 0) ~= nil, true)
    "#,
    );
}

#[test]
fn penlight_path_and_stringx() {
    check(
        "penlight.lua",
        r#"
        local path = require("pl.path")
        eq(path.normpath("/a//b/../c/"), "/a/c")
        eq(path.normpath(""), ".")
        eq(path.normpath("//x"), "//x", "POSIX keeps a leading //")
        eq(path.normpath("///x"), "/x")
        eq(path.normpath("a/./b/"), "a/b")
        eq(path.normpath("../a"), "../a")
        eq(path.normpath("/.."), "/..", "penlight keeps it")
        eq(path.normpath("/2015-03-31/functions/f/invocations"), "/2015-03-31/functions/f/invocations")
        eq(path.basename("/a/b.txt"), "b.txt")
        eq(path.dirname("/a/b.txt"), "/a")
        eq(path.join("a", "b", "/c"), "/c")
        eq(path.join("a/", "b"), "a/b")
        local root, ext = path.splitext("/a/b.tar.gz")
        eq(root, "/a/b.tar")
        eq(ext, ".gz")
        eq(path.exists("/"), false)
        raises(function() path.normpath(nil) end, "argument 1 expected a 'string', got a 'nil'")

        local stringx = require("pl.stringx")
        eq(stringx.strip("  x y \n"), "x y")
        eq(stringx.lstrip("  x "), "x ")
        eq(stringx.rstrip("xx--", "-"), "xx")
        eq(stringx.strip("[a]", "[]"), "a")
        raises(function() stringx.strip({"a"}) end, "got a 'table'")
        local parts = stringx.split("a,b,,c", ",")
        eq(#parts, 4)
        eq(parts[3], "")
        local ws = stringx.split("  a  b ")
        eq(#ws, 2)
        eq(ws[2], "b")
        eq(#stringx.split("a,b,c", ",", 2), 2)
        eq(stringx.startswith("abc", "ab"), true)
        eq(stringx.endswith("abc", "bc"), true)
        eq(stringx.endswith("abc", {"x", "c"}), true)
        eq(stringx.replace("a.b.c", ".", "%"), "a%b%c")
        eq(stringx.join(",", {"a", "b"}), "a,b")
        eq(stringx.count("aaa", "a"), 3)
    "#,
    );
}

#[test]
fn net_url_parse_splits_every_part() {
    check(
        "net_url.lua",
        r#"
        local url = require("net.url")
        local u = url.parse("https://user:pw@Example.com:8443/a/b?x=1&y=%20z#frag")
        eq(u.scheme, "https")
        eq(u.host, "example.com")
        eq(u.port, 8443)
        eq(u.path, "/a/b")
        eq(u.query.x, "1")
        eq(u.query.y, " z")
        eq(u.fragment, "frag")
        eq(u.user, "user")
        eq(u.password, "pw")
        eq(u.authority, "user:pw@Example.com:8443")
        eq(tostring(u), "https://user:pw@example.com:8443/a/b?x=1&y=%20z#frag")

        local bare = url.parse("https://abc.lambda-url.us-east-1.on.aws")
        eq(bare.host, "abc.lambda-url.us-east-1.on.aws")
        eq(bare.path, "", "no path gives an empty string")
        eq(bare.port, nil)
        eq(next(bare.query), nil)

        local ip = url.parse("http://127.0.0.1:1980/api?a[]=1&a[]=2&b[c]=3")
        eq(ip.host, "127.0.0.1")
        eq(ip.port, 1980)
        eq(ip.query.a[2], "2")
        eq(ip.query.b.c, "3")
        eq(url.buildQuery({b = "2", a = "x y"}), "a=x%20y&b=2")
        eq(url.parseQuery("k=v").k, "v")
    "#,
    );
}

#[test]
fn resty_expr_evaluates_apisix_vars() {
    check(
        "expr.lua",
        r#"
        local expr = require("resty.expr.v1")
        local vars = {arg_version = "v2", http_x = "Hello", n = "10", remote_addr = "10.1.1.1",
                      list = {"a", "b"}}
        local function eval(rule)
            local e, err = expr.new(rule)
            assert(e, err)
            return e:eval(vars)
        end
        eq(eval({{"arg_version", "==", "v2"}}), true)
        eq(eval({{"arg_version", "~=", "v2"}}), false)
        eq(eval({{"n", ">", 5}, {"n", "<=", 10}}), true)
        eq(eval({{"n", "==", 10}}), true, "number comparison converts")
        eq(eval({{"n", ">=", 11}}), false)
        eq(eval({{"http_x", "~~", "^H"}}), true)
        eq(eval({{"http_x", "~*", "^h"}}), true)
        eq(eval({{"http_x", "~~", "^h"}}), false)
        eq(eval({{"arg_version", "in", {"v1", "v2"}}}), true)
        eq(eval({{"list", "has", "b"}}), true)
        eq(eval({{"arg_version", "!", "==", "v2"}}), false)
        eq(eval({{"remote_addr", "ipmatch", {"10.0.0.0/8"}}}), true)
        eq(eval({{"remote_addr", "ipmatch", "192.168.0.1"}}), false)
        eq(eval({"OR", {"arg_version", "==", "v1"}, {"n", "==", "10"}}), true)
        eq(eval({"AND", {"arg_version", "==", "v2"}, {"OR", {"n", "==", "1"}, {"n", "==", "10"}}}), true)
        eq(eval({"!AND", {"arg_version", "==", "v2"}}), false)
        eq(eval({"!OR", {"arg_version", "==", "v9"}}), true)
        eq(eval({{"missing", "==", "x"}}), false)
        eq(eval({}), true)
        local bad, err = expr.new({{"a", "=~", "b"}})
        eq(bad, nil)
        eq(err, "invalid operator '=~'")
        local flat, ferr = expr.new({"arg_version", "==", "v2"})
        eq(flat, nil)
        eq(ferr, "rule should be wrapped inside brackets")
        eq(expr.new({{"a", "~~", "("}}), nil, "bad regex rejected")
    "#,
    );
}

#[test]
fn resty_http_builds_the_request_for_the_native() {
    check(
        "resty_http.lua",
        r#"
        local http = require("resty.http")
        local httpc = http.new()
        httpc:set_timeout(3000)
        fake.http_response = {status = 201, headers = {["content-type"] = "text/plain",
                              ["x-multi"] = {"1", "2"}}, body = "made"}
        local res, err = httpc:request_uri("https://api.example.com:8443/fn?ignored=1", {
            method = "POST", body = "hello", query = {b = "2", a = "x y"},
            headers = {["X-Api-Key"] = "k"}, keepalive_timeout = 60000, keepalive_pool = 5,
            ssl_verify = false,
        })
        assert(res, err)
        eq(res.status, 201)
        eq(res.reason, "Created")
        eq(res.body, "made")
        eq(res.headers["Content-Type"], "text/plain", "case-insensitive response headers")
        eq(res.headers["x-multi"][2], "2")
        local req = fake.http_requests[1]
        eq(req.scheme, "https")
        eq(req.host, "api.example.com")
        eq(req.port, 8443)
        eq(req.method, "POST")
        eq(req.path, "/fn?a=x%20y&b=2", "table query replaces the uri's")
        eq(req.body, "hello")
        eq(req.headers["Content-Length"], "5")
        eq(req.headers["Host"], "api.example.com:8443", "non-default port kept")
        eq(req.headers["User-Agent"], "lua-resty-http/0.17.2 (Lua) ngx_lua/10026")
        eq(req.headers["X-Api-Key"], "k")
        eq(req.timeout_ms.connect, 3000)
        eq(req.timeout_ms.read, 3000)
        eq(req.ssl_verify, false)
        eq(req.ssl_server_name, "api.example.com")
        eq(req.keepalive, true)
        eq(req.keepalive_timeout, 60000)
        eq(req.keepalive_pool, 5)

        fake.http_response = nil
        local r2 = assert(httpc:request_uri("http://h/x?raw=%2F", {method = "PUT",
                          headers = {host = "override", ["user-agent"] = "ua"}}))
        eq(r2.body, "ok")
        local req2 = fake.http_requests[2]
        eq(req2.path, "/x?raw=%2F", "query string sent verbatim")
        eq(req2.headers["Content-Length"], "0", "PUT without body")
        eq(req2.headers.host, "override")
        eq(req2.headers["Host"], nil)
        eq(req2.headers["user-agent"], "ua")
        eq(req2.port, 80)
        eq(req2.ssl_verify, true)

        assert(httpc:request_uri("https://h", {query = "a=1"}))
        local req3 = fake.http_requests[3]
        eq(req3.path, "/?a=1")
        eq(req3.headers["Host"], "h", "default port omitted")
        eq(req3.headers["Content-Length"], nil, "GET without body")

        assert(httpc:request_uri("https://api.example.com:8443/fn?ignored=1", {query = "c=3"}))
        local again = fake.http_requests[4]
        eq(again.host, "api.example.com", "a URI parsed before gives the same request")
        eq(again.port, 8443)
        eq(again.path, "/fn?c=3")

        fake.http_error = "timeout"
        local r4, err4 = httpc:request_uri("http://h/")
        eq(r4, nil)
        eq(err4, "timeout")
        fake.http_error = nil

        local c = http.new()
        assert(c:connect({scheme = "http", host = "127.0.0.1", port = 1980}))
        local r5 = assert(c:request({path = "/p", headers = {}}))
        eq(r5:read_body(), "ok")
        eq(r5.body_reader(), "ok")
        eq(r5.body_reader(), nil)
        eq(c:set_keepalive(), 1)
        eq(c:close(), 1)
        local parsed = c:parse_uri("http://[::1]:81/a?b=1")
        eq(parsed[2], "[::1]")
        eq(parsed[3], 81)
        eq(parsed[4], "/a?b=1")
    "#,
    );
}

#[test]
fn log_native_accepts_every_level_and_bad_bytes() {
    let lua = vm();
    lua.load(
        r#"
        local native = require("moongate.native")
        for level = -1, 9 do
            native.log(level, "msg \255\254")
            eq(type(native.log_enabled(level)), "boolean")
        end
        local core = require("apisix.core")
        for _, name in ipairs({"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"}) do
            core.log[name]("x ", name)
        end
        eq(type(core.log.get_level()), "number")
    "#,
    )
    .exec()
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn regex_cache_is_per_vm_and_reused() {
    let lua = vm();
    let find: mlua::Function = lua
        .load(r#"return function(s) return ngx.re.find(s, [[b+]], "jo") end"#)
        .eval()
        .expect("find function");
    for _ in 0..3 {
        let (from, to): (Value, Value) = find.call("abbbc").expect("find");
        assert_eq!(from, Value::Integer(2));
        assert_eq!(to, Value::Integer(4));
    }
}

#[tokio::test]
async fn resty_http_yields_through_an_async_native() {
    let lua = vm();
    let native: Table = lua
        .globals()
        .get::<Table>("package")
        .and_then(|p| p.get::<Table>("loaded"))
        .and_then(|l| l.get::<Table>("moongate.native"))
        .expect("native table");
    let http_request = lua
        .create_async_function(|lua, req: Table| async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let path: String = req.get("path")?;
            let res = lua.create_table()?;
            res.set("status", 200)?;
            res.set("headers", lua.create_table()?)?;
            res.set("body", format!("async {path}"))?;
            Ok(res)
        })
        .expect("async native");
    native
        .set("http_request", http_request)
        .expect("set native");
    let f: mlua::Function = lua
        .load(
            r#"
            return function()
                local res, err = require("resty.http").new():request_uri("http://h/x")
                assert(res, err)
                return res.body
            end
        "#,
        )
        .eval()
        .expect("chunk");
    let body: String = f.call_async(()).await.expect("async call");
    assert_eq!(body, "async /x");
}
