#!/usr/bin/env python3
"""Benchmark user-service beside Redis's own ceiling, in one run.

Starts a private redis-server and the release service on free loopback ports,
then at 1, 32 and 128 concurrent callers measures:
  - redis-benchmark GET and SET ... NX EX 60 with the service's key and value shapes,
  - the service's GetUser and CreateUser (unique ids) with loadgen,
  - GetUser with h2load (pre-encoded gRPC frame) as an independent cross-check,
and a six-node local cluster row (service in cluster mode vs standalone);
at 32 callers the rest of a user's life: UpdateUser beside SET ... KEEPTTL,
RefreshUser beside GETEX, BatchGetUsers of 10 and 100 ids beside MGET of as
many keys (users/s), with GetUser measured right beside them.
Prints one table (req/s, p50, p99, service CPU us per call, ratio to Redis),
idle and peak RSS, and whether each target of the performance issue holds.

Everything runs on 127.0.0.1 and stops by itself; processes are stopped by pid.
Usage: bench/bench.py [--seconds N] [--skip-build] [--markdown FILE] [--lifecycle-only]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "target" / "release" / "user-service"
LOADGEN = ROOT / "target" / "release" / "loadgen"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The JSON the service stores for a loadgen user: same key and value shapes for redis-benchmark.
VALUE = '{"id":"bench-000000000042","name":"Load Test 42","email":"user42@example.com"}'
CALLERS = (1, 32, 128)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool, how):
    if shutil.which(tool) is None:
        sys.exit(f"bench: {tool} is missing; install it with: {how}")


class Proc:
    """A child process stopped by pid when the benchmark ends."""

    live = []

    def __init__(self, args, log, env=None):
        self.log = open(log, "wb")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        Proc.live.append(self)

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()

    @classmethod
    def stop_all(cls):
        for proc in reversed(cls.live):
            proc.stop()


def wait_until(what, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"bench: timed out waiting for {what}")


def redis_cli(port, *args):
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=30,
    ).stdout


def start_redis(tmp, name, *extra):
    port = free_port()
    d = tmp / name
    d.mkdir()
    Proc(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
          "--appendonly", "no", "--dir", str(d), *extra], d / "redis.log")
    wait_until(f"redis {name}", lambda: redis_cli(port, "PING").strip() == "PONG")
    return port


def start_service(tmp, name, env):
    port = free_port()
    full = {"PATH": os.environ["PATH"], "LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "warn", **env}
    proc = Proc([str(SERVICE)], tmp / f"{name}.log", env=full)
    addr = f"127.0.0.1:{port}"
    wait_until(f"service {name} SERVING",
               lambda: subprocess.run([str(SERVICE), "health", "--addr", addr],
                                      capture_output=True).returncode == 0)
    return proc, addr


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def redis_benchmark(port, callers, requests, *command):
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(callers),
         "-n", str(requests), "-r", "1000000", "--csv", *command],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout.strip().splitlines()[-1]
    # The test name holds unescaped quotes; the numbers are the last seven fields.
    nums = [float(x) for x in out.rstrip('"').rsplit('","', 7)[1:]]
    rps, _avg, _min, p50, _p95, p99, _max = nums
    return {"rate": rps, "p50": p50, "p99": p99}


def connections_for(callers):
    return 1 if callers == 1 else min(8, max(2, callers // 8))


def loadgen(addr, mode, callers, seconds, prefix, extra=()):
    out = subprocess.run(
        [str(LOADGEN), "--addr", addr, "--mode", mode, "-c", str(callers),
         "-m", str(connections_for(callers)), "-d", str(seconds), "--json",
         "--id-prefix", prefix, "--preload", "1000", *extra],
        capture_output=True, text=True, timeout=seconds + 120,
    )
    if out.returncode != 0:
        sys.exit(f"bench: loadgen failed:\n{out.stdout}\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rate": r["rate"], "p50": r["p50_ms"], "p99": r["p99_ms"], "calls": r["calls"]}


def grpc_frame(user_id):
    """A GetUserRequest{id} as one length-prefixed gRPC message."""
    body = user_id.encode()
    msg = bytes([0x0A, len(body)]) + body
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def h2load(addr, callers, seconds, frame_file):
    conns = connections_for(callers)
    streams = max(1, callers // conns)
    out = subprocess.run(
        ["h2load", "-c", str(conns), "-m", str(streams), "-D", str(seconds),
         "-d", str(frame_file), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{addr}/user.v1.UserService/GetUser"],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    rate, ok = 0.0, 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rate = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            ok = int(line.split(",")[3].split()[0])  # "N succeeded"
    return {"rate": rate, "calls": ok}


def measure_service(pid, run):
    before = cpu_ticks(pid)
    result = run()
    used_us = (cpu_ticks(pid) - before) * 1_000_000 / CLK_TCK
    calls = result.get("calls") or 1
    result["cpu_us"] = used_us / calls
    return result


def start_cluster(tmp):
    ports = []
    for i in range(6):
        port, bus = free_port(), free_port()
        ports.append(start_redis(tmp, f"node{i}", "--cluster-enabled", "yes",
                                 "--cluster-config-file", "nodes.conf",
                                 "--cluster-port", str(bus), "--cluster-node-timeout", "2000"))
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "1", "--cluster-yes"],
                   capture_output=True, check=True, timeout=60)
    wait_until("cluster_state:ok",
               lambda: all("cluster_state:ok" in redis_cli(p, "CLUSTER", "INFO") for p in ports), 60)
    # Replicas still loading their first sync would take CPU from the run.
    wait_until("replicas in sync",
               lambda: sum("master_link_status:up" in redis_cli(p, "INFO", "replication")
                           for p in ports) == 3, 60)
    return ports


def per_item(r, items):
    """A batch row counted in items (users, keys) per second."""
    return {**r, "rate": r["rate"] * items}


def lifecycle_rows(redis_port, addr, secs):
    """UpdateUser, RefreshUser and BatchGetUsers at 32 callers, each beside
    the Redis command that does the same work, and GetUser beside them."""
    c, n = 32, 150_000
    keys = [f"user:bench-p{i}" for i in range(100)]
    # GetUser first: its preload writes the user:bench-p<N> keys MGET reads.
    get = measure_service(addr[1], lambda: loadgen(addr[0], "get", c, secs, "bench"))
    rkeep = redis_benchmark(redis_port, c, n, "SET", "user:bench-__rand_int__", VALUE, "KEEPTTL")
    rgetex = redis_benchmark(redis_port, c, n, "GETEX", "user:bench-__rand_int__", "EX", "600")
    rmget10 = per_item(redis_benchmark(redis_port, c, n // 4, "MGET", *keys[:10]), 10)
    rmget100 = per_item(redis_benchmark(redis_port, c, n // 20, "MGET", *keys), 100)
    update = measure_service(addr[1], lambda: loadgen(addr[0], "update", c, secs, "bench"))
    refresh = measure_service(addr[1], lambda: loadgen(addr[0], "refresh", c, secs, "bench"))
    b10 = measure_service(addr[1], lambda: loadgen(addr[0], "batch", c, secs, "bench", ("--batch", "10")))
    b100 = measure_service(addr[1], lambda: loadgen(addr[0], "batch", c, secs, "bench", ("--batch", "100")))
    rows = [fmt_row("service GetUser, beside the rows below (loadgen)", c, get),
            fmt_row("redis-benchmark SET KEEPTTL", c, rkeep),
            fmt_row("service UpdateUser (loadgen; one EVAL: GET, SET KEEPTTL, PTTL)", c, update, rkeep),
            fmt_row("redis-benchmark GETEX EX", c, rgetex),
            fmt_row("service RefreshUser (loadgen; one EVAL: STRLEN, GETEX)", c, refresh, rgetex),
            fmt_row("redis-benchmark MGET 10 keys (keys/s)", c, rmget10),
            fmt_row("service BatchGetUsers ids=10 (users/s)", c, per_item(b10, 10), rmget10),
            fmt_row("redis-benchmark MGET 100 keys (keys/s)", c, rmget100),
            fmt_row("service BatchGetUsers ids=100 (users/s)", c, per_item(b100, 100), rmget100)]
    checks = [
        ("UpdateUser >= 50% of redis SET KEEPTTL at 32 callers", update["rate"] / rkeep["rate"] >= 0.5,
         f"{update['rate'] / rkeep['rate']:.2f}"),
        ("RefreshUser >= 50% of redis GETEX at 32 callers", refresh["rate"] / rgetex["rate"] >= 0.5,
         f"{refresh['rate'] / rgetex['rate']:.2f}"),
        ("BatchGetUsers(100) users/s >= 10x GetUser users/s at 32 callers",
         b100["rate"] * 100 >= 10 * get["rate"], f"{b100['rate'] * 100 / get['rate']:.1f}x"),
    ]
    return rows, checks


def fmt_row(name, callers, r, redis=None):
    ratio = f"{r['rate'] / redis['rate']:.2f}" if redis else ""
    p50 = f"{r['p50']:.3f}" if "p50" in r else "-"
    p99 = f"{r['p99']:.3f}" if "p99" in r else "-"
    cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else "-"
    return f"| {name} | {callers} | {r['rate']:.0f} | {p50} | {p99} | {cpu} | {ratio} |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=4, help="length of each service run")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--lifecycle-only", action="store_true",
                    help="only the UpdateUser/RefreshUser/BatchGetUsers rows")
    args = ap.parse_args()
    for tool, how in [("redis-server", "apt-get install redis-server"),
                      ("redis-benchmark", "apt-get install redis-tools"),
                      ("redis-cli", "apt-get install redis-tools"),
                      ("h2load", "apt-get install nghttp2-client")]:
        need(tool, how)
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                        "--bin", "user-service", "--bin", "loadgen"], cwd=ROOT, check=True)

    tmp = Path(tempfile.mkdtemp(prefix="user-service-bench-"))
    rows, checks = [], []
    try:
        redis_port = start_redis(tmp, "standalone")
        svc, addr = start_service(tmp, "service", {"REDIS_URL": f"redis://127.0.0.1:{redis_port}"})
        time.sleep(1)
        idle_kb = rss_kb(svc.pid, "VmRSS")
        if args.lifecycle_only:
            rows, checks = lifecycle_rows(redis_port, (addr, svc.pid), args.seconds)
            return report(rows, checks, None, args.markdown)
        frame = tmp / "get.bin"
        frame.write_bytes(grpc_frame("bench-p7"))
        served = 0
        secs = args.seconds
        results = {}
        for c in CALLERS:
            n = 20_000 if c == 1 else 150_000
            rset = redis_benchmark(redis_port, c, n, "SET", "user:bench-__rand_int__", VALUE, "NX", "EX", "60")
            rget = redis_benchmark(redis_port, c, n, "GET", "user:bench-__rand_int__")
            get = measure_service(svc.pid, lambda: loadgen(addr, "get", c, secs, "bench"))
            create = measure_service(svc.pid, lambda: loadgen(addr, "create", c, secs, f"bench-c{c}"))
            h2 = measure_service(svc.pid, lambda: h2load(addr, c, secs, frame))
            served += get["calls"] + create["calls"] + h2["calls"]
            results[c] = dict(rset=rset, rget=rget, get=get, create=create, h2=h2)
            rows += [fmt_row("redis-benchmark GET", c, rget),
                     fmt_row("service GetUser (loadgen)", c, get, rget),
                     fmt_row("service GetUser (h2load)", c, h2, rget),
                     fmt_row("redis-benchmark SET NX EX", c, rset),
                     fmt_row("service CreateUser (loadgen)", c, create, rset)]
            print(f"bench: {c} callers done", file=sys.stderr)
        life_rows, life_checks = lifecycle_rows(redis_port, (addr, svc.pid), secs)
        rows += life_rows

        # Top up to a million calls, then read RSS (the target is "after a million calls").
        if served < 1_000_000:
            missing = 1_000_000 - served
            subprocess.run([str(LOADGEN), "--addr", addr, "--mode", "mix", "-c", "64", "-m", "8",
                            "-n", str(missing), "--id-prefix", "bench-fill", "--preload", "1000",
                            "--json"], check=True, capture_output=True, timeout=600)
            served = 1_000_000
        peak_kb = rss_kb(svc.pid, "VmHWM")
        after_kb = rss_kb(svc.pid, "VmRSS")

        # The default runtime is one event loop (WORKER_THREADS=1); this row
        # shows what a two-thread work-stealing pool does on the same machine.
        svc2, addr2 = start_service(tmp, "service-2-threads", {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "WORKER_THREADS": "2"})
        get2 = measure_service(svc2.pid, lambda: loadgen(addr2, "get", 32, secs, "bench"))
        svc2.stop()
        rows.append(fmt_row("service GetUser, WORKER_THREADS=2 (loadgen)", 32, get2,
                            results[32]["rget"]))

        ports = start_cluster(tmp)
        _csvc, caddr = start_service(tmp, "cluster-service", {
            "REDIS_MODE": "cluster",
            "REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in ports)})
        # The machine is shared and its speed drifts over a run, so the cluster
        # is compared with standalone measured again right beside it.
        sget = loadgen(addr, "get", 32, secs, "bench")
        cget = loadgen(caddr, "get", 32, secs, "bench-cl")
        screate = loadgen(addr, "create", 32, secs, "bench-cs-c")
        ccreate = loadgen(caddr, "create", 32, secs, "bench-cl-c")
        rows += [fmt_row("standalone GetUser, beside the cluster (loadgen)", 32, sget),
                 fmt_row("cluster GetUser (loadgen)", 32, cget, sget),
                 fmt_row("standalone CreateUser, beside the cluster (loadgen)", 32, screate),
                 fmt_row("cluster CreateUser (loadgen)", 32, ccreate, screate)]
    finally:
        Proc.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    r32, r1 = results[32], results[1]
    agree = abs(r32["h2"]["rate"] - r32["get"]["rate"]) / max(r32["get"]["rate"], 1)
    checks = [
        ("GetUser >= 50% of redis GET at 32 callers", r32["get"]["rate"] / r32["rget"]["rate"] >= 0.5,
         f"{r32['get']['rate'] / r32['rget']['rate']:.2f}"),
        ("CreateUser >= 50% of redis SET NX EX at 32 callers",
         r32["create"]["rate"] / r32["rset"]["rate"] >= 0.5,
         f"{r32['create']['rate'] / r32['rset']['rate']:.2f}"),
        ("h2load and loadgen agree within 20% (GetUser, 32)", agree <= 0.2, f"{agree:.0%} apart"),
        ("p99 < 3 ms at 32 callers (GetUser, CreateUser)",
         max(r32["get"]["p99"], r32["create"]["p99"]) < 3.0,
         f"{r32['get']['p99']:.2f} / {r32['create']['p99']:.2f} ms"),
        ("1 caller: p50 <= redis p50 + 0.1 ms (GetUser)", r1["get"]["p50"] <= r1["rget"]["p50"] + 0.1,
         f"{r1['get']['p50']:.3f} vs {r1['rget']['p50']:.3f} ms"),
        ("1 caller: p50 <= redis p50 + 0.1 ms (CreateUser)",
         r1["create"]["p50"] <= r1["rset"]["p50"] + 0.1,
         f"{r1['create']['p50']:.3f} vs {r1['rset']['p50']:.3f} ms"),
        ("RSS < 30 MB after a million calls", peak_kb < 30 * 1024, f"peak {peak_kb / 1024:.1f} MB"),
        ("RSS < 10 MB idle", idle_kb < 10 * 1024, f"{idle_kb / 1024:.1f} MB"),
        ("cluster >= 80% of standalone (GetUser, CreateUser at 32)",
         min(cget["rate"] / sget["rate"], ccreate["rate"] / screate["rate"]) >= 0.8,
         f"{cget['rate'] / sget['rate']:.2f} / {ccreate['rate'] / screate['rate']:.2f}"),
        *life_checks,
    ]
    memory = (f"Service RSS: idle {idle_kb / 1024:.1f} MB, after {served} calls {after_kb / 1024:.1f} MB "
              f"(peak {peak_kb / 1024:.1f} MB).")
    report(rows, checks, memory, args.markdown)


def report(rows, checks, memory, markdown):
    """Prints the table and the targets (and writes them to `markdown`)."""
    lines = [
        "| workload | callers | req/s | p50 ms | p99 ms | service CPU us/call | ratio |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *([memory] if memory else []),
        "Ratios: service rows against the redis-benchmark row above them at the same callers; "
        "cluster rows against standalone measured right beside them. Batch rows count users "
        "(keys) per second: calls/s times ids per call.",
        "",
        "| target | holds | measured |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else 'NO'} | {value} |" for name, ok, value in checks],
    ]
    text = "\n".join(lines)
    print(text)
    if markdown:
        Path(markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
