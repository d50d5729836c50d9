#!/usr/bin/env bash
# Proto quality gate: fails when proto/ would hurt the clients generated from it.
#
#   1. protoc (the compiler build.rs uses) compiles every file with --fatal_warnings;
#   2. buf lint, rules STANDARD + COMMENTS: versioned package matching its
#      directory (user.v1 in proto/user/v1), a request and a response message
#      of its own per RPC (CreateUserRequest/CreateUserResponse), naming
#      conventions, no unused imports, and a leading comment on every service,
#      RPC, message, field, enum and enum value;
#   3. buf breaking, rules FILE, against the committed snapshot
#      clients/proto_gate/user.v1.image.json: a removed or renumbered field,
#      a renamed field, a changed type or presence, a removed message, enum
#      value or RPC, or a changed package fails; adding fields, messages and
#      RPCs passes.
#
# Usage:
#   scripts/proto-check.sh                      run the gate
#   scripts/proto-check.sh --update-snapshot    accept the current proto as the
#       new baseline (only after a deliberate, announced break, or after adding
#       to the API so later changes are checked against the additions too)
#   --proto-dir DIR --snapshot FILE             check another tree (the gate's own tests)
#
# Needs protoc (apt protobuf-compiler) and buf (pip buf-bin, pinned in
# clients/python/requirements.txt; scripts/clients-deps.sh installs both).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

proto_dir="$root/proto"
snapshot="$root/clients/proto_gate/user.v1.image.json"
update=0
while (($#)); do
    case "$1" in
        --update-snapshot) update=1 ;;
        --proto-dir) proto_dir="$(cd "$2" && pwd)"; shift ;;
        --snapshot) snapshot="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "proto-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

buf="${BUF:-$root/clients/python/.venv/bin/buf}"
[[ -x $buf ]] || buf="$(command -v buf || true)"
[[ -n $buf ]] || { echo "proto-check: buf not found: run scripts/clients-deps.sh" >&2; exit 1; }
command -v protoc >/dev/null || { echo "proto-check: protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

# buf's v2 config takes module paths relative to the working directory, so
# every buf command runs from the parent of the proto root.
module_parent="$(dirname "$proto_dir")"
module="$(basename "$proto_dir")"
config="{\"version\":\"v2\",\"modules\":[{\"path\":\"$module\"}],
  \"lint\":{\"use\":[\"STANDARD\",\"COMMENTS\"]},
  \"breaking\":{\"use\":[\"FILE\"]}}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0

echo "proto-check: protoc --fatal_warnings ($(protoc --version))"
mapfile -t protos < <(cd "$proto_dir" && find . -name '*.proto' | sed 's|^\./||' | sort)
((${#protos[@]})) || { echo "proto-check: no .proto file under $proto_dir" >&2; exit 1; }
if ! protoc --fatal_warnings -I "$proto_dir" --descriptor_set_out="$tmp/set.binpb" \
    "${protos[@]}" 2>"$tmp/protoc.err" || [[ -s $tmp/protoc.err ]]; then
    sed 's/^/  /' "$tmp/protoc.err" >&2
    echo "proto-check: FAIL protoc reports errors or warnings" >&2
    failed=1
fi

echo "proto-check: buf lint (STANDARD, COMMENTS; buf $("$buf" --version))"
if ! (cd "$module_parent" && "$buf" lint --config "$config"); then
    echo "proto-check: FAIL lint (see the lines above: file:line:column: rule)" >&2
    failed=1
fi

if ((update)); then
    ((failed == 0)) || { echo "proto-check: not updating the snapshot of a proto that fails the checks" >&2; exit 1; }
    (cd "$module_parent" && "$buf" build --config "$config" --exclude-source-info -o "$tmp/image.json")
    # Indented, so a snapshot change is a reviewable diff.
    python3 -m json.tool --indent 2 "$tmp/image.json" >"$snapshot"
    echo "proto-check: wrote ${snapshot#"$root"/}; commit it with the proto change"
    exit 0
fi

echo "proto-check: buf breaking (FILE) against ${snapshot#"$root"/}"
[[ -f $snapshot ]] || { echo "proto-check: $snapshot missing: run $0 --update-snapshot" >&2; exit 1; }
if ! (cd "$module_parent" && "$buf" breaking --config "$config" --against "$snapshot" --exclude-imports); then
    cat >&2 <<EOF
proto-check: FAIL breaking change against the snapshot. Generated clients in
  the wild depend on field numbers, names and types: add a new field (a new
  number) instead, and mark the old one deprecated. For a deliberate break, move
  to a new package (user.v2) or, if everyone agrees, refresh the baseline with
  scripts/proto-check.sh --update-snapshot and say why in the commit.
EOF
    failed=1
fi

if ((failed)); then
    echo "proto-check: FAILED" >&2
    exit 1
fi
echo "proto-check: OK (${protos[*]})"
