"""Creates a user, reads it back, shows a validation error and the health.

    clients/python/.venv/bin/python clients/python/example.py [HOST:PORT]

HOST:PORT defaults to localhost:50051 (`make run`). Exits 0 when every step
behaved as documented.
"""

from __future__ import annotations

import sys
import uuid

from user_client import AlreadyExistsError, InvalidArgumentError, UserClient


def main(target: str) -> int:
    user_id = f"example-{uuid.uuid4().hex[:8]}"
    with UserClient(target, timeout=2.0) as client:
        print(f"health: {client.health()}")

        created = client.create_user(user_id, "Ada Lovelace", "ada@example.com", ttl_seconds=300)
        print(f"created {created.user} ttl={created.ttl_seconds}s expires {created.expire_time:%Y-%m-%dT%H:%M:%SZ}")

        stored = client.get_user(user_id, timeout=0.5)
        print(f"read    {stored.user} expires {stored.expire_time:%Y-%m-%dT%H:%M:%SZ}")

        try:
            client.create_user(user_id, "Someone Else", "else@example.com")
        except AlreadyExistsError as err:
            print(f"again   -> {err.code.name}")

        try:
            client.create_user("bad id", "", "x", ttl_seconds=0)
        except InvalidArgumentError as err:
            print(f"invalid -> {err.code.name}")
            for violation in err.violations:
                print(f"  {violation.field}: {violation.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"))
