#!/usr/bin/env python3
"""Instructions per call of the release service, counted by callgrind.

Wall-clock rates drift 2x between runs on a shared machine; instruction counts
do not. This starts a private redis-server and the release service under
`valgrind --tool=callgrind` (perf's instruction counter is not available on
this VM), then per RPC drives N calls and 2N calls, dumping the counters after
each with `callgrind_control --dump` (which also zeroes them), and prints
(I(2N) - I(N)) / N: the service's own instructions per call, with start-up,
connection set-up and anything else fixed per phase cancelled out.

  GetUser:    h2load, one pre-encoded gRPC frame (content-type application/grpc, te trailers).
  CreateUser: loadgen, a unique id per call (h2load can only repeat one body,
              and every repeat after the first would be ALREADY_EXISTS).

Both at 32 concurrent streams over 2 connections, as in `make bench`.

--check compares with bench/baseline.json and exits 1 when a value grows more
than 10% over it; raising the baseline is a deliberate commit (--write-baseline).
Processes are stopped by pid; everything runs on 127.0.0.1.
Usage: bench/cost.py [--calls N] [--skip-build] [--check] [--write-baseline] [--profile DIR]
"""

import argparse
import json
import os
import re
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
BASELINE = ROOT / "bench" / "baseline.json"
TOLERANCE = 0.10
CONNECTIONS, STREAMS = 2, 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool, how):
    if shutil.which(tool) is None:
        sys.exit(f"cost: {tool} is missing; install it with: {how}")


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"cost: timed out waiting for {what}")


def run(args, timeout=600):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        sys.exit(f"cost: {' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def frame(fields):
    """A protobuf message of (field number, bytes) string fields as one gRPC frame."""
    msg = b""
    for number, value in fields:
        msg += bytes([(number << 3) | 2, len(value)]) + value
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def h2load(addr, method, body, calls, conns=CONNECTIONS, streams=STREAMS):
    out = run(["h2load", "-c", str(conns), "-m", str(streams), "-n", str(calls),
               "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
               f"http://{addr}/user.v1.UserService/{method}"])
    ok = re.search(r"requests: .* (\d+) succeeded", out)
    if not ok or int(ok.group(1)) != calls:
        sys.exit(f"cost: h2load {method}: not every call succeeded:\n{out}")


def loadgen_create(addr, calls, prefix):
    run([str(LOADGEN), "--addr", addr, "--mode", "create", "-c", str(CONNECTIONS * STREAMS),
         "-m", str(CONNECTIONS), "-n", str(calls), "--preload", "0", "--deadline-ms", "60000",
         "--id-prefix", prefix, "--json"])


class Measured:
    """The service under callgrind; each dump holds the instructions since the last one."""

    def __init__(self, tmp, redis_port):
        self.tmp = tmp
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        env = {"PATH": os.environ["PATH"], "LISTEN_ADDR": self.addr, "RUST_LOG": "warn",
               "REDIS_URL": f"redis://127.0.0.1:{redis_port}"}
        self.out = tmp / "callgrind.out"
        self.log = open(tmp / "service.log", "wb")
        self.p = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}",
             "--dump-instr=no", "--collect-jumps=no",
             # Every dump names its functions in full, so each reads alone in callgrind_annotate.
             "--compress-strings=no", str(SERVICE)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_until("the service under callgrind to serve",
                   lambda: subprocess.run([str(SERVICE), "health", "--addr", self.addr],
                                          capture_output=True).returncode == 0, 120)
        self.dumps = 0

    def dump(self, label):
        """Dumps (and zeroes) the counters; returns the instructions since the last dump."""
        run(["callgrind_control", "--dump=" + label, str(self.p.pid)])
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        wait_until(f"callgrind dump {path.name}",
                   lambda: path.exists() and "totals:" in path.read_text(errors="replace"), 60)
        return path, int(re.search(r"^totals:\s+(\d+)", path.read_text(), re.M).group(1))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def measure(tmp, n, profile_dir):
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(rport := free_port()),
         "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    svc = None
    try:
        wait_until("redis", lambda: subprocess.run(
            ["redis-cli", "-p", str(rport), "PING"], capture_output=True, text=True).stdout.strip() == "PONG", 20)
        svc = Measured(tmp, rport)
        get = tmp / "get.bin"
        get.write_bytes(frame([(1, b"cost-get")]))
        create = tmp / "create.bin"
        create.write_bytes(frame([(1, b"cost-get"), (2, b"Cost Probe"), (3, b"cost@example.com")]))
        h2load(svc.addr, "CreateUser", create, 1, conns=1, streams=1)
        # Warm up: first-call initialisation (lazy statics, buffers, metric handles) is not per call.
        h2load(svc.addr, "GetUser", get, 200)
        loadgen_create(svc.addr, 200, "cost-warm")
        svc.dump("warmup")
        counts = {}
        for rpc, drive in [
            ("GetUser", lambda k, tag: h2load(svc.addr, "GetUser", get, k)),
            ("CreateUser", lambda k, tag: loadgen_create(svc.addr, k, f"cost-{tag}")),
        ]:
            drive(n, "a")
            _, one = svc.dump(f"{rpc}-n")
            drive(2 * n, "b")
            path, two = svc.dump(f"{rpc}-2n")
            counts[rpc] = (two - one) / n
            if profile_dir:
                shutil.copy(path, Path(profile_dir) / f"callgrind.{rpc}.2n.out")
        return counts
    finally:
        if svc:
            svc.stop()
        redis.send_signal(signal.SIGTERM)
        redis.wait(20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="N: calls of the first phase per RPC")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--check", action="store_true", help="fail when a value is >10%% over bench/baseline.json")
    ap.add_argument("--write-baseline", action="store_true", help="store this run as bench/baseline.json")
    ap.add_argument("--profile", help="keep the 2N dumps here, for callgrind_annotate")
    args = ap.parse_args()
    for tool, how in [("valgrind", "apt-get install valgrind"),
                      ("callgrind_control", "apt-get install valgrind"),
                      ("h2load", "apt-get install nghttp2-client"),
                      ("redis-server", "apt-get install redis-server"),
                      ("redis-cli", "apt-get install redis-tools")]:
        need(tool, how)
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                        "--bin", "user-service", "--bin", "loadgen"], cwd=ROOT, check=True)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix="user-service-cost-"))
    try:
        started = time.monotonic()
        counts = measure(tmp, args.calls, args.profile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"instructions per call (callgrind, N={args.calls}, {time.monotonic() - started:.0f}s):")
    for rpc, value in counts.items():
        print(f"  {rpc:<11} {value:>10.0f}")

    if args.write_baseline:
        BASELINE.write_text(json.dumps({rpc: round(v) for rpc, v in counts.items()}, indent=2) + "\n")
        print(f"cost: wrote {BASELINE.relative_to(ROOT)}")
    if args.check:
        baseline = json.loads(BASELINE.read_text())
        failed = False
        for rpc, limit in baseline.items():
            value = counts.get(rpc)
            if value is None:
                print(f"cost: {rpc} is in the baseline but was not measured")
                failed = True
                continue
            grown = value / limit - 1
            verdict = "FAIL" if grown > TOLERANCE else "ok"
            print(f"  {rpc:<11} {value:>10.0f} vs baseline {limit} ({grown:+.1%}) {verdict}")
            failed |= grown > TOLERANCE
        if failed:
            sys.exit(f"cost: instructions per call grew more than {TOLERANCE:.0%} over "
                     f"{BASELINE.relative_to(ROOT)}; make it cheaper, or raise the baseline in a commit that says why")


if __name__ == "__main__":
    main()
