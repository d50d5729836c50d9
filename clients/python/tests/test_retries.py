"""The retry policy of clients/service_config.json, as the Python client uses it,
against a real Redis restart under load: GetUser (idempotent, retried by gRPC)
never fails, while CreateUser (not retried) surfaces UNAVAILABLE to its caller.
Prints one RETRY-COUNTS line (pytest -s, or -rP, shows it)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

from user_client import UnavailableError, UserClient, UserServiceError

# Concurrent GetUser callers, and the users they read.
READERS = 4
STORED_USERS = 20
# A generous deadline: the retries (up to 5 attempts with backoff) fit inside it.
CALL_TIMEOUT_SECONDS = 10.0


def test_a_redis_restart_fails_no_get_user_but_surfaces_create_user_failures(start_service) -> None:
    running = start_service()
    prefix = f"retry-{uuid.uuid4().hex[:8]}"
    ids = [f"{prefix}-{i}" for i in range(STORED_USERS)]
    with UserClient(running.addr, timeout=CALL_TIMEOUT_SECONDS) as client:
        for user_id in ids:
            client.create_user(user_id, "Retry Reader", "retry@example.com", ttl_seconds=3600)

        stop = threading.Event()
        restarted = threading.Event()
        lock = threading.Lock()
        gets: Counter[str] = Counter()
        creates: Counter[str] = Counter()
        get_failures: list[str] = []

        def read(worker: int) -> None:
            n = 0
            while not stop.is_set():
                try:
                    client.get_user(ids[(worker + n) % len(ids)])
                    outcome = "ok"
                except UserServiceError as err:
                    outcome = err.code.name
                    with lock:
                        get_failures.append(str(err))
                with lock:
                    gets[outcome] += 1
                n += 1

        def create() -> None:
            n = 0
            while not stop.is_set():
                try:
                    client.create_user(f"{prefix}-c{n}", "Retry Writer", "retry@example.com")
                    outcome = "ok"
                except UnavailableError:
                    outcome = "UNAVAILABLE"
                except UserServiceError as err:
                    outcome = err.code.name
                with lock:
                    creates[outcome] += 1
                n += 1

        workers = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
        workers.append(threading.Thread(target=create))
        for worker in workers:
            worker.start()
        try:
            _wait_until(lambda: gets["ok"] >= 100 and creates["ok"] >= 20, "the load is running")
            # Down until a create has seen it (so the outage is never too short
            # to observe), then up again.
            running.redis.restart(
                while_down=lambda: _wait_until(lambda: creates["UNAVAILABLE"] >= 1, "a create fails")
            )
            restarted.set()
            # Calls succeed again on both methods after the restart.
            after = (gets["ok"], creates["ok"])
            _wait_until(
                lambda: gets["ok"] >= after[0] + 100 and creates["ok"] >= after[1] + 20,
                "calls succeed again after the restart",
            )
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=CALL_TIMEOUT_SECONDS + 5)

    print(f"RETRY-COUNTS get_user={dict(gets)} create_user={dict(creates)}")
    assert restarted.is_set()
    assert not get_failures, f"GetUser failed despite the retry policy: {get_failures[:5]} (of {len(get_failures)})"
    assert creates["UNAVAILABLE"] >= 1, f"no CreateUser failure surfaced during the restart: {dict(creates)}"


def _wait_until(condition, what: str, within: float = 30.0) -> None:
    """Polls `condition` (no fixed sleep stands in for a readiness check)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")
