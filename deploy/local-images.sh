#!/usr/bin/env bash
# Builds the two images the compose files in deploy/ can run with where no
# container registry can be reached, from files already on this machine:
#
#   user-service:local  the release binary (built first with cargo if needed)
#   redis-local:7       Debian's redis-server and redis-cli (7.x), with dash as
#                       /bin/sh and sleep for the compose commands and bootstrap.sh
#
# Both are FROM scratch: each program is copied with the shared libraries ldd
# lists (the dynamic loader included), plus /etc/passwd and /etc/group for the
# non-root users the images run as. Nothing is pulled. Use them with:
#
#   REDIS_IMAGE=redis-local:7 USER_SERVICE_IMAGE=user-service:local \
#     docker compose -f deploy/replicated/compose.yaml up -d
#
# Environment:
#   USER_SERVICE_BINARY  use this binary instead of running `cargo build --release`
#
# Needs docker, cargo (unless USER_SERVICE_BINARY is set), ldd, tar, and
# Debian's redis-server + redis-tools (`apt-get install redis-server redis-tools`).
set -euo pipefail

readonly USER_SERVICE_TAG=user-service:local
readonly REDIS_TAG=redis-local:7
# The official redis images run Redis as uid 999 too.
readonly REDIS_UID=999
readonly SERVICE_UID=10001

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "local-images.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found${2:+ ($2)}"
}

# add_file ROOT SRC [DEST]: copies SRC, symlinks followed, to ROOT/DEST (default: the same path).
add_file() {
    local root=$1 src=$2 dest=${3:-$2}
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$src" "$root$dest"
}

# add_program ROOT SRC DEST: copies the executable SRC to ROOT/DEST and every
# shared library it loads (ldd's list, the dynamic loader included) to the
# same path as on this machine, which the loader searches by default.
add_program() {
    local root=$1 src=$2 dest=$3 ldd_out lib
    add_file "$root" "$src" "$dest"
    if ! ldd_out=$(ldd "$src" 2>&1); then
        # A static executable needs nothing else.
        [[ $ldd_out == *"not a dynamic executable"* || $ldd_out == *"statically linked"* ]] ||
            die "ldd $src failed: $ldd_out"
        return 0
    fi
    if [[ $ldd_out == *"not found"* ]]; then
        die "$src needs a library that is missing here:"$'\n'"$ldd_out"
    fi
    while read -r lib; do
        [[ -e $root$lib ]] || add_file "$root" "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
}

# build_image TAG CONTEXT: builds CONTEXT/Dockerfile as TAG and removes the
# image TAG named before, if the new build replaced it and nothing uses it.
build_image() {
    local tag=$1 context=$2 old new
    old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    # Without the buildx plugin, the docker CLI's default builder is the legacy one.
    if docker buildx version >/dev/null 2>&1; then
        docker build --quiet --tag "$tag" "$context" >/dev/null
    else
        DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$context" >/dev/null 2>"$context/build.err" ||
            { cat "$context/build.err" >&2; die "docker build of $tag failed"; }
    fi
    new=$(docker image inspect --format '{{.Id}}' "$tag")
    if [[ -n $old && $old != "$new" ]]; then
        docker image rm "$old" >/dev/null 2>&1 || true
    fi
    new=${new#sha256:}
    echo "local-images.sh: built $tag (${new:0:12})"
}

# make_tar CONTEXT ROOT [DATA_DIR OWNER]: packs ROOT as CONTEXT/rootfs.tar,
# owned by root, reproducibly (same files, same archive, same image id), and
# adds an empty DATA_DIR owned by OWNER (uid:gid).
make_tar() {
    local context=$1 root=$2 data_dir=${3:-} owner=${4:-}
    local -a opts=(--numeric-owner --sort=name --mtime=@0 --format=gnu)
    tar -C "$root" "${opts[@]}" --owner=0 --group=0 -cf "$context/rootfs.tar" .
    if [[ -n $data_dir ]]; then
        local stage=$context/stage
        mkdir -p "$stage/$data_dir"
        chmod 0755 "$stage/$data_dir"
        tar -C "$stage" "${opts[@]}" --owner="${owner%%:*}" --group="${owner##*:}" \
            -rf "$context/rootfs.tar" "./$data_dir"
    fi
}

need docker
need ldd
need tar
need awk
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- user-service:local ------------------------------------------------------
if [[ -n ${USER_SERVICE_BINARY:-} ]]; then
    binary=$USER_SERVICE_BINARY
else
    need cargo "install the Rust toolchain, or set USER_SERVICE_BINARY"
    echo "local-images.sh: cargo build --release --bin user-service" >&2
    (cd "$repo_root" && cargo build --release --bin user-service --quiet)
    target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
    [[ $target_dir == /* ]] || target_dir=$repo_root/$target_dir
    binary=$target_dir/release/user-service
fi
[[ -x $binary ]] || die "no executable at $binary"

ctx=$work/user-service
root=$ctx/rootfs
mkdir -p "$root/etc"
add_program "$root" "$binary" /usr/local/bin/user-service
printf 'root:x:0:0:root:/root:/sbin/nologin\nuser-service:x:%s:%s:user-service:/nonexistent:/sbin/nologin\n' \
    "$SERVICE_UID" "$SERVICE_UID" >"$root/etc/passwd"
printf 'root:x:0:\nuser-service:x:%s:\n' "$SERVICE_UID" >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
make_tar "$ctx" "$root"
cat >"$ctx/Dockerfile" <<EOF
# Generated by deploy/local-images.sh; the image users build is deploy/Dockerfile.
FROM scratch
ADD rootfs.tar /
USER $SERVICE_UID:$SERVICE_UID
ENV PATH=/usr/local/bin:/usr/bin:/bin LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["user-service", "health"]
ENTRYPOINT ["user-service"]
EOF
build_image "$USER_SERVICE_TAG" "$ctx"

# ---- redis-local:7 -------------------------------------------------------------
need redis-server "apt-get install redis-server"
need redis-cli "apt-get install redis-tools"
need dash
need sleep
version=$(redis-server --version)
[[ $version =~ v=7\. ]] || die "redis-server is not 7.x: $version"

ctx=$work/redis
root=$ctx/rootfs
mkdir -p "$root/etc"
# Where the official images keep them.
add_program "$root" "$(command -v redis-server)" /usr/local/bin/redis-server
add_program "$root" "$(command -v redis-cli)" /usr/local/bin/redis-cli
# A POSIX shell and sleep: what compose commands, healthchecks and bootstrap.sh use besides redis-cli.
add_program "$root" "$(command -v dash)" /bin/sh
add_program "$root" "$(command -v sleep)" /bin/sleep
printf 'root:x:0:0:root:/root:/sbin/nologin\nredis:x:%s:%s:redis:/data:/sbin/nologin\n' \
    "$REDIS_UID" "$REDIS_UID" >"$root/etc/passwd"
printf 'root:x:0:\nredis:x:%s:\n' "$REDIS_UID" >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
make_tar "$ctx" "$root" data "$REDIS_UID:$REDIS_UID"
cat >"$ctx/Dockerfile" <<EOF
# Generated by deploy/local-images.sh: a stand-in for the official redis:7 images.
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/bin:/usr/bin:/bin
# Not root, as the official images' entrypoint arranges with gosu.
USER $REDIS_UID:$REDIS_UID
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server"]
EOF
build_image "$REDIS_TAG" "$ctx"
