#!/usr/bin/env bash
# Runs the service on localhost:50051 for local development. When no Redis
# answers on REDIS_URL's default (127.0.0.1:6379), starts a throwaway
# redis-server there for as long as the service runs, and stops it by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ -n $redis_pid ]]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [[ -z ${REDIS_URL:-} && -z ${REDIS_CLUSTER_NODES:-} ]]; then
    if redis-cli -h 127.0.0.1 -p 6379 PING >/dev/null 2>&1; then
        echo "run: using the Redis already answering on 127.0.0.1:6379"
    else
        echo "run: starting a local redis-server on 127.0.0.1:6379 (stopped when the service stops)"
        redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no --loglevel warning --notify-keyspace-events "Kg\$xe" &
        redis_pid=$!
        for _ in $(seq 50); do
            redis-cli -h 127.0.0.1 -p 6379 PING >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
fi

cargo build --release --locked --quiet
# The binary is wherever cargo puts it: CARGO_TARGET_DIR, build.target-dir in
# a cargo config, or ./target. cargo metadata resolves all three.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
binary="$target_dir/release/user-service"
if [[ ! -x $binary ]]; then
    echo "run: no binary at $binary after cargo build (target directory from cargo metadata: ${target_dir:-none})" >&2
    exit 1
fi
# Not exec: the trap must stop the Redis started above when the service exits.
"$binary" "$@" &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null || true' INT TERM
status=0
wait "$service_pid" || status=$?
# A trapped signal interrupts the first wait; the second collects the real exit status.
if kill -0 "$service_pid" 2>/dev/null; then
    status=0
    wait "$service_pid" || status=$?
fi
exit "$status"
