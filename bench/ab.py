#!/usr/bin/env python3
"""A/B of two service binaries in one run: CPU us per GetUser and idle RSS.

Wall-clock rates drift on this shared machine, so both binaries run side by
side against one private redis-server, alternating A, B, A, B..., each round
driven by h2load (pre-encoded GetUser frame, 32 streams over 2 connections)
for a few seconds; it prints each binary's service CPU (utime + stime from
/proc) per call, its median over the rounds, and each one's idle VmRSS.
Instruction counts, the stable half of an A/B, come from bench/cost.py.
Usage: bench/ab.py A_BINARY B_BINARY [--rounds N] [--seconds S]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost import frame, free_port, wait_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="user-service-ab-"))
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        services = {}
        for name, binary in (("A", args.a), ("B", args.b)):
            addr = f"127.0.0.1:{free_port()}"
            env = {"PATH": os.environ["PATH"], "LISTEN_ADDR": addr, "RUST_LOG": "warn",
                   "REDIS_URL": f"redis://127.0.0.1:{rport}"}
            p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_until(f"{name} to serve", lambda: subprocess.run(
                [binary, "health", "--addr", addr], capture_output=True).returncode == 0, 30)
            services[name] = (p, addr)
        # Idle RSS after start-up and one health probe, before any load.
        idle = {name: rss_kb(p.pid) for name, (p, _) in services.items()}
        get, create = tmp / "get.bin", tmp / "create.bin"
        get.write_bytes(frame([(1, b"ab-get")]))
        create.write_bytes(frame([(1, b"ab-get"), (2, b"AB Probe"), (3, b"ab@example.com")]))
        subprocess.run(["h2load", "-n", "1", "-d", str(create), "-H", "content-type: application/grpc",
                        "-H", "te: trailers", f"http://{services['A'][1]}/user.v1.UserService/CreateUser"],
                       capture_output=True, check=True)
        per_call = {"A": [], "B": []}
        for _ in range(args.rounds):
            for name, (p, addr) in services.items():
                before = cpu_ticks(p.pid)
                out = subprocess.run(
                    ["h2load", "-c", "2", "-m", "16", "-D", str(args.seconds), "-d", str(get),
                     "-H", "content-type: application/grpc", "-H", "te: trailers",
                     f"http://{addr}/user.v1.UserService/GetUser"],
                    capture_output=True, text=True, check=True).stdout
                used_us = (cpu_ticks(p.pid) - before) * 1_000_000 / CLK_TCK
                ok = next(int(line.split(",")[3].split()[0]) for line in out.splitlines()
                          if line.startswith("requests:"))
                per_call[name].append(used_us / max(ok, 1))
        for name, binary in (("A", args.a), ("B", args.b)):
            rounds = " ".join(f"{v:.1f}" for v in per_call[name])
            print(f"{name} {binary}: CPU us/GetUser median {statistics.median(per_call[name]):.1f} "
                  f"(rounds {rounds}), idle RSS {idle[name] / 1024:.1f} MB")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(20)


if __name__ == "__main__":
    main()
