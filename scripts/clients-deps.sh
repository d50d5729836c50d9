#!/usr/bin/env bash
# Installs what clients/ and the proto gate need on a fresh Debian 12 machine,
# skipping what is already there. Safe to run again; fast when nothing is missing.
#
#   apt: protoc, the C++ gRPC toolchain (libgrpc++-dev, protobuf-compiler-grpc,
#        pkg-config, g++, make) and python3-venv
#   pip: clients/python/requirements.txt into clients/python/.venv (grpcio,
#        grpcio-tools, grpcio-status, pytest, buf, ...), reinstalled only when
#        that file changes
set -euo pipefail
cd "$(dirname "$0")/.."

venv=clients/python/.venv
requirements=clients/python/requirements.txt

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v grpc_cpp_plugin >/dev/null || need_apt+=(protobuf-compiler-grpc)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
# libprotobuf-dev is not pulled in by libgrpc++-dev, and the generated C++ needs it.
if ! command -v pkg-config >/dev/null || ! pkg-config --exists 'grpc++ protobuf'; then
    need_apt+=(libgrpc++-dev libprotobuf-dev)
fi
# Debian's python3 has no venv/ensurepip without python3-venv.
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need_apt+=(python3 python3-venv)
fi

if ((${#need_apt[@]})); then
    echo "clients-deps: apt-get install ${need_apt[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    hash -r
fi

# The stamp is a copy of the requirements the venv was built from: a changed
# pin rebuilds it, an unchanged one costs a file comparison.
stamp="$venv/.requirements.installed"
if [[ ! -x $venv/bin/python ]] || ! cmp -s "$requirements" "$stamp"; then
    echo "clients-deps: building $venv from $requirements"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi

for tool in protoc grpc_cpp_plugin pkg-config g++ make "$venv/bin/python" "$venv/bin/buf"; do
    command -v "$tool" >/dev/null || {
        echo "clients-deps: $tool is still missing after installing; install it by hand" >&2
        exit 1
    }
done
