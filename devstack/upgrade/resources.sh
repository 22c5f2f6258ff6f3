#!/bin/bash
#
# hacluster's grenade resources: what must survive the upgrade of
# manila-share's coordination, and the checks that it did.
#
#   create         two shares (their export locations saved), a snapshot,
#                  an access rule, each waited for; the leader's term of
#                  every cluster saved; last, one slow create left in flight
#                  across the shutdown (a share named slow<N>-..., which
#                  hacluster's active-active DummyDriver takes N seconds
#                  more to create; with another driver simply the last
#                  create, not waited for), its id saved
#   verify SIDE    the shares available with their export locations
#                  unchanged, the snapshot available, the rule active; the
#                  slow create settled (post-upgrade: available, or error
#                  once its cut-short create was recovered); every cluster:
#                  one leader, a live member, with a term >= the saved one,
#                  no claim left (pre-upgrade: but the slow create's), no
#                  lock held, the last fan-out cycle done, this node a ready
#                  member at the installed hacluster version
#   verify_noapi   (services stopped) the etcd snapshot saved; every
#                  cluster: this node no longer a member, a leader if any
#                  member is alive (and none otherwise), no claim but the
#                  slow create's, no lock held
#   destroy        delete what create made, waiting for each deletion
#   force_destroy  the same, best effort (forced deletes, no waits fatal)
#
# verify and verify_noapi change nothing and may run any number of times;
# create and destroy skip what exists / is gone already. Every wait is
# bounded (HACLUSTER_GRENADE_WAIT_TIMEOUT) and polls.

set -o errexit

# shellcheck source=/dev/null
source "$GRENADE_DIR/grenaderc"
# shellcheck source=/dev/null
source "$GRENADE_DIR/functions"

# shellcheck source=/dev/null
source "$TOP_DIR/openrc" admin demo

HACLUSTER_UPGRADE_DIR=$(cd "$(dirname "$0")" && pwd)
HACLUSTER_DEVSTACK_DIR=$(dirname "$HACLUSTER_UPGRADE_DIR")
# shellcheck source=/dev/null
source "$HACLUSTER_DEVSTACK_DIR/settings"
# shellcheck source=/dev/null
source "$HACLUSTER_DEVSTACK_DIR/plugin.sh"
# shellcheck source=/dev/null
source "$HACLUSTER_UPGRADE_DIR/common"

set -o xtrace

################################# Settings ####################################

# The backend the shares are made on (default: the first of
# [DEFAULT] enabled_share_backends); its share type is made by create unless
# HACLUSTER_GRENADE_SHARE_TYPE names an existing one
HACLUSTER_GRENADE_BACKEND=${HACLUSTER_GRENADE_BACKEND:-}
HACLUSTER_GRENADE_SHARE_TYPE=${HACLUSTER_GRENADE_SHARE_TYPE:-hacluster_grenade}
# A share network, for a backend that handles share servers
HACLUSTER_GRENADE_SHARE_NETWORK=${HACLUSTER_GRENADE_SHARE_NETWORK:-}
HACLUSTER_GRENADE_ACCESS_TYPE=${HACLUSTER_GRENADE_ACCESS_TYPE:-ip}
HACLUSTER_GRENADE_ACCESS_TO=${HACLUSTER_GRENADE_ACCESS_TO:-0.0.0.0/0}
# How much longer the slow create takes (long enough to be in flight when
# shutdown.sh stops manila-share)
HACLUSTER_GRENADE_SLOW_SECONDS=${HACLUSTER_GRENADE_SLOW_SECONDS:-600}

HACLUSTER_GRENADE_SHARES="hacluster_grenade_share1 hacluster_grenade_share2"
HACLUSTER_GRENADE_SNAPSHOT_NAME=hacluster_grenade_snapshot
# the snapshot is of the first share, the access rule on the second
HACLUSTER_GRENADE_SNAPSHOT_OF=hacluster_grenade_share1
HACLUSTER_GRENADE_RULE_ON=hacluster_grenade_share2

################################# Helpers #####################################

function _hg_backend {
    if [[ -n "$HACLUSTER_GRENADE_BACKEND" ]]; then
        echo "$HACLUSTER_GRENADE_BACKEND"
    else
        iniget "$MANILA_CONF" DEFAULT enabled_share_backends | cut -d, -f1
    fi
}

