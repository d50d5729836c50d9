#!/usr/bin/env bash
# WatchUsers benchmark rows (issue 15): delivery latency from a CreateUser's
# answer to its PUT on each of 100 watchers at 1000 creates/s (p50/p99), and
# the CreateUser rate with 100 watchers attached vs none.
# Starts a private redis-server and the release service on free loopback
# ports, runs examples/watch_bench.rs against them, stops both by pid.
# Usage: bench/watch.sh [WATCHERS=100] [RATE=1000] [SECONDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "bench/watch.sh: apt-get install redis-server" >&2; exit 1; }
cargo build --locked --release --quiet --bin user-service --example watch_bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
redis_port=$(free_port)
addr=127.0.0.1:$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --notify-keyspace-events 'Kg$xe' --dir "$dir" --logfile "$dir/redis.log" &
pids+=($!)
env -i REDIS_URL="redis://127.0.0.1:$redis_port" LISTEN_ADDR="$addr" RUST_LOG=warn \
    target/release/user-service >"$dir/service.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    target/release/user-service health --addr "$addr" >/dev/null 2>&1 && break
    sleep 0.1
done
target/release/examples/watch_bench "$addr" "${1:-100}" "${2:-1000}" "${3:-5}"
