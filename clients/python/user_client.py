"""A small typed client for user.v1.UserService.

It wraps the stubs that clients/python/generate.sh generates from proto/ (into
clients/python/gen/, git-ignored) and turns gRPC failures into typed
exceptions: an INVALID_ARGUMENT carries the google.rpc.BadRequest field
violations the server sends, read with grpcio-status.

    with UserClient("localhost:50051") as client:
        created = client.create_user("ada", "Ada Lovelace", "ada@example.com", ttl_seconds=300)
        user = client.get_user("ada", timeout=0.5)   # a deadline for this call only

Every call has a deadline: `timeout` (seconds) per call, else the client's
default. The server keeps its Redis work inside that deadline and answers
DEADLINE_EXCEEDED when it cannot.

The channel follows clients/service_config.json: gRPC itself retries the
idempotent reads (GetUser, BatchGetUsers, Health/Check) on UNAVAILABLE and
RESOURCE_EXHAUSTED, with backoff, within the call's deadline; CreateUser is
never retried (a create whose answer was lost may have been applied, and a
second one would answer ALREADY_EXISTS), so its failures reach the caller.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

# The generated package `user.v1` lives in gen/ beside this file; its modules
# import each other as `user.v1.…`, so gen/ itself must be on sys.path.
_GEN = Path(__file__).resolve().parent / "gen"
if not (_GEN / "user" / "v1" / "user_pb2.py").exists():
    raise ImportError(f"{_GEN} holds no generated code: run clients/python/generate.sh")
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

from user.v1 import user_pb2, user_pb2_grpc  # noqa: E402  (needs the path above)

__all__ = [
    "AlreadyExistsError",
    "DeadlineExceededError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "StoredUser",
    "UnavailableError",
    "User",
    "UserClient",
    "UserServiceError",
    "WatchEvent",
]

DEFAULT_TIMEOUT_SECONDS = 5.0

# The repository's gRPC service config (retry policy per method).
SERVICE_CONFIG_PATH = Path(__file__).resolve().parent.parent / "service_config.json"


def load_service_config(path: Path = SERVICE_CONFIG_PATH) -> str:
    """The service config as the JSON text grpc's channel option takes; a
    file that is not JSON fails here, not silently inside grpc."""
    text = path.read_text(encoding="utf-8")
    json.loads(text)
    return text


# === values ===


@dataclass(frozen=True)
class User:
    """A user as the service stores it."""

    id: str
    name: str
    email: str


@dataclass(frozen=True)
class StoredUser:
    """A user and when Redis deletes it.

    `expire_time` is None only for a key written by hand without a TTL.
    `ttl_seconds` is the time to live a create applied; None for a get.
    """

    user: User
    expire_time: Optional[dt.datetime]
    ttl_seconds: Optional[int] = None
    # Opaque version of the stored user; pass it to update_user/delete_user
    # to change only this version.
    etag: str = ""


@dataclass(frozen=True)
class WatchEvent:
    """One message of a watch: `kind` is "SUBSCRIBED" (first, no id), "PUT",
    "DELETED", "EXPIRED" or "EXPIRY_CHANGED"; `event_time` is when the
    service received it from Redis."""

    kind: str
    id: str
    event_time: Optional[dt.datetime]


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, named by its proto name (`id`, `ttl_seconds`, ...)."""

    field: str
    description: str


# === errors ===


class UserServiceError(Exception):
    """A call failed; `code` is the gRPC status code, `message` the server's text."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        """True when the same call may succeed if sent again later."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class InvalidArgumentError(UserServiceError):
    """INVALID_ARGUMENT: `violations` names every bad field, in the server's order."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: list[FieldViolation]) -> None:
        super().__init__(code, message)
        self.violations = violations

    @property
    def fields(self) -> list[str]:
        """The bad fields' proto names."""
        return [v.field for v in self.violations]


class AlreadyExistsError(UserServiceError):
    """ALREADY_EXISTS: the id is taken and not yet expired; the stored user is untouched."""


