#!/usr/bin/env python3
"""Find the concurrency knee of user-service: where latency starts to climb.

Starts a private redis-server and the release service (with no effective
concurrency limit) on free loopback ports, then drives GetUser with the
repository's loadgen at increasing numbers of calls in flight (8 .. 4096,
spread over many HTTP/2 connections). Per level it prints OK calls per
second, p50/p99 latency, the refused (RESOURCE_EXHAUSTED) count and the
too-late count (UNAVAILABLE past the Redis budget, DEADLINE_EXCEEDED,
CANCELLED). The knee is the highest level whose p99 is still
within KNEE_FACTOR of the lowest p99 seen while throughput keeps growing;
past it calls only queue (Little's law: more in flight at the same
throughput is longer waits). A second sweep with --limit N runs the same
levels against MAX_CONCURRENT_CALLS=N to show what the limit does.

Everything runs on 127.0.0.1 and stops by itself; processes are stopped by
pid. It is a benchmark, not a test: numbers depend on the machine and on
what else runs on it.

Usage: bench/knee.py [--seconds N] [--levels 8,16,...] [--limit N] [--skip-build]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import Proc, need, start_redis, start_service  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
LEVELS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# p99 may grow this much over the best p99 before we call it climbing.
KNEE_FACTOR = 2.0
# A limit far above any level: the first sweep measures the service unlimited.
UNLIMITED = 1_000_000
PROFILE = "release"


def loadgen(addr, callers, seconds):
    # Set by main() from --profile.
    connections = max(4, callers // 8)
    out = subprocess.run(
        [str(TARGET / PROFILE / "loadgen"), "--addr", addr, "--mode", "get", "-c", str(callers),
         "-m", str(connections), "-d", str(seconds), "--preload", "1000",
         "--deadline-ms", "2000", "--id-prefix", "knee", "--json",
         "--allow", "ResourceExhausted,DeadlineExceeded,Cancelled,Unavailable"],
        capture_output=True, text=True, timeout=seconds + 120,
    )
    if out.returncode != 0:
        sys.exit(f"knee: loadgen failed at {callers} callers:\n{out.stdout}{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["connections"] = connections
    return result


def sweep(tmp, redis_port, limit, levels, seconds, name):
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}", "MAX_CONCURRENT_CALLS": str(limit)}
    svc, addr = start_service(tmp, name, env)
    rows = []
    try:
        for callers in levels:
            r = loadgen(addr, callers, seconds)
            codes = r["codes"]
            ok = codes.get("Ok", 0)
            row = {
                "callers": callers,
                "connections": r["connections"],
                "ok_per_s": ok / r["seconds"],
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "refused": codes.get("ResourceExhausted", 0),
                # Past the Redis budget (UNAVAILABLE) or the caller's deadline.
                "late": sum(codes.get(c, 0) for c in ("DeadlineExceeded", "Cancelled", "Unavailable")),
                "calls": r["calls"],
            }
            rows.append(row)
            print(fmt(row), flush=True)
    finally:
        svc.stop()
    return rows


def fmt(row):
    return (f"| {row['callers']:>5} | {row['connections']:>4} | {row['ok_per_s']:>8.0f} | "
            f"{row['p50_ms']:>7.2f} | {row['p99_ms']:>8.2f} | {row['refused']:>8} | {row['late']:>8} |")


HEADER = ("| in flight | conns | OK/s | p50 ms | p99 ms | refused | too late |\n"
          "|---:|---:|---:|---:|---:|---:|---:|")


def knee(rows):
    """The highest level before p99 passes KNEE_FACTOR x the best p99 so far."""
    best = min(r["p99_ms"] for r in rows)
    chosen = rows[0]
    for row in rows:
        if row["p99_ms"] > KNEE_FACTOR * best:
            break
        chosen = row
    return chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per level")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    ap.add_argument("--limit", type=int, help="also sweep with MAX_CONCURRENT_CALLS=N")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--profile", default="release",
                    help="debug only to check the script itself; numbers need release")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    bench.SERVICE = TARGET / PROFILE / "user-service"
    levels = [int(x) for x in args.levels.split(",")]
    need("redis-server", "apt-get install redis-server")
    need("redis-cli", "apt-get install redis-tools")
    if not args.skip_build:
        profile = ["--release"] if PROFILE == "release" else []
        subprocess.run(["cargo", "build", "--locked", *profile, "--bins"], cwd=ROOT, check=True)
    print(f"knee: {os.cpu_count()} CPUs, {args.seconds:g} s per level, GetUser, "
          f"loadgen with 1 thread, callers/8 connections (at least 4)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="knee-") as tmp:
        tmp = Path(tmp)
        try:
            redis_port = start_redis(tmp, "redis")
            print(f"\nunlimited (MAX_CONCURRENT_CALLS={UNLIMITED}):\n{HEADER}")
            rows = sweep(tmp, redis_port, UNLIMITED, levels, args.seconds, "unlimited")
            k = knee(rows)
            peak = max(r["ok_per_s"] for r in rows)
            print(f"\nknee: {k['callers']} in flight ({k['ok_per_s']:.0f} OK/s, "
                  f"p99 {k['p99_ms']:.2f} ms; peak {peak:.0f} OK/s; best p99 "
                  f"{min(r['p99_ms'] for r in rows):.2f} ms)")
            if args.limit:
                print(f"\nMAX_CONCURRENT_CALLS={args.limit}:\n{HEADER}")
                sweep(tmp, redis_port, args.limit, levels, args.seconds, f"limit{args.limit}")
        finally:
            Proc.stop_all()
    print(f"\nknee: done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
