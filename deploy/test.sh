#!/usr/bin/env bash
# The deploy test: brings each compose topology of deploy/ up on this machine's
# Docker engine with the images of deploy/local-images.sh, checks what the
# topology promises, and takes it down again (`down -v`, also on failure).
#
#   deploy/test.sh [replicated|secured|cluster ...]     (default: all three)
#
#   replicated  a user created through the service is readable on the replica
#   secured     the service's ACL user is refused FLUSHALL, KEYS, CONFIG and keys
#               outside user:*; the read-only user reads user:* but cannot write;
#               the default user is off; no password stands in the compose file
#   cluster     30 users spread over the three primaries; a second bootstrap run
#               changes nothing; `down` and `up` (volumes kept) bring back the same
#               cluster and users; after `stop` of a primary the service still
#               reads the users that primary held and creates new ones
#
# Every topology also gets: `config` clean (with the default images and with the
# local ones), `up -d`, every container healthy (the bootstrap exited 0), and
# the old demo's CreateUser body plus GetUser through the published port.
#
# Where no Docker engine answers, fails at once saying how to get one (a deploy
# test that skips itself would pass without testing). Otherwise prints PASS or
# FAIL per topology and a closing
# "deploy: N passed, N failed" line, and exits non-zero on any failure.
# Uses `docker compose` when the plugin is there, else `docker-compose` (v1.29+).
# Needs grpcurl and redis-cli on the host, plus what local-images.sh needs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! docker info >/dev/null 2>&1; then
    echo "deploy test: FAIL: no Docker engine answers (docker info failed); install and start one, e.g. apt-get install docker.io docker-compose && systemctl start docker" >&2
    exit 1
fi

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "deploy test: FAIL: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
fi
for tool in grpcurl redis-cli timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "deploy test: FAIL: $tool not found" >&2
        exit 1
    fi
done

