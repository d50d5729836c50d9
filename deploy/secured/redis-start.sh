#!/bin/sh
# Runs or checks redis-server for deploy/secured (mounted into the Redis containers).
#
#   redis-start.sh serve    build the aclfile and redis.conf from users.acl and the
#                           password files, then exec redis-server
#   redis-start.sh health   exit 0 when Redis answers PING as the admin user (and, on
#                           a replica, its link to the primary is up)
#
# A Redis ACL file cannot read secrets from files, so the passwords are joined
# to the rules here, at start, into a tmpfs: they never stand in compose.yaml,
# in the image or in the data volume.
#
# Environment (defaults suit compose.yaml):
#   REDIS_ACL_RULES    users.acl, the rules without passwords    [/etc/redis/users.acl]
#   REDIS_SECRETS_DIR  holds redis-NAME-password per ACL user    [/run/secrets]
#   REDIS_RUNTIME_DIR  where the generated files go (a tmpfs)    [/run/redis]
#   REDIS_REPLICAOF    "HOST PORT" of the primary: set on a replica only
#   REDIS_MASTERUSER   ACL user a replica logs in to its primary as [replication]
#   REDIS_HEALTH_USER  ACL user of the healthcheck               [admin]
#
# POSIX sh with no tool besides redis-server and redis-cli, so it runs in the
# official images and in the FROM-scratch image of deploy/local-images.sh alike.
set -eu

rules=${REDIS_ACL_RULES:-/etc/redis/users.acl}
secrets_dir=${REDIS_SECRETS_DIR:-/run/secrets}
runtime_dir=${REDIS_RUNTIME_DIR:-/run/redis}
replicaof=${REDIS_REPLICAOF:-}
masteruser=${REDIS_MASTERUSER:-replication}
health_user=${REDIS_HEALTH_USER:-admin}

die() {
    echo "redis-start.sh: $*" >&2
    exit 1
}

# read_secret FILE: sets $secret to FILE's one line (a final newline is not
# part of it, as for the service's REDIS_PASSWORD_FILE).
read_secret() {
    [ -r "$1" ] || die "cannot read $1"
    secret='' extra=''
    exec 3<"$1"
    IFS= read -r secret <&3 || true
    if IFS= read -r extra <&3 || [ -n "$extra" ]; then
        die "$1 holds more than one line"
    fi
    exec 3<&-
    case $secret in
    '') die "$1 is empty" ;;
    # Redis splits ACL and config lines at blanks and reads quotes and backslashes.
    *[[:space:][:cntrl:]\"\'\\]*) die "$1: a password may not hold blanks, control characters, quotes or backslashes" ;;
    esac
}

secret_file() {
    echo "$secrets_dir/redis-$1-password"
}

# write_acl OUT: the rules, comments dropped, each user's password appended.
write_acl() {
    : >"$1"
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
        '' | '#'*) continue ;;
        'user '*) ;;
        *) die "$rules: not a user line: $line" ;;
        esac
        name=${line#user }
        name=${name%% *}
        file=$(secret_file "$name")
        if [ -e "$file" ]; then
            read_secret "$file"
            line="$line >$secret"
        else
            case " $line " in
            *' on '*) die "user $name is enabled in $rules but has no password file $file" ;;
            esac
        fi
        printf '%s\n' "$line" >>"$1"
    done <"$rules"
}

serve() {
    [ -r "$rules" ] || die "cannot read the ACL rules $rules"
    umask 077
    if [ ! -d "$runtime_dir" ] || [ ! -w "$runtime_dir" ]; then
        die "cannot write to $runtime_dir (mount a tmpfs there)"
    fi
    acl=$runtime_dir/users.acl
    conf=$runtime_dir/redis.conf
    write_acl "$acl"
    {
        echo "port 6379"
        echo "dir /data"
        echo "appendonly yes"
        # Keyspace events WatchUsers streams: K keyspace channel, g del/expire,
        # $ string writes, x expiries, e evictions (the \$ keeps the shell from expanding it).
        echo "notify-keyspace-events Kg\$xe"
        echo "aclfile $acl"
        if [ -n "$replicaof" ]; then
            read_secret "$(secret_file "$masteruser")"
            echo "replicaof $replicaof"
            echo "masteruser $masteruser"
            echo "masterauth \"$secret\""
        fi
    } >"$conf"
    exec redis-server "$conf"
}

health() {
    read_secret "$(secret_file "$health_user")"
    REDISCLI_AUTH=$secret
    export REDISCLI_AUTH
    [ "$(redis-cli --user "$health_user" ping)" = PONG ] || exit 1
    if [ -n "$replicaof" ]; then
        case $(redis-cli --user "$health_user" info replication) in
        *master_link_status:up*) ;;
        *) exit 1 ;;
        esac
    fi
}

case ${1:-} in
serve) serve ;;
health) health ;;
*) die "usage: redis-start.sh serve|health" ;;
esac
