#!/usr/bin/env bash
# Tests everything under clients/ against the real service binary and real
# redis-server processes on free loopback ports:
#   - the Python client (clients/python, generated with grpcio-tools),
#   - the C++ client (clients/cpp, generated with protoc + grpc_cpp_plugin),
#   - every grpcurl command in README.md (clients/readme_test.py),
#   - the proto gate on modified copies of proto/ (clients/proto_gate).
# Extra arguments go to pytest (e.g. -k readme).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/clients-deps.sh
cargo build --locked --quiet --bin user-service
clients/python/generate.sh
make --no-print-directory -s -j2 -C clients/cpp

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
status=0
clients/python/.venv/bin/python -m pytest -c clients/pytest.ini --rootdir clients \
    -v -rfEsxXP "$@" || status=$?
if ((status == 5)); then
    echo "clients-test: pytest collected no test" >&2
    exit 1
fi
exit "$status"
