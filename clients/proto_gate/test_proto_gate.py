"""The proto gate (scripts/proto-check.sh) run on modified copies of proto/:
each breaking or style-breaking edit must fail it, additive edits must pass.
The real proto/ is never touched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

GATE = REPO / "scripts" / "proto-check.sh"
SNAPSHOT = REPO / "clients" / "proto_gate" / "user.v1.image.json"
USER_PROTO = Path("user") / "v1" / "user.proto"

# Each edit: (old text, new text), applied once to user.proto; old must be present.
Edit = tuple[str, str]


def run_gate(tmp_path: Path, *edits: Edit) -> subprocess.CompletedProcess:
    proto = tmp_path / "proto"
    shutil.copytree(REPO / "proto", proto)
    path = proto / USER_PROTO
    text = path.read_text()
    for old, new in edits:
        assert old in text, f"the test's anchor is no longer in user.proto: {old!r}"
        text = text.replace(old, new, 1)
    path.write_text(text)
    return subprocess.run(
        [str(GATE), "--proto-dir", str(proto), "--snapshot", str(SNAPSHOT)],
        capture_output=True, text=True, timeout=120,
    )


def test_the_committed_proto_passes(tmp_path: Path) -> None:
    result = run_gate(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "proto-check: OK" in result.stdout


ADDITIONS: dict[str, list[Edit]] = {
    "new field": [(
        "  optional uint32 ttl_seconds = 4;\n",
        "  optional uint32 ttl_seconds = 4;\n  // Free-form note kept with the user.\n  string note = 5;\n",
    )],
    "new message and RPC": [
        (
            "  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n",
            "  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n\n"
            "  // Locks a user.\n  rpc LockUser(LockUserRequest) returns (LockUserResponse);\n",
        ),
        (
            "// Request to read one user.\n",
            "// Request to lock one user.\nmessage LockUserRequest {\n  // Id of the user to lock.\n"
            "  string id = 1;\n}\n\n// Empty answer to a lock.\nmessage LockUserResponse {}\n\n"
            "// Request to read one user.\n",
        ),
    ],
}


@pytest.mark.parametrize("name", ADDITIONS)
def test_additive_changes_pass(tmp_path: Path, name: str) -> None:
    result = run_gate(tmp_path, *ADDITIONS[name])

    assert result.returncode == 0, result.stdout + result.stderr


# name -> (edits, text the failure report must contain)
BREAKS: dict[str, tuple[list[Edit], str]] = {
    "field renamed": (
        [("  string email = 3;\n}", "  string mail = 3;\n}")],
        'changed name from "email" to "mail"',
    ),
    "field renumbered": (
        [("  // Id of the user to read.\n  string id = 1;", "  // Id of the user to read.\n  string id = 2;")],
        'Previously present field "1" with name "id" on message "GetUserRequest" was deleted',
    ),
    "field type changed": (
        [("  uint32 ttl_seconds = 3;", "  uint64 ttl_seconds = 3;")],
        'changed type from "uint32" to "uint64"',
    ),
    "field presence changed": (
        [("optional uint32 ttl_seconds = 4;", "uint32 ttl_seconds = 4;")],
        'Field "4" with name "ttl_seconds" on message "CreateUserRequest" changed cardinality',
    ),
    "field removed": (
        [("  // Id of the user to read.\n  string id = 1;\n", "")],
        'Previously present field "1" with name "id" on message "GetUserRequest" was deleted',
    ),
    "RPC removed": (
        [("  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n", "")],
        'Previously present RPC "GetUser" on service "UserService" was deleted',
    ),
    "message removed": (
        [
            ("  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n", ""),
            ("message GetUserRequest {", "message UnusedRequest {"),
        ],
        'Previously present message "GetUserRequest" was deleted',
    ),
    "package changed": (
        [("package user.v1;", "package user.v2;")],
        'File package changed from "user.v1" to "user.v2"',
    ),
    "field without a comment": (
        [("  // Id of the user to read.\n", "")],
        'Field "id" should have a non-empty comment',
    ),
    "trailing comment only": (
        [("  // Id of the user to read.\n  string id = 1;", "  string id = 1; // Id of the user to read.")],
        'Field "id" should have a non-empty comment',
    ),
    "message without a comment": (
        [("// Request to read one user.\n", "")],
        'Message "GetUserRequest" should have a non-empty comment',
    ),
    "RPC reusing another RPC's messages": (
        [(
            "  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n",
            "  rpc GetUser(GetUserRequest) returns (GetUserResponse);\n"
            "  // Reads a user again.\n  rpc ReadUser(GetUserRequest) returns (GetUserResponse);\n",
        )],
        'RPC request type "GetUserRequest" should be named "ReadUserRequest"',
    ),
    "unversioned package": (
        [("package user.v1;", "package user;")],
        'Package name "user" should be suffixed with a correctly formed version',
    ),
    "unused import (a protoc warning)": (
        [(
            'import "google/protobuf/timestamp.proto";',
            'import "google/protobuf/timestamp.proto";\nimport "google/protobuf/empty.proto";',
        )],
        "warning: Import google/protobuf/empty.proto is unused.",
    ),
}


@pytest.mark.parametrize("name", BREAKS)
def test_breaking_and_style_changes_fail(tmp_path: Path, name: str) -> None:
    edits, message = BREAKS[name]

    result = run_gate(tmp_path, *edits)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert "proto-check: FAILED" in result.stderr


def test_update_snapshot_makes_a_deliberate_change_the_new_baseline(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    shutil.copy(SNAPSHOT, snapshot)
    proto = tmp_path / "proto"
    shutil.copytree(REPO / "proto", proto)
    path = proto / USER_PROTO
    path.write_text(path.read_text().replace("  uint32 ttl_seconds = 3;", "  uint64 ttl_seconds = 3;", 1))
    gate = [str(GATE), "--proto-dir", str(proto), "--snapshot", str(snapshot)]

    assert subprocess.run(gate, capture_output=True, timeout=120).returncode != 0
    update = subprocess.run([*gate, "--update-snapshot"], capture_output=True, text=True, timeout=120)
    assert update.returncode == 0, update.stderr
    assert subprocess.run(gate, capture_output=True, timeout=120).returncode == 0
    assert '"TYPE_UINT64"' in snapshot.read_text()
