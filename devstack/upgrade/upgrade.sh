#!/usr/bin/env bash
#
# ``upgrade-hacluster``: runs after manila's upgrade.sh (see settings).
# Installs the target hacluster as the devstack plugin does
# (setup_develop of HACLUSTER_DIR), restarts m-shr so that it runs it, and
# waits (bounded, polling) until this node is an active, ready member of
# every cluster of its backends at the installed version.

echo "*********************************************************************"
echo "Begin $0"
echo "*********************************************************************"

# Clean up any resources that may be in use
cleanup() {
    set +o errexit

    echo "*********************************************************************"
    echo "ERROR: Abort $0"
    echo "*********************************************************************"

    # Kill ourselves to signal any calling process
    trap 2; kill -2 $$
}

trap cleanup SIGHUP SIGINT SIGTERM

# Keep track of the grenade directory
RUN_DIR=$(cd "$(dirname "$0")" && pwd)

# Source params
# shellcheck source=/dev/null
source "$GRENADE_DIR/grenaderc"

# Import common functions
# shellcheck source=/dev/null
source "$GRENADE_DIR/functions"

# This script exits on an error so that errors don't compound and you see
# only the first error that occurred.
set -o errexit

# Upgrade hacluster
# =================

# Get functions from current DevStack
# shellcheck source=/dev/null
source "$TARGET_DEVSTACK_DIR/functions"
# shellcheck source=/dev/null
source "$TARGET_DEVSTACK_DIR/stackrc"

# The hacluster devstack plugin is the directory above this one
HACLUSTER_DEVSTACK_DIR=$(dirname "$RUN_DIR")
# shellcheck source=/dev/null
source "$HACLUSTER_DEVSTACK_DIR/settings"
# shellcheck source=/dev/null
source "$HACLUSTER_DEVSTACK_DIR/plugin.sh"
# shellcheck source=/dev/null
source "$RUN_DIR/common"

# Print the commands being run so that we can see the command that triggers
# an error.  It is also useful for following allowing as the install occurs.
set -o xtrace

# Install the target hacluster
install_hacluster

# Calls upgrade-hacluster for specific release
upgrade_project hacluster "$RUN_DIR" "$BASE_DEVSTACK_BRANCH" "$TARGET_DEVSTACK_BRANCH"

if is_service_enabled m-shr; then
    # manila's upgrade.sh (or nobody, if manila's grenade plugin is not
    # enabled) started m-shr with the hacluster installed before: restart
    # its unit (enabled again: shutdown.sh's stop_process disabled it)
    read -r -a systemctl_cmd <<< "$SYSTEMCTL"
    "${systemctl_cmd[@]}" enable devstack@m-shr.service
    "${systemctl_cmd[@]}" restart devstack@m-shr.service

    # Don't succeed unless the service comes up
    ensure_services_started m-shr

    # ... and this node rejoins every cluster of its backends, serving, at
    # the version just installed
    version=$(hacluster_grenade_version)
    node=$(hacluster_grenade_node)
    for cluster in $(hacluster_clusters); do
        hacluster_grenade_poll \
            "manila-share on $node to be a ready member of $cluster at hacluster $version" \
            hacluster_grenade_check_cluster "$cluster" leader=if-members \
            member=ready node="$node" version="$version"
    done
fi

set +o xtrace
echo "*********************************************************************"
echo "SUCCESS: End $0"
echo "*********************************************************************"