# _hg_show KIND NAME FIELD: a field of a share or a snapshot (fails if it is
# gone)
function _hg_show {
    if [[ "$1" == "snapshot" ]]; then
        openstack share snapshot show "$2" -c "$3" -f value
    else
        openstack share show "$2" -c "$3" -f value
    fi
}

function _hg_exists {
    _hg_show "$1" "$2" id >/dev/null 2>&1
}

# _hg_status_is KIND NAME WANTED [FATAL...]: a poll check: 0 once its status
# is WANTED, 2 at a FATAL one (an error status), 1 while on its way
function _hg_status_is {
    local kind=$1 name=$2 wanted=$3 status fatal
    shift 3
    status=$(_hg_show "$kind" "$name" status 2>/dev/null) || {
        echo "$kind $name is gone"
        return 2
    }
    echo "$kind $name is $status"
    [[ "$status" == "$wanted" ]] && return 0
    for fatal in "$@"; do
        [[ "$status" == "$fatal" ]] && return 2
    done
    return 1
}

# _hg_settled SHARE: a poll check: 0 once the share is available or in
# error (a create over), 1 while creating, 2 otherwise
function _hg_settled {
    local status
    status=$(_hg_show share "$1" status 2>/dev/null) || {
        echo "share $1 is gone"
        return 2
    }
    echo "share $1 is $status"
    case $status in
        available|error) return 0;;
        creating) return 1;;
        *) return 2;;
    esac
}

# _hg_exports SHARE: its export paths, sorted, comma-separated
function _hg_exports {
    openstack share export location list "$1" -c Path -f value | sort | \
        paste -sd, -
}

function _hg_rule_state {
    openstack share access list "$HACLUSTER_GRENADE_RULE_ON" \
        --access-type "$HACLUSTER_GRENADE_ACCESS_TYPE" \
        --access-to "$HACLUSTER_GRENADE_ACCESS_TO" -c state -f value
}

function _hg_rule_active {
    local state
    state=$(_hg_rule_state)
    echo "access rule $HACLUSTER_GRENADE_ACCESS_TYPE" \
        "$HACLUSTER_GRENADE_ACCESS_TO on $HACLUSTER_GRENADE_RULE_ON is" \
        "${state:-missing}"
    case $state in
        active) return 0;;
        error|"") return 2;;
        *) return 1;;
    esac
}

# _hg_slow_in_flight CLUSTER SHARE_ID INSTANCE_IDS: 0 once the slow create
# holds its claim on manila-share (or is over already)
function _hg_slow_in_flight {
    local status
    status=$(_hg_show share "$2" status 2>/dev/null) || {
        echo "share $2 is gone"
        return 2
    }
    if [[ "$status" != "creating" ]]; then
        echo "share $2 is $status already: no create in flight"
        return 0
    fi
    hacluster_grenade_check_cluster "$1" leader=any claims_expected="$3"
}

# _hg_gone KIND NAME: a poll check: 0 once it is deleted
function _hg_gone {
    local status
    if ! status=$(_hg_show "$1" "$2" status 2>/dev/null); then
        return 0
    fi
    echo "$1 $2 is $status"
    [[ "$status" == "error_deleting" ]] && return 2
    return 1
}

# _hg_delete KIND NAME: delete (forced, best effort) and wait for it
function _hg_delete {
    local kind=$1 name=$2
    local -a force=()
    if [[ -z "$name" ]] || ! _hg_exists "$kind" "$name"; then
        return 0
    fi
    if [[ "$HACLUSTER_GRENADE_BEST_EFFORT" == "True" ]]; then
        force=(--force)
    fi
    if [[ "$kind" == "snapshot" ]]; then
        openstack share snapshot delete "${force[@]}" "$name"
    else
        openstack share delete "${force[@]}" "$name"
    fi
    hacluster_grenade_poll "$kind $name to be deleted" _hg_gone "$kind" "$name"
}

# This node's part in the cluster checks (HG_MEMBER_ARGS): a ready member
# at the installed version, if manila-share runs here
function _hg_member_args {
    local node version
    HG_MEMBER_ARGS=()
    if is_service_enabled m-shr; then
        node=$(hacluster_grenade_node)
        version=$(hacluster_grenade_version)
        HG_MEMBER_ARGS=(member=ready "node=$node" "version=$version")
    fi
}

function _hg_term_key {
    echo "term_$(hacluster_grenade_safe "$1")"
}

