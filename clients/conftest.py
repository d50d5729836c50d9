"""Fixtures for every test under clients/: a real redis-server and the real
user-service binary on free loopback ports.

- `service` (one per session): a fresh Redis and service, shared by tests that
  only create users with ids of their own.
- `start_service` (per test): a factory for a private Redis + service, for tests
  that pause or kill Redis.

Processes are stopped by pid in finalizers. Their log files are printed at the
end of a failed run. Nothing is skipped: a missing binary or tool fails the
run with the command that provides it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
SERVICE_BIN = Path(os.environ.get("USER_SERVICE_BIN", REPO / "target" / "debug" / "user-service"))
START_TIMEOUT_SECONDS = 20.0

# Log files of every process started in this run, printed when the run fails.
_LOGS: list[Path] = []


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: {install_hint}", pytrace=False)
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(cannot read {path}: {err})"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s; a stopped (SIGSTOP) process is continued first."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class RedisServer:
    """redis-server on a free port, no persistence, its files in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        binary = require_tool("redis-server", "apt-get install redis-server (or `make deps`)")
        self.port = free_port()
        self.log = workdir / f"redis-{self.port}.log"
        _LOGS.append(self.log)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--logfile", str(self.log),
             # The keyspace events WatchUsers needs, as deploy/ sets them.
             "--notify-keyspace-events", "Kg$xe"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        self._wait_for_pong()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _wait_for_pong(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"redis-server did not answer PING on {self.port}:\n{_tail(self.log)}", pytrace=False)

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        _stop(self.proc)

    def restart(self, while_down: Optional[Callable[[], None]] = None) -> None:
        """SAVE, stop, run `while_down`, and start again on the same port and
        directory: the users come back from the RDB file, as after a Redis
        restart in production."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"SAVE\r\n")
            if not sock.recv(16).startswith(b"+OK"):
                pytest.fail(f"SAVE refused on {self.port}:\n{_tail(self.log)}", pytrace=False)
        args = self.proc.args
        self.stop()
        if while_down is not None:
            while_down()
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        self._wait_for_pong()


class UserService:
    """The user-service binary on a free port, in front of `redis`."""

    def __init__(self, redis: RedisServer, workdir: Path, extra_env: Optional[dict[str, str]] = None) -> None:
        if not SERVICE_BIN.is_file():
            pytest.fail(
                f"{SERVICE_BIN} not found: run `cargo build --bin user-service` "
                "(scripts/clients-test.sh does) or set USER_SERVICE_BIN",
                pytrace=False,
            )
        self.redis = redis
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = workdir / f"user-service-{self.port}.log"
        _LOGS.append(self.log)
        # Only our settings: a developer's LISTEN_ADDR or REDIS_* must not leak in.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REDIS_", "USER_", "TLS_", "LISTEN_", "METRICS_"))}
        env.update(LISTEN_ADDR=self.addr, REDIS_URL=redis.url, RUST_LOG="info", LOG_FORMAT="text")
        env.update(extra_env or {})
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(SERVICE_BIN)], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        """Polls grpc.health.v1.Health/Check until SERVING (no fixed sleeps)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last = "no answer"
        with grpc.insecure_channel(self.addr) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"exited with {self.proc.returncode}"
                    break
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                except grpc.RpcError as err:
                    last = f"{err.code().name}"  # type: ignore[attr-defined]
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"user-service on {self.addr} never became SERVING ({last}):\n{_tail(self.log)}",
                    pytrace=False)

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Running:
    """A started Redis + service pair."""

    addr: str
    redis: RedisServer
    service: UserService


def start_pair(workdir: Path, extra_env: Optional[dict[str, str]] = None) -> Running:
    """Starts a Redis and a service in front of it; stop them with stop_pair."""
    redis = RedisServer(workdir)
    try:
        service = UserService(redis, workdir, extra_env)
    except BaseException:
        redis.stop()
        raise
    return Running(addr=service.addr, redis=redis, service=service)


def stop_pair(running: Running) -> None:
    running.service.stop()
    running.redis.stop()


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One Redis + service for the session; tests use ids of their own."""
    running = start_pair(tmp_path_factory.mktemp("service"))
    yield running
    stop_pair(running)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Factory of private Redis + service pairs, stopped when the test ends."""
    started: list[Running] = []

    def start(**extra_env: str) -> Running:
        running = start_pair(tmp_path, extra_env)
        started.append(running)
        return running

    yield start
    for running in started:
        stop_pair(running)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """On a failed run, show the end of each Redis and service log."""
    if exitstatus == 0:
        return
    for log in _LOGS:
        if log.exists():
            terminalreporter.write_sep("-", f"log {log.name}")
            terminalreporter.write_line(_tail(log))
