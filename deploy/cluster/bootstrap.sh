#!/bin/sh
# Forms the Redis Cluster of deploy/cluster once, and waits until it serves.
#
#   1. waits until every node answers PING;
#   2. when every node is still empty and alone, forms the cluster with
#      `redis-cli --cluster create ... --cluster-replicas N --cluster-yes`;
#      when every node already belongs to a cluster, changes nothing;
#      anything in between (some nodes empty, some in a cluster) is an error
#      to resolve by hand, since guessing could lose data;
#   3. waits until every node reports cluster_state:ok, knows every other node
#      and sees none of them failing or unreachable.
#
# So a second run changes nothing and exits 0, as does a run after
# `docker compose restart` (the nodes keep their nodes.conf in their volumes).
#
# Environment:
#   CLUSTER_NODES         host:port of every node, comma- or space-separated (required)
#   CLUSTER_REPLICAS      replicas per primary                        [1]
#   CLUSTER_WAIT_SECONDS  tries, 1 s apart, that each wait may take   [120]
#   REDISCLI_AUTH         password, if the nodes require one (read by redis-cli)
#
# POSIX sh with no tool besides redis-cli and sleep, so it runs in the official
# redis images and in the FROM-scratch image of deploy/local-images.sh alike.
set -eu

replicas=${CLUSTER_REPLICAS:-1}
wait_seconds=${CLUSTER_WAIT_SECONDS:-120}

log() {
    echo "bootstrap: $*"
}

die() {
    echo "bootstrap: error: $*" >&2
    exit 1
}

[ -n "${CLUSTER_NODES:-}" ] || die "CLUSTER_NODES is not set (host:port,host:port,...)"
# Split the list at commas and blanks; no globbing of the words.
set -f
old_ifs=$IFS
IFS=', '
# shellcheck disable=SC2086 # splitting is the point
set -- $CLUSTER_NODES
IFS=$old_ifs
set +f
[ $# -ge 3 ] || die "CLUSTER_NODES names $# nodes; a cluster needs at least 3"
node_count=$#
nodes=$*

# cli HOST:PORT ARGS...: runs redis-cli against one node.
cli() {
    node=$1
    shift
    redis-cli -h "${node%:*}" -p "${node##*:}" "$@"
}

# field NAME TEXT: prints the value of NAME in the `name:value` lines of TEXT
# (CLUSTER INFO), or nothing.
field() {
    case $2 in
    *"$1:"*)
        value=${2#*"$1:"}
        echo "${value%%[!A-Za-z0-9_]*}"
        ;;
    esac
}

# wait_for DESCRIPTION COMMAND...: runs COMMAND every second until it succeeds,
# for at most CLUSTER_WAIT_SECONDS.
wait_for() {
    what=$1
    shift
    waited=0
    until "$@"; do
        waited=$((waited + 1))
        [ "$waited" -lt "$wait_seconds" ] || die "gave up waiting for $what ($wait_seconds tries, 1 s apart)"
        sleep 1
    done
}

all_answer() {
    for n in $nodes; do
        [ "$(cli "$n" ping 2>/dev/null)" = PONG ] || return 1
    done
}

# Every node: cluster_state:ok, knows all nodes, and sees none failing,
# unreachable or still in a handshake. (Right after a restart, a node reports
# the state it saved until its links say otherwise: hence the links too.)
all_healthy() {
    for n in $nodes; do
        info=$(cli "$n" cluster info 2>/dev/null) || return 1
        [ "$(field cluster_state "$info")" = ok ] || return 1
        [ "$(field cluster_known_nodes "$info")" = "$node_count" ] || return 1
        links=$(cli "$n" cluster nodes 2>/dev/null) || return 1
        case $links in
        *fail* | *handshake* | *noaddr* | *disconnected*) return 1 ;;
        esac
    done
}

# all_healthy twice in a row, a second apart.
all_ok() {
    all_healthy && sleep 1 && all_healthy
}

log "waiting for $node_count nodes: $nodes"
wait_for "every node to answer PING" all_answer

# A node is empty when it knows no other node and serves no slot.
empty=''
member=''
for n in $nodes; do
    info=$(cli "$n" cluster info) || die "CLUSTER INFO failed on $n"
    case $info in
    *cluster_state:*) ;;
    *) die "$n is not in cluster mode: $info" ;;
    esac
    if [ "$(field cluster_known_nodes "$info")" = 1 ] && [ "$(field cluster_slots_assigned "$info")" = 0 ]; then
        empty="$empty $n"
    else
        member="$member $n"
    fi
done

if [ -z "$member" ]; then
    log "forming the cluster: $node_count nodes, $replicas replica(s) per primary"
    # shellcheck disable=SC2086 # one word per node
    redis-cli --cluster create $nodes --cluster-replicas "$replicas" --cluster-yes ||
        die "redis-cli --cluster create failed"
elif [ -z "$empty" ]; then
    log "the cluster is already formed; nothing to change"
else
    die "partly formed: empty node(s)${empty}, in a cluster${member}." \
        "Add the empty ones with redis-cli --cluster add-node, or start over with 'down -v'."
fi

log "waiting for cluster_state:ok on every node"
wait_for "cluster_state:ok, $node_count connected nodes and no failure on every node" all_ok
log "cluster ready: cluster_state:ok on all $node_count nodes, all links up"