################################# Phases ######################################

function create {
    local backend cluster proto dhss backend_name name i term exports
    local slow slow_id instances
    local -a share_opts
    backend=$(_hg_backend)
    cluster=$(hacluster_cluster_of "$backend")
    _hg_member_args

    # Every cluster up, led: the terms verify compares with
    for name in $(hacluster_clusters); do
        hacluster_grenade_wait_cluster "$name" leader=one "${HG_MEMBER_ARGS[@]}"
        term=$(hacluster_grenade_leader_term "$name")
        resource_save hacluster "$(_hg_term_key "$name")" "$term"
    done

    # A share type for the backend
    if ! openstack share type show "$HACLUSTER_GRENADE_SHARE_TYPE" \
            >/dev/null 2>&1; then
        dhss=$(iniget "$MANILA_CONF" "$backend" driver_handles_share_servers)
        backend_name=$(iniget "$MANILA_CONF" "$backend" share_backend_name)
        openstack share type create "$HACLUSTER_GRENADE_SHARE_TYPE" \
            "${dhss:-False}" --snapshot-support True \
            --extra-specs "share_backend_name=${backend_name:-$backend}"
        resource_save hacluster share_type_created True
    fi

    proto=$(iniget "$MANILA_CONF" DEFAULT enabled_share_protocols | cut -d, -f1)
    proto=${proto:-NFS}
    share_opts=(--share-type "$HACLUSTER_GRENADE_SHARE_TYPE")
    if [[ -n "$HACLUSTER_GRENADE_SHARE_NETWORK" ]]; then
        share_opts+=(--share-network "$HACLUSTER_GRENADE_SHARE_NETWORK")
    fi

    # Two shares, their export locations
    for name in $HACLUSTER_GRENADE_SHARES; do
        if ! _hg_exists share "$name"; then
            openstack share create "$proto" 1 --name "$name" "${share_opts[@]}"
        fi
    done
    i=0
    for name in $HACLUSTER_GRENADE_SHARES; do
        i=$((i + 1))
        hacluster_grenade_poll "share $name to be available" \
            _hg_status_is share "$name" available error
        exports=$(_hg_exports "$name")
        [[ -n "$exports" ]] || die $LINENO "share $name has no export location"
        resource_save hacluster "exports_share$i" "$exports"
    done

    # A snapshot
    if ! _hg_exists snapshot "$HACLUSTER_GRENADE_SNAPSHOT_NAME"; then
        openstack share snapshot create "$HACLUSTER_GRENADE_SNAPSHOT_OF" \
            --name "$HACLUSTER_GRENADE_SNAPSHOT_NAME"
    fi
    hacluster_grenade_poll "snapshot $HACLUSTER_GRENADE_SNAPSHOT_NAME to be available" \
        _hg_status_is snapshot "$HACLUSTER_GRENADE_SNAPSHOT_NAME" available error

    # An access rule
    if [[ -z "$(_hg_rule_state)" ]]; then
        openstack share access create "$HACLUSTER_GRENADE_RULE_ON" \
            "$HACLUSTER_GRENADE_ACCESS_TYPE" "$HACLUSTER_GRENADE_ACCESS_TO"
    fi
    hacluster_grenade_poll "the access rule to be active" _hg_rule_active

    # Last, the slow create, not waited for: only until manila-share has
    # it (its claim is in etcd), so that the shutdown finds it in flight
    slow=slow${HACLUSTER_GRENADE_SLOW_SECONDS}-hacluster_grenade_inflight
    if ! _hg_exists share "$slow"; then
        openstack share create "$proto" 1 --name "$slow" "${share_opts[@]}"
    fi
    slow_id=$(_hg_show share "$slow" id)
    instances=$(openstack share instance list --share "$slow_id" -c ID -f value | \
        paste -sd, -)
    resource_save hacluster slow_share "$slow_id"
    resource_save hacluster slow_instances "$instances"
    hacluster_grenade_poll "the create of share $slow_id to reach manila-share" \
        _hg_slow_in_flight "$cluster" "$slow_id" "$instances"

    echo "hacluster 'create': SUCCESS"
}