topologies=("$@")
[[ ${#topologies[@]} -gt 0 ]] || topologies=(replicated secured cluster)
for topo in "${topologies[@]}"; do
    [[ -f $here/$topo/compose.yaml ]] || {
        echo "deploy test: unknown topology $topo" >&2
        exit 2
    }
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

export REDIS_IMAGE=redis-local:7 USER_SERVICE_IMAGE=user-service:local

echo "deploy test: building the local images (${compose[*]}, $(docker version --format 'engine {{.Server.Version}}'))"
if ! "$here/local-images.sh" >"$logs/images.log" 2>&1; then
    cat "$logs/images.log" >&2
    echo "deploy test: FAIL: deploy/local-images.sh failed"
    echo "deploy: 0 passed, ${#topologies[@]} failed"
    exit 1
fi

# ---- helpers (run inside each topology's subshell) ---------------------------

say() { echo "  [$topo] $*"; }

fail() {
    echo "  [$topo] FAILED: $*" >&2
    echo "$*" >>"$logs/$topo.reason"
    exit 1
}

dc() { "${compose[@]}" -p "$project" -f "$file" "$@"; }

used_ports=" "
# free_port VAR: exports VAR as a port on 127.0.0.1 that nothing listens on
# and that was not handed out before; below Linux's ephemeral range (32768+),
# where outgoing connections could take it between the check and the bind.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        [[ $used_ports == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports+="$port "
            export "$1=$port"
            return 0
        fi
    done
    fail "found no free port"
}

# The topology's containers as "name state health exitcode" lines.
container_states() {
    docker ps -a --filter "label=com.docker.compose.project=$project" --format '{{.ID}}' |
        xargs -r docker inspect --format \
            '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}'
}

# wait_ready SECONDS: every container running and healthy, or exited 0 (the bootstrap).
wait_ready() {
    local deadline=$((SECONDS + $1)) states ready
    while ((SECONDS < deadline)); do
        states=$(container_states)
        ready=1
        while read -r name state health code; do
            case "$state/$health" in
            running/healthy) ;;
            exited/-) [[ $code == 0 ]] || fail "$name exited with $code" ;;
            exited/*) fail "$name exited with $code" ;;
            *) ready=0 ;;
            esac
        done <<<"$states"
        if [[ -n $states && $ready == 1 ]]; then
            return 0
        fi
        sleep 1
    done
    fail "not every container became healthy within $1 s:"$'\n'"$(container_states)"
}

grpc() {
    grpcurl -plaintext -max-time 5 -d "$2" "127.0.0.1:$USER_SERVICE_PORT" "user.v1.UserService/$1"
}

create_user() { grpc CreateUser "{\"id\":\"$1\",\"name\":\"$1\",\"email\":\"$1@example.com\",\"ttl_seconds\":600}"; }
get_user() { grpc GetUser "{\"id\":\"$1\"}"; }

# retry SECONDS COMMAND...: until COMMAND succeeds (quietly), for at most SECONDS.
retry() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# expect TEXT PATTERN WHAT: TEXT must contain PATTERN.
expect() {
    [[ $1 == *"$2"* ]] || fail "$3: expected '$2', got: $1"
}

# ---- the checks every topology gets --------------------------------------------

check_config() {
    local out
    # With the images users get (the defaults) ...
    out=$(env -u REDIS_IMAGE -u USER_SERVICE_IMAGE "${compose[@]}" -f "$file" config -q 2>&1) ||
        fail "config (default images) failed: $out"
    [[ -z $out ]] || fail "config (default images) is not clean: $out"
    # ... and with the local ones.
    out=$(dc config -q 2>&1) || fail "config failed: $out"
    [[ -z $out ]] || fail "config is not clean: $out"
    say "config clean"
}

bring_up() {
    timeout 300 "${compose[@]}" -p "$project" -f "$file" up -d >>"$log" 2>&1 ||
        fail "up -d failed (see the log below)"
    wait_ready 180
    say "up: $(container_states | wc -l) containers healthy (or done)"
}

check_demo_user() {
    local out
    # The old demo's request body, verbatim.
    out=$(grpc CreateUser '{"id":"user123","name":"user123","email":"user@user.com"}' 2>&1) ||
        fail "CreateUser: $out"
    expect "$out" '"email": "user@user.com"' CreateUser
    out=$(grpc GetUser '{"id":"user123"}' 2>&1) || fail "GetUser: $out"
    expect "$out" '"id": "user123"' GetUser
    say "CreateUser + GetUser user123 through 127.0.0.1:$USER_SERVICE_PORT"
}

# ---- each topology's promise ---------------------------------------------------

replica_has_user123() {
    [[ $(dc exec -T redis-replica redis-cli GET user:user123) == *'"email":"user@user.com"'* ]]
}

check_replicated() {
    local out
    retry 15 replica_has_user123 ||
        fail "GET user:user123 on the replica: $(dc exec -T redis-replica redis-cli GET user:user123 2>&1)"
    out=$(dc exec -T redis-replica redis-cli INFO replication)
    expect "$out" "role:slave" "INFO replication on the replica"
    say "the replica holds user:user123"
}

# as USER ARGS...: redis-cli on the primary (or $on) as ACL user USER, password from its secret file.
as() {
    local user=$1
    shift
    dc exec -T -e "REDISCLI_AUTH=$(<"$here/secured/secrets/$user.password")" "${on:-redis-primary}" \
        redis-cli --no-auth-warning --user "$user" "$@" 2>&1
}

secured_replica_has_user123() {
    [[ $(on=redis-replica as admin GET user:user123) == *'"email":"user@user.com"'* ]]
}

check_secured() {
    local out pw
    for pw in "$here"/secured/secrets/*.password; do
        ! grep -qF -- "$(<"$pw")" "$file" || fail "a password stands in compose.yaml"
        ! docker inspect "$(dc ps -q user-service)" | grep -qF -- "$(<"$pw")" ||
            fail "a password shows in the service container's configuration"
    done
    # The service's own user: only GET/SET/PTTL/PING on user:*.
    expect "$(as user-service GETRANGE user:user123 0 -1)" '"email":"user@user.com"' "user-service GETRANGE user:*"
    expect "$(as user-service FLUSHALL)" NOPERM "user-service FLUSHALL"
    expect "$(as user-service KEYS '*')" NOPERM "user-service KEYS"
    expect "$(as user-service CONFIG GET dir)" NOPERM "user-service CONFIG GET"
    expect "$(as user-service SET other:key x)" NOPERM "user-service SET outside user:*"
    expect "$(as user-service GETRANGE other:key 0 -1)" NOPERM "user-service GETRANGE outside user:*"
    say "user-service: GETRANGE user:* ok; FLUSHALL, KEYS, CONFIG and keys outside user:* refused (NOPERM)"
    # The read-only user.
    expect "$(as readonly GET user:user123)" '"email":"user@user.com"' "readonly GET user:*"
    out=$(as readonly TTL user:user123)
    [[ $out =~ ^[0-9]+$ ]] || fail "readonly TTL user:*: expected seconds, got: $out"
    expect "$(as readonly SET user:user123 x)" NOPERM "readonly SET"
    expect "$(as readonly DEL user:user123)" NOPERM "readonly DEL"
    expect "$(as readonly GET other:key)" NOPERM "readonly GET outside user:*"
    say "readonly: GET user:* ok; SET, DEL and keys outside user:* refused (NOPERM)"
    # The default user: disabled, so an unauthenticated client can do nothing.
    out=$(dc exec -T redis-primary redis-cli PING 2>&1)
    expect "$out" NOAUTH "PING without credentials"
    expect "$(as admin ACL LIST)" "user default off" "ACL LIST"
    say "default user off (PING without credentials: NOAUTH)"
    # The replica logs in as the replication user and holds the data.
    out=$(on=redis-replica as admin INFO replication)
    expect "$out" "master_link_status:up" "replica link (masteruser replication)"
    retry 15 secured_replica_has_user123 ||
        fail "GET user:user123 on the replica: $(on=redis-replica as admin GET user:user123)"
    say "replica linked as user 'replication' and holds user:user123"
}

# ip_int A.B.C.D: the address as a number.
ip_int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) + (b << 16) + (c << 8) + d))
}

# free_cluster_network: exports REDIS_CLUSTER_NETWORK (A.B.C of a /24) that no
# Docker network on this engine overlaps, starting from the compose default.
free_cluster_network() {
    local subnets cand start end s net len s_start s_end clash
    subnets=$(docker network ls -q | xargs -r docker network inspect \
        --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}')
    for cand in 172.30.{70..99}; do
        start=$(ip_int "$cand.0")
        end=$((start + 255))
        clash=0
        for s in $subnets; do
            [[ $s == */* && $s != *:* ]] || continue
            net=${s%/*} len=${s#*/}
            s_start=$(($(ip_int "$net") & ~((1 << (32 - len)) - 1) & 0xffffffff))
            s_end=$((s_start + (1 << (32 - len)) - 1))
            if ((start <= s_end && s_start <= end)); then
                clash=1
                break
            fi
        done
        if ((clash == 0)); then
            export REDIS_CLUSTER_NETWORK=$cand
            return 0
        fi
    done
    fail "no free /24 in 172.30.70-99 for the cluster network"
}

