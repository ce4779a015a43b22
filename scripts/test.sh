#!/usr/bin/env bash
# Installs what the test suite needs when it is missing, then runs every check CI runs:
# formatting, luacheck on the Lua code, clippy with warnings as errors, the whole test suite, and
# scripts/bolt, which builds the optimized binary (PGO, then BOLT, each from a training run) and
# checks that the result serves (it installs what it needs itself).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
# A C compiler and make build LuaJIT and jemalloc.
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v luacheck >/dev/null 2>&1 || need_apt+=(lua-check)
# The etcd tests start a real etcd server on loopback.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

cargo fmt --all --check
luacheck --no-color plugins lua
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
scripts/bolt