function _hg_verify_manila {
    local side=$1 name status now saved i slow_id
    i=0
    for name in $HACLUSTER_GRENADE_SHARES; do
        i=$((i + 1))
        status=$(_hg_show share "$name" status) || \
            die $LINENO "share $name is gone"
        [[ "$status" == "available" ]] || \
            die $LINENO "share $name is $status, not available"
        now=$(_hg_exports "$name")
        saved=$(resource_get hacluster "exports_share$i")
        [[ "$now" == "$saved" ]] || \
            die $LINENO "export locations of share $name changed:" \
                "'$saved' when created, '$now' now"
    done
    status=$(_hg_show snapshot "$HACLUSTER_GRENADE_SNAPSHOT_NAME" status) || \
        die $LINENO "snapshot $HACLUSTER_GRENADE_SNAPSHOT_NAME is gone"
    [[ "$status" == "available" ]] || \
        die $LINENO "snapshot $HACLUSTER_GRENADE_SNAPSHOT_NAME is $status, not available"
    status=$(_hg_rule_state)
    [[ "$status" == "active" ]] || \
        die $LINENO "access rule on $HACLUSTER_GRENADE_RULE_ON is" \
            "${status:-missing}, not active"

    slow_id=$(resource_get hacluster slow_share)
    [[ -n "$slow_id" ]] || die $LINENO "no slow share saved: run create first"
    if [[ "$side" == "pre-upgrade" ]]; then
        # still in flight, or done
        status=$(_hg_show share "$slow_id" status)
        [[ "$status" == "creating" || "$status" == "available" ]] || \
            die $LINENO "slow share $slow_id is $status before any upgrade"
    else
        # settled: finished, or (cut short by the shutdown) recovered into
        # error -- never left creating
        hacluster_grenade_poll "the slow create of share $slow_id to settle" \
            _hg_settled "$slow_id"
    fi
}

# _hg_verify_clusters SIDE
function _hg_verify_clusters {
    local side=$1 cluster allowed=""
    _hg_member_args
    if [[ "$side" == "pre-upgrade" && \
          "$(_hg_show share "$(resource_get hacluster slow_share)" status)" == "creating" ]]; then
        allowed=$(resource_get hacluster slow_instances)
    fi
    for cluster in $(hacluster_clusters); do
        hacluster_grenade_wait_cluster "$cluster" leader=one \
            term="$(resource_get hacluster "$(_hg_term_key "$cluster")")" \
            claims_allowed="$allowed" locks=none fanout=done \
            "${HG_MEMBER_ARGS[@]}"
    done
}

function verify {
    local side=${1:-post-upgrade}
    _hg_verify_manila "$side"
    _hg_verify_clusters "$side"
    echo "hacluster 'verify $side': SUCCESS"
}

function verify_noapi {
    local cluster
    local -a member_args=()
    [[ -s "$HACLUSTER_GRENADE_SNAPSHOT" ]] || \
        die $LINENO "no etcd snapshot at $HACLUSTER_GRENADE_SNAPSHOT" \
            "(shutdown.sh saves it)"
    if is_service_enabled m-shr; then
        member_args=(member=absent "node=$(hacluster_grenade_node)")
    fi
    for cluster in $(hacluster_clusters); do
        hacluster_grenade_wait_cluster "$cluster" leader=if-members \
            term="$(resource_get hacluster "$(_hg_term_key "$cluster")")" \
            claims_allowed="$(resource_get hacluster slow_instances)" \
            locks=none "${member_args[@]}"
    done
    echo "hacluster 'verify_noapi': SUCCESS"
}

function destroy {
    local name
    _hg_delete snapshot "$HACLUSTER_GRENADE_SNAPSHOT_NAME"
    for name in $HACLUSTER_GRENADE_SHARES "$(resource_get hacluster slow_share)"; do
        _hg_delete share "$name"
    done
    if [[ "$(resource_get hacluster share_type_created)" == "True" ]] && \
            openstack share type show "$HACLUSTER_GRENADE_SHARE_TYPE" \
                >/dev/null 2>&1; then
        openstack share type delete "$HACLUSTER_GRENADE_SHARE_TYPE"
    fi
    echo "hacluster 'destroy': SUCCESS"
}

################################# Dispatcher ##################################

case $1 in
    "create")
        create
        ;;
    "verify_noapi")
        verify_noapi
        ;;
    "verify")
        verify "${2:-}"
        ;;
    "destroy")
        destroy
        ;;
    "force_destroy")
        set +o errexit
        HACLUSTER_GRENADE_BEST_EFFORT=True
        destroy
        ;;
esac
