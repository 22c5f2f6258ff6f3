#!/bin/bash
#
# hacluster's grenade shutdown: runs before manila's (see settings), while
# manila-share still serves. Saves `hacluster status -f json` of every
# cluster of this node and an etcd snapshot into $SAVE_DIR/hacluster, then
# stops m-shr as devstack does (stop_process); manila's shutdown.sh stops
# the rest of manila.

set -o errexit

# shellcheck source=/dev/null
source "$GRENADE_DIR/grenaderc"
# shellcheck source=/dev/null
source "$GRENADE_DIR/functions"

# shellcheck source=/dev/null
source "$BASE_DEVSTACK_DIR/functions"
# shellcheck source=/dev/null
source "$BASE_DEVSTACK_DIR/stackrc" # needed for status directory

# Locate the hacluster devstack plugin (the directory above this one) and
# get its settings and functions
HACLUSTER_UPGRADE_DIR=$(cd "$(dirname "$0")" && pwd)
HACLUSTER_DEVSTACK_DIR=$(dirname "$HACLUSTER_UPGRADE_DIR")
# shellcheck source=/dev/null
source "$HACLUSTER_DEVSTACK_DIR/settings"
# shellcheck source=/dev/null
source "$HACLUSTER_DEVSTACK_DIR/plugin.sh"
# shellcheck source=/dev/null
source "$HACLUSTER_UPGRADE_DIR/common"

set -o xtrace

mkdir -p "$HACLUSTER_GRENADE_SAVE_DIR"

# The cluster as it was before the services stopped
for cluster in $(hacluster_clusters); do
    safe=$(hacluster_grenade_safe "$cluster")
    hacluster_grenade_status "$cluster" \
        >"$HACLUSTER_GRENADE_SAVE_DIR/status-$safe.before-shutdown.json" || \
        die $LINENO "cannot read the status of cluster $cluster before" \
            "the shutdown (hacluster status -f json failed)"
done

# and etcd's data (every cluster's records, the fan-out ledgers, claims)
hacluster_grenade_etcdctl snapshot save "$HACLUSTER_GRENADE_SNAPSHOT" || \
    die $LINENO "cannot take an etcd snapshot into $HACLUSTER_GRENADE_SNAPSHOT"

if is_service_enabled m-shr; then
    # SIGTERM: manila-share leaves the cluster within
    # graceful_shutdown_timeout and hands what it cannot finish (the slow
    # create of resources.sh) over to recovery
    stop_process m-shr
    ensure_services_stopped m-shr

    # What the stop left (for the record; verify_noapi judges it)
    for cluster in $(hacluster_clusters); do
        safe=$(hacluster_grenade_safe "$cluster")
        hacluster_grenade_status "$cluster" \
            >"$HACLUSTER_GRENADE_SAVE_DIR/status-$safe.after-shutdown.json" || true
    done
fi
