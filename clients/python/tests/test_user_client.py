"""The Python client against the real service and a real Redis (clients/conftest.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from user_client import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    User,
    UserClient,
    UserServiceError,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "example.py"


def new_id(prefix: str = "py") -> str:
    """A fresh id, so tests sharing the session's service never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(service) -> UserClient:
    with UserClient(service.addr, timeout=5.0) as c:
        yield c


def test_create_then_get_returns_the_user_and_its_expiry(client: UserClient) -> None:
    user_id = new_id()
    before = dt.datetime.now(dt.timezone.utc)

    created = client.create_user(user_id, "Ada Lovelace", "ada@example.com", ttl_seconds=300)
    stored = client.get_user(user_id)

    expected = User(id=user_id, name="Ada Lovelace", email="ada@example.com")
    assert created.user == expected
    assert created.ttl_seconds == 300
    assert created.expire_time is not None
    assert before + dt.timedelta(seconds=295) <= created.expire_time <= before + dt.timedelta(seconds=305)
    assert stored.user == expected
    assert stored.expire_time is not None
    assert abs((stored.expire_time - created.expire_time).total_seconds()) < 2


def test_create_without_ttl_applies_the_default_of_60_seconds(client: UserClient) -> None:
    created = client.create_user(new_id(), "user123", "user@user.com")

    assert created.ttl_seconds == 60


def test_duplicate_create_is_already_exists_and_keeps_the_stored_user(client: UserClient) -> None:
    user_id = new_id()
    client.create_user(user_id, "First", "first@example.com", ttl_seconds=300)

    with pytest.raises(AlreadyExistsError) as raised:
        client.create_user(user_id, "Second", "second@example.com", ttl_seconds=10)

    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert not raised.value.retryable
    stored = client.get_user(user_id)
    assert stored.user.name == "First"
    assert stored.expire_time is not None
    assert stored.expire_time > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=200)


def test_get_of_an_absent_user_is_not_found(client: UserClient) -> None:
    with pytest.raises(NotFoundError) as raised:
        client.get_user(new_id("absent"))

    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_invalid_create_lists_every_bad_field_in_bad_request(client: UserClient) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        client.create_user("bad id", "", "x", ttl_seconds=0)

    err = raised.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.fields == ["id", "name", "email", "ttl_seconds"]
    assert all(isinstance(v, FieldViolation) and v.description for v in err.violations)


def test_invalid_get_names_the_id(client: UserClient) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        client.get_user("")

    assert raised.value.fields == ["id"]


@pytest.mark.parametrize("service_name", ["", "user.v1.UserService"])
def test_health_is_serving(client: UserClient, service_name: str) -> None:
    assert client.health(service_name) == "SERVING"


# The message grpc-core gives a deadline that expired on the client's own timer;
# any other DEADLINE_EXCEEDED message was written by the server.
CLIENT_SIDE_DEADLINE_MESSAGE = "Deadline Exceeded"


def test_a_1ms_deadline_gives_deadline_exceeded_at_once(start_service) -> None:
    # Redis is paused so no answer can beat the deadline (on loopback a fast
    # GetUser may well finish inside 1 ms).
    running = start_service()
    with UserClient(running.addr) as client:
        client.health()  # connection established
        running.redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                client.get_user(new_id(), timeout=0.001)
            elapsed = time.monotonic() - started
        finally:
            running.redis.resume()
    assert elapsed < 0.2, f"a 1 ms deadline took {elapsed:.3f}s"


def test_the_server_answers_deadline_exceeded_within_the_callers_deadline(start_service) -> None:
    # A hung Redis (SIGSTOP) keeps the call waiting. A server that honours
    # grpc-timeout answers DEADLINE_EXCEEDED itself just inside the caller's
    # 300 ms; one that ignored it would still be waiting on its own 1 s Redis
    # budget, and only the client's timer would end the call. The server keeps
    # a margin of a few ms, so on a loaded machine the client's timer may win
    # one race: three tries, the server must win at least one.
    running = start_service()
    messages = []
    with UserClient(running.addr) as client:
        client.create_user(new_id(), "Warm Up", "warm@example.com")
        running.redis.pause()
        try:
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(DeadlineExceededError) as raised:
                    client.get_user(new_id(), timeout=0.3)
                elapsed = time.monotonic() - started
                assert elapsed < 0.9, f"DEADLINE_EXCEEDED came after {elapsed:.2f}s"
                messages.append(raised.value.message)
                if raised.value.message != CLIENT_SIDE_DEADLINE_MESSAGE:
                    break
        finally:
            running.redis.resume()
    assert messages[-1] != CLIENT_SIDE_DEADLINE_MESSAGE, f"only the client's timer fired: {messages}"


