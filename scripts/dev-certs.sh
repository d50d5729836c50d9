#!/usr/bin/env bash
# Makes throwaway certificates for trying both TLS hops on one machine (caller
# -> service, service -> Redis), then prints the commands that use them:
#   ca.pem, ca.key          a CA that exists only here
#   server.pem, server.key  localhost and 127.0.0.1, for the service's listener
#                           and redis-server (also its client certificate on
#                           replication and cluster bus links)
#   client.pem, client.key  what the service presents to a Redis that requires
#                           client certificates (redis-server's default)
# The openssl recipe is the one tests/it/support/certs.rs uses, so Redis, rustls
# and grpcurl accept these as they accept the tests' certificates; change both
# together. tests/it/dev_certs.rs runs this script and its printed commands.
set -euo pipefail

usage() {
    echo "usage: $0 [--force] [DIR]   (DIR defaults to dev-certs/ at the repo root)"
}

force=false
dir=""
for arg in "$@"; do
    case $arg in
    --force) force=true ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        usage >&2
        exit 2
        ;;
    *)
        if [[ -n $dir ]]; then
            usage >&2
            exit 2
        fi
        dir=$arg
        ;;
    esac
done
if [[ -z $dir ]]; then
    dir="$(cd "$(dirname "$0")/.." && pwd)/dev-certs"
fi

command -v openssl >/dev/null || {
    echo "dev-certs: openssl is missing; install it with: apt-get install openssl" >&2
    exit 1
}

files=(ca.pem ca.key server.pem server.key client.pem client.key)
existing=()
for file in "${files[@]}"; do
    if [[ -e $dir/$file ]]; then
        existing+=("$file")
    fi
done
if ((${#existing[@]})) && ! $force; then
    echo "dev-certs: $dir already holds ${existing[*]}; keeping them (--force replaces them)" >&2
    exit 1
fi

# Keys are readable by their owner only; certificates are made world-readable below.
umask 077
mkdir -p "$dir"
# Absolute, because `make run` changes to the repo root before reading the paths.
dir=$(cd "$dir" && pwd)
# Built aside and moved in at the end, so a failure leaves no half-made set.
work=$(mktemp -d "$dir/.dev-certs.XXXXXX")
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# 825 days is the longest validity TLS clients accept for a server
# certificate; leaves get a day less so none outlives its CA.
ca_days=825
leaf_days=824

ssl() {
    local output
    if ! output=$(cd "$work" && openssl "$@" 2>&1); then
        echo "dev-certs: openssl $* failed:" >&2
        echo "$output" >&2
        exit 1
    fi
}

# P-256 keys: quick to make, and accepted by Redis, rustls and grpcurl alike.
ec_key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

ssl req -x509 "${ec_key[@]}" -days "$ca_days" \
    -subj "/CN=user-service dev CA (throwaway)" -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign

# leaf NAME CN SAN EKU SERIAL: NAME.pem signed by the CA, and its key NAME.key.
leaf() {
    local name=$1 cn=$2 san=$3 eku=$4 serial=$5
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=$eku" \
        "subjectAltName=$san" >"$work/$name.ext"
    ssl req -new "${ec_key[@]}" -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
    ssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -set_serial "$serial" \
        -days "$leaf_days" -extfile "$name.ext" -out "$name.pem"
}
leaf server localhost "DNS:localhost,IP:127.0.0.1" serverAuth,clientAuth 2
leaf client user-service "DNS:user-service.test" clientAuth 3
ssl verify -CAfile ca.pem server.pem client.pem

chmod 0600 "$work"/*.key
chmod 0644 "$work"/*.pem
for file in "${files[@]}"; do
    mv -f "$work/$file" "$dir/$file"
done

q() { printf '%q' "$dir/$1"; }
cat <<EOF
dev-certs: wrote a throwaway CA and certificates for localhost and 127.0.0.1 in $dir
(valid $leaf_days days; trust ca.pem nowhere but on this machine).

1. A Redis speaking TLS only on 6380 (it requires client certificates signed by ca.pem):
  redis-server --port 0 --tls-port 6380 --bind 127.0.0.1 --save '' --appendonly no --tls-cert-file $(q server.pem) --tls-key-file $(q server.key) --tls-ca-cert-file $(q ca.pem)
  (a replica or cluster node adds --tls-replication yes / --tls-cluster yes: server.pem is its client certificate too)

2. The service on localhost:50051, with TLS to its callers and to that Redis:
  REDIS_URL=rediss://localhost:6380 REDIS_CA_FILE=$(q ca.pem) REDIS_CLIENT_CERT_FILE=$(q client.pem) REDIS_CLIENT_KEY_FILE=$(q client.key) TLS_CERT_FILE=$(q server.pem) TLS_KEY_FILE=$(q server.key) make run

3. Call it over TLS:
  grpcurl -cacert $(q ca.pem) -d '{"id":"ada","name":"Ada Lovelace","email":"ada@example.com"}' localhost:50051 user.v1.UserService/CreateUser
  grpcurl -cacert $(q ca.pem) -d '{"id":"ada"}' localhost:50051 user.v1.UserService/GetUser
  ./target/release/user-service health --tls-ca $(q ca.pem) --addr localhost:50051
  redis-cli --tls -p 6380 --cacert $(q ca.pem) --cert $(q client.pem) --key $(q client.key) GET user:ada
EOF
