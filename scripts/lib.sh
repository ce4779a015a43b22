# Shell helpers shared by bench/run and scripts/bolt, which source this file after defining
# `die MESSAGE` and `TMP` (a temp dir with a `logs/` folder, where each process NAME writes
# `logs/NAME.out`).

# Loopback ports: from a random base between 20000 and the kernel's ephemeral range (so no outgoing
# connection can hold one), skipping any port with a socket on it; never 9080/9081/9180/9443.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
PORT_SPAN=$(((EPHEMERAL_LOW - 20000 - 100) / 10))
((PORT_SPAN > 0)) || PORT_SPAN=1000
NEXT_PORT=$((20000 + (RANDOM % PORT_SPAN) * 10))
alloc_port() { # VAR
    while [[ -n "$(ss -Htan "sport = :$NEXT_PORT")" ]]; do NEXT_PORT=$((NEXT_PORT + 1)); done
    printf -v "$1" '%s' "$NEXT_PORT"
    NEXT_PORT=$((NEXT_PORT + 1))
}

wait_port() { # NAME PID PORT
    local i
    for i in $(seq 300); do
        [[ -n "$(ss -Htln "sport = :$3")" ]] && return 0
        kill -0 "$2" 2>/dev/null || die "$1 exited during start: $(tail -n 20 "$TMP/logs/$1.out")"
        sleep 0.1
    done
    die "$1 did not listen on port $3 within 30 s: $(tail -n 20 "$TMP/logs/$1.out")"
}

admin_put() { # ADMIN_PORT PATH JSON (with $ADMIN_KEY)
    local code
    code=$(curl -sS -o "$TMP/admin.out" -w '%{http_code}' -X PUT -H "X-API-KEY: $ADMIN_KEY" \
        -H 'Content-Type: application/json' --data-binary "$3" "http://127.0.0.1:$1/apisix/admin$2") \
        || die "Admin API on port $1 unreachable"
    [[ $code == 200 || $code == 201 ]] || die "PUT /apisix/admin$2 on port $1 answered $code: $(cat "$TMP/admin.out")"
}

# $TMP/cert.pem and $TMP/key.pem: a self-signed certificate for localhost (and bench.local).
self_signed_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,DNS:bench.local" \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1 || die "openssl could not make a certificate"
}

# A plugin directory: a copy of the repository's plugins/ plus the trivial `stamp` plugin.
plugin_dir() { # REPO DIR
    mkdir -p "$2"
    cp -R "$1/plugins/." "$2/"
    cat >"$2/stamp.lua" <<'LUA'
-- The bench's trivial plugin (the same as bench/plugin_overhead.rs): one response header.
local core = require("apisix.core")
local _M = { version = 0.1, priority = 10, name = "stamp", schema = { type = "object" } }
function _M.header_filter(conf, ctx)
    core.response.set_header("x-stamp", "1")
end
return _M
LUA
}