class NotFoundError(UserServiceError):
    """NOT_FOUND: no user with that id, or it expired."""


class AbortedError(UserServiceError):
    """ABORTED: the etag is not the stored user's any more; nothing changed. Read again and retry."""


class DeadlineExceededError(UserServiceError):
    """DEADLINE_EXCEEDED: the call's deadline passed (on the client or the server)."""


class UnavailableError(UserServiceError):
    """UNAVAILABLE: the service or its Redis cannot be reached; safe to retry."""


_ERRORS: dict[grpc.StatusCode, type[UserServiceError]] = {
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def _error_from(err: grpc.RpcError) -> UserServiceError:
    """The typed exception for a failed call (grpc.RpcError is also a grpc.Call)."""
    call: grpc.Call = err
    code = call.code()
    message = call.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(code, message, _field_violations(call))
    return _ERRORS.get(code, UserServiceError)(code, message)


def _field_violations(call: grpc.Call) -> list[FieldViolation]:
    """The BadRequest field violations in the call's google.rpc.Status details."""
    status = rpc_status.from_call(call)
    if status is None:
        return []
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    return violations


# === client ===


class UserClient:
    """Calls user.v1.UserService and the standard health service on one channel."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        credentials: Optional[grpc.ChannelCredentials] = None,
        service_config: Optional[str] = None,
    ) -> None:
        """`target` is host:port; `timeout` the default deadline of each call in
        seconds; `credentials` switches to TLS (the default is plaintext);
        `service_config` the gRPC service config as JSON text (default:
        clients/service_config.json, "" for none)."""
        self._timeout = timeout
        config = load_service_config() if service_config is None else service_config
        # The channel's config wins over any the name resolver could supply
        # (DNS TXT records), so retries do not depend on the deployment.
        options = [("grpc.enable_retries", 1)]
        if config:
            options += [("grpc.service_config", config), ("grpc.service_config_disable_resolution", 1)]
        self._channel = (
            grpc.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(target, options=options)
        )
        self._users = user_pb2_grpc.UserServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> "UserClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls after this fail."""
        self._channel.close()

    def create_user(
        self,
        user_id: str,
        name: str,
        email: str,
        ttl_seconds: Optional[int] = None,
        *,
        timeout: Optional[float] = None,
    ) -> StoredUser:
        """Creates a user that expires after `ttl_seconds` (None: the server's default).

        Raises AlreadyExistsError, InvalidArgumentError, DeadlineExceededError,
        UnavailableError, or UserServiceError for any other status.
        """
        request = user_pb2.CreateUserRequest(id=user_id, name=name, email=email)
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        try:
            response = self._users.CreateUser(request, timeout=self._deadline(timeout))
        except grpc.RpcError as err:
            raise _error_from(err) from None
        return StoredUser(
            user=_user(response.user),
            expire_time=_time(response, "expire_time"),
            ttl_seconds=response.ttl_seconds,
            etag=response.etag,
        )

    def get_user(self, user_id: str, *, timeout: Optional[float] = None) -> StoredUser:
        """Returns a user and when it expires.

        Raises NotFoundError, InvalidArgumentError, DeadlineExceededError,
        UnavailableError, or UserServiceError for any other status.
        """
        try:
            response = self._users.GetUser(
                user_pb2.GetUserRequest(id=user_id), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as err:
            raise _error_from(err) from None
        return _stored(response)

    def update_user(
        self,
        user_id: str,
        *,
        name: Optional[str] = None,
        email: Optional[str] = None,
        etag: str = "",
        timeout: Optional[float] = None,
    ) -> StoredUser:
        """Changes the given fields (at least one), keeping the remaining expiry.

        With `etag`, only if it is still the stored user's. Raises AbortedError
        (stale etag, nothing changed), NotFoundError, InvalidArgumentError, ...
        """
        paths = [path for path, value in (("name", name), ("email", email)) if value is not None]
        if not paths:
            raise ValueError("update_user needs a name or an email")
        request = user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user_id, name=name or "", email=email or ""), etag=etag
        )
        request.update_mask.paths.extend(paths)
        try:
            response = self._users.UpdateUser(request, timeout=self._deadline(timeout))
        except grpc.RpcError as err:
            raise _error_from(err) from None
        return _stored(response)

    def delete_user(self, user_id: str, *, etag: str = "", timeout: Optional[float] = None) -> None:
        """Deletes a user; with `etag`, only if it is still the stored user's.

        Raises AbortedError, NotFoundError, InvalidArgumentError, ...
        """
        try:
            self._users.DeleteUser(
                user_pb2.DeleteUserRequest(id=user_id, etag=etag), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as err:
            raise _error_from(err) from None

    def refresh_user(
        self, user_id: str, ttl_seconds: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> StoredUser:
        """Reads a user and sets it to expire `ttl_seconds` from now (None: the
        server's default), in one step. Raises NotFoundError, InvalidArgumentError, ..."""
        request = user_pb2.RefreshUserRequest(id=user_id)
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        try:
            response = self._users.RefreshUser(request, timeout=self._deadline(timeout))
        except grpc.RpcError as err:
            raise _error_from(err) from None
        stored = _stored(response)
        return StoredUser(stored.user, stored.expire_time, response.ttl_seconds, stored.etag)

    def batch_get_users(
        self, user_ids: list[str], *, timeout: Optional[float] = None
    ) -> tuple[list[StoredUser], list[str]]:
        """Reads 1-100 users at once: the found ones in request order (each once)
        and the ids that were not found. Raises InvalidArgumentError (`ids`, `ids[N]`), ..."""
        try:
            response = self._users.BatchGetUsers(
                user_pb2.BatchGetUsersRequest(ids=user_ids), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as err:
            raise _error_from(err) from None
        return [_stored(found) for found in response.users], list(response.missing_ids)

    def watch(self, id_prefix: str = "", *, timeout: Optional[float] = None) -> Iterator[WatchEvent]:
        """Yields the changes to users whose id starts with `id_prefix`, after a
        first "SUBSCRIBED" event, until the stream ends.

        A watch has no default deadline (it runs until the caller stops
        iterating); `timeout` sets one. The stream never goes on past a gap:
        it ends by raising UnavailableError (events may have been missed: watch
        again), UserServiceError with RESOURCE_EXHAUSTED (too slow, or too many
        watches) or FAILED_PRECONDITION (Redis publishes no keyspace events).
        """
        call = self._users.WatchUsers(user_pb2.WatchUsersRequest(id_prefix=id_prefix), timeout=timeout)
        try:
            for message in call:
                yield WatchEvent(
                    kind=user_pb2.WatchUsersResponse.Kind.Name(message.kind),
                    id=message.id,
                    event_time=_time(message, "event_time"),
                )
        except grpc.RpcError as err:
            raise _error_from(err) from None
        finally:
            call.cancel()

    def health(self, service: str = "", *, timeout: Optional[float] = None) -> str:
        """The serving status ("SERVING", "NOT_SERVING", ...) of `service`
        ("" for the whole server, or "user.v1.UserService")."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.RpcError as err:
            raise _error_from(err) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def _deadline(self, timeout: Optional[float]) -> float:
        return self._timeout if timeout is None else timeout


def _stored(response: object) -> StoredUser:
    """The user, expiry and etag of a response that carries a user."""
    return StoredUser(
        user=_user(response.user),  # type: ignore[attr-defined]
        expire_time=_time(response, "expire_time"),
        etag=response.etag,  # type: ignore[attr-defined]
    )


def _user(message: user_pb2.User) -> User:
    return User(id=message.id, name=message.name, email=message.email)


def _time(message: object, field: str) -> Optional[dt.datetime]:
    """A Timestamp field as an aware UTC datetime, None when the field is unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return getattr(message, field).ToDatetime(tzinfo=dt.timezone.utc)
