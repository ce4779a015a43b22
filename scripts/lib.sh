# Shell helpers shared by bench/run and scripts/bolt, which source this file after defining
# `log MESSAGE`, `die MESSAGE` and, before calling what writes there, `TMP` (a temp dir with a
# `logs/` folder, where each process NAME writes `logs/NAME.out`).

apt_install() { # PACKAGE... : installs them with apt-get (through sudo when not root)
    [[ $# -eq 0 ]] && return
    log "installing $*"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

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

# A PEM file as one JSON string's content (newlines escaped), for the Admin API's `ssls`.
pem_json() { awk '{printf "%s\\n", $0}' "$1"; }

# nginx prefix dirs: each instance has its own (pid file, temp paths, error log).
nginx_common() { # PREFIX
    cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_http_common() { # PREFIX
    cat <<EOF
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

# PREFIX/nginx.conf: the origin, an nginx answering `200 hello world` on PORT, with keep-alive up
# to 1,000,000 requests per connection.
origin_nginx_conf() { # PREFIX PORT
    mkdir -p "$1"
    {
        nginx_common "$1"
        echo "http {"
        nginx_http_common "$1"
        cat <<EOF
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { return 200 "hello world"; }
    }
}
EOF
    } >"$1/nginx.conf"
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
