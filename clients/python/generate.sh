#!/usr/bin/env bash
# Generates the Python modules for every .proto under proto/ into
# clients/python/gen/ (git-ignored; never edit them by hand, rerun this).
# Uses grpcio-tools from clients/python/.venv (scripts/clients-deps.sh builds it);
# PYTHON=... picks another interpreter that has grpcio-tools.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
out="$here/gen"

[[ -x $python ]] || {
    echo "generate.sh: $python not found; run scripts/clients-deps.sh first" >&2
    exit 1
}

cd "$root"
mapfile -t protos < <(find proto -name '*.proto' | sort)
rm -rf "$out"
mkdir -p "$out"
# grpc_tools.protoc adds its bundled google/protobuf/*.proto to the import path.
"$python" -m grpc_tools.protoc -I proto \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "${protos[@]}"
echo "generate.sh: ${protos[*]} -> ${out#"$root"/}/"