def test_a_hung_redis_with_a_long_deadline_is_unavailable_and_retryable(start_service) -> None:
    # With a deadline longer than the service's Redis budget (REDIS_TIMEOUT_MS,
    # 1 s by default) the service answers UNAVAILABLE: safe to retry. Without
    # the service config, so that gRPC's own retries do not turn it into the
    # deadline (test_retries.py covers those).
    running = start_service()
    with UserClient(running.addr, service_config="") as client:
        client.create_user(new_id(), "Warm Up", "warm@example.com")
        running.redis.pause()
        try:
            with pytest.raises(UnavailableError) as raised:
                client.get_user(new_id(), timeout=5.0)
        finally:
            running.redis.resume()
    assert raised.value.retryable


def test_the_example_script_runs(service) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), service.addr], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr
    assert "health: SERVING" in result.stdout
    assert "again   -> ALREADY_EXISTS" in result.stdout
    for field in ("id", "name", "email", "ttl_seconds"):
        assert f"  {field}: " in result.stdout


def test_update_with_etag_keeps_the_expiry_and_a_stale_etag_is_aborted(client: UserClient) -> None:
    user_id = new_id()
    created = client.create_user(user_id, "Ada", "ada@example.com", ttl_seconds=300)

    updated = client.update_user(user_id, name="Ada King", etag=created.etag)
    with pytest.raises(AbortedError):
        client.update_user(user_id, email="lost@example.com", etag=created.etag)

    assert updated.user == User(id=user_id, name="Ada King", email="ada@example.com")
    assert updated.etag not in ("", created.etag)
    assert updated.expire_time is not None and created.expire_time is not None
    assert abs((updated.expire_time - created.expire_time).total_seconds()) < 2
    assert client.get_user(user_id).etag == updated.etag


def test_refresh_moves_the_expiry_and_delete_makes_it_not_found(client: UserClient) -> None:
    user_id = new_id()
    created = client.create_user(user_id, "Ada", "ada@example.com", ttl_seconds=60)

    refreshed = client.refresh_user(user_id, ttl_seconds=3600)
    with pytest.raises(AbortedError):
        client.delete_user(user_id, etag="0" * 40)
    client.delete_user(user_id, etag=refreshed.etag)

    assert refreshed.ttl_seconds == 3600
    assert refreshed.etag == created.etag
    assert refreshed.expire_time is not None and created.expire_time is not None
    assert (refreshed.expire_time - created.expire_time).total_seconds() > 3500
    with pytest.raises(NotFoundError):
        client.get_user(user_id)
    with pytest.raises(NotFoundError):
        client.refresh_user(user_id)


def test_batch_get_answers_in_order_with_missing_ids_and_names_a_bad_one(client: UserClient) -> None:
    ids = [new_id() for _ in range(3)]
    for user_id in ids:
        client.create_user(user_id, "Batch", "batch@example.com")
    absent = new_id()

    found, missing = client.batch_get_users([ids[2], absent, ids[0], ids[2], ids[1]])
    with pytest.raises(InvalidArgumentError) as bad:
        client.batch_get_users([ids[0], ids[1], ids[2], "not valid"])

    assert [stored.user.id for stored in found] == [ids[2], ids[0], ids[1]]
    assert missing == [absent]
    assert all(len(stored.etag) == 40 for stored in found)
    assert bad.value.fields == ["ids[3]"]
def test_watch_yields_subscribed_then_each_change_to_matching_ids(client: UserClient) -> None:
    prefix = new_id("watch")
    events = client.watch(prefix + "-", timeout=30)
    assert next(events).kind == "SUBSCRIBED"

    client.create_user(new_id("elsewhere"), "Other", "other@example.com")
    client.create_user(prefix + "-ada", "Ada", "ada@example.com", ttl_seconds=1)

    seen = [(e.kind, e.id) for e in (next(events), next(events), next(events))]
    assert seen == [
        ("PUT", prefix + "-ada"),
        ("EXPIRY_CHANGED", prefix + "-ada"),
        ("EXPIRED", prefix + "-ada"),
    ]
    events.close()


def test_watch_with_a_bad_prefix_raises_invalid_argument(client: UserClient) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        next(client.watch("user:*"))
    assert raised.value.fields == ["id_prefix"]


def test_watch_ends_with_an_error_not_silently(client: UserClient) -> None:
    # A deadline is the simplest end to provoke; the stream raises, it does not just stop.
    events = client.watch(new_id("quiet"), timeout=1)
    assert next(events).kind == "SUBSCRIBED"
    with pytest.raises(UserServiceError) as raised:
        next(events)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
