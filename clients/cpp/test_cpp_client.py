"""The C++ client (user_client_e2e.cc, generated with protoc + grpc_cpp_plugin)
against the real service and a real Redis (clients/conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BINARY = HERE / "build" / "user_client_e2e"


def test_cpp_client_goes_through_a_users_whole_life(service) -> None:
    # make is a no-op when scripts/clients-test.sh has built it already.
    build = subprocess.run(["make", "-s", "-j2", "-C", str(HERE)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"C++ build failed:\n{build.stdout}\n{build.stderr}"

    run = subprocess.run([str(BINARY), service.addr], capture_output=True, text=True, timeout=60)

    print(run.stdout)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert run.stdout.rstrip().endswith("22 passed, 0 failed")