node_port() {
    local var="REDIS_NODE_$1_PORT"
    echo "${!var}"
}

# The cluster's shape, without timestamps or link states: "id flags primary slots..." per node.
cluster_shape() {
    redis-cli -p "$(node_port 1)" CLUSTER NODES |
        awk '{ sub(/myself,/, "", $3); line = $1 " " $3 " " $4; for (i = 9; i <= NF; i++) line = line " " $i; print line }' |
        sort
}

check_cluster() {
    local i port role keys primaries=() out before after victim victim_keys key started
    for i in $(seq 1 30); do
        out=$(create_user "cluster-user-$i" 2>&1) || fail "CreateUser cluster-user-$i: $out"
    done
    # Every primary holds some of them (asked through the published ports).
    for i in 1 2 3 4 5 6; do
        port=$(node_port "$i")
        role=$(redis-cli -p "$port" ROLE | head -n 1)
        if [[ $role == master ]]; then
            keys=$(redis-cli -p "$port" DBSIZE)
            ((keys > 0)) || fail "primary redis-node-$i holds no key"
            primaries+=("$i:$keys")
        fi
    done
    ((${#primaries[@]} == 3)) || fail "expected 3 primaries, found ${#primaries[@]}: ${primaries[*]}"
    say "31 users spread over 3 primaries (node:keys ${primaries[*]})"

    # A second bootstrap run changes nothing.
    before=$(cluster_shape)
    out=$(dc run --rm -T cluster-bootstrap 2>&1) || fail "second bootstrap run failed: $out"
    expect "$out" "already formed" "second bootstrap run"
    after=$(cluster_shape)
    [[ $before == "$after" ]] || fail "the second bootstrap run changed the cluster:"$'\n'"$before"$'\n'"---"$'\n'"$after"
    say "bootstrap run again: exit 0, cluster unchanged"

    # down (volumes kept) and up: the nodes come back at their fixed addresses
    # and the cluster as it was, users included.
    dc down -t 5 >>"$log" 2>&1
    timeout 300 "${compose[@]}" -p "$project" -f "$file" up -d >>"$log" 2>&1 ||
        fail "up -d after down failed"
    wait_ready 180
    [[ $(cluster_shape) == "$before" ]] || fail "the cluster changed across down and up:"$'\n'"$(cluster_shape)"
    out=$(get_user cluster-user-1 2>&1) || fail "GetUser cluster-user-1 after down and up: $out"
    say "down (volumes kept) + up: same cluster, users still there"

    # Stop a primary: its replica takes over, and the service still answers.
    victim=${primaries[0]%%:*}
    mapfile -t victim_keys < <(redis-cli -p "$(node_port "$victim")" --scan --pattern 'user:*' | head -n 5)
    ((${#victim_keys[@]} > 0)) || fail "found no user:* key on redis-node-$victim"
    dc stop -t 5 "redis-node-$victim" >>"$log" 2>&1
    say "stopped primary redis-node-$victim"
    started=$SECONDS
    for key in "${victim_keys[@]}"; do
        retry 60 get_user "${key#user:}" || fail "GetUser ${key#user:} still fails 60 s after the stop"
    done
    for i in $(seq 1 10); do
        retry 30 create_user "after-failover-$i" || fail "CreateUser after-failover-$i failed after the stop"
        retry 10 get_user "after-failover-$i" || fail "GetUser after-failover-$i failed after the stop"
    done
    out=0
    for i in 1 2 3 4 5 6; do
        [[ $i == "$victim" ]] && continue
        [[ $(redis-cli -p "$(node_port "$i")" ROLE | head -n 1) == master ]] && out=$((out + 1))
    done
    ((out == 3)) || fail "expected a replica promoted (3 primaries left), found $out"
    say "failover in $((SECONDS - started)) s: ${#victim_keys[@]} users of the stopped primary readable, 10 new users created and read, a replica promoted"
}

# ---- run ---------------------------------------------------------------------------

run_topology() {
    topo=$1
    file=$here/$topo/compose.yaml
    project="udt${topo}$$"
    log=$logs/$topo.log
    free_port USER_SERVICE_PORT
    if [[ $topo == cluster ]]; then
        for i in 1 2 3 4 5 6; do
            free_port "REDIS_NODE_${i}_PORT"
        done
        [[ -n ${REDIS_CLUSTER_NETWORK:-} ]] || free_cluster_network
    fi
    # Whatever happens, take the topology down with its volumes; show its logs on failure.
    trap 'rc=$?
        if ((rc != 0)); then
            echo "  [$topo] compose output, container states, last log lines:" >&2
            { tail -n 30 "$log"; container_states; dc logs --no-color --tail 15; } 2>&1 | sed "s/^/    | /" >&2
        fi
        dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || echo "  [$topo] down -v failed" >&2' EXIT
    trap 'exit 130' INT TERM

    check_config
    bring_up
    check_demo_user
    "check_$topo"
}

passed=0
failed=0
for topo in "${topologies[@]}"; do
    started=$SECONDS
    echo "deploy test: $topo"
    # Not `if (...)`: errexit would be off inside the subshell.
    set +e
    (
        set -e
        run_topology "$topo"
    )
    rc=$?
    set -e
    if ((rc == 130)); then
        echo "deploy test: interrupted"
        exit 130
    fi
    if ((rc == 0)); then
        echo "PASS deploy/$topo ($((SECONDS - started)) s)"
        passed=$((passed + 1))
    else
        echo "FAIL deploy/$topo ($((SECONDS - started)) s): $(head -n 1 "$logs/$topo.reason" 2>/dev/null || echo "exit status $rc")"
        failed=$((failed + 1))
    fi
done
echo "deploy: $passed passed, $failed failed"
((failed == 0))
