#!/bin/bash
# devstack plugin: run manila-share active-active with hacluster.
#
# stack install      pip-install hacluster (from HACLUSTER_DIR) into
#                    devstack's Python
# stack post-config  point manila at the HA share manager and etcd
#                    ([DEFAULT] share_manager, [coordination] backend_url,
#                    [hacluster] node_name and timings; optionally a shared
#                    [DEFAULT] host and the active-active DummyDriver)
# stack extra        print the cluster status once manila-share runs
# unstack / clean    nothing of ours keeps running: manila-share stops
#                    with devstack and its session lease expires in etcd
#
# The grenade plugin (devstack/upgrade/) sources this file too, for
# install_hacluster and hacluster_clusters.

function install_hacluster {
    setup_develop "$HACLUSTER_DIR"
}

function configure_hacluster {
    local conf=${MANILA_CONF:-/etc/manila/manila.conf}
    iniset "$conf" DEFAULT share_manager hacluster.manila.manager.HAShareManager
    iniset "$conf" coordination backend_url "$HACLUSTER_BACKEND_URL"
    iniset "$conf" hacluster node_name "$HACLUSTER_NODE_NAME"
    iniset "$conf" hacluster lease_ttl "$HACLUSTER_LEASE_TTL"
    iniset "$conf" hacluster renew_deadline "$HACLUSTER_RENEW_DEADLINE"
    iniset "$conf" hacluster renew_interval "$HACLUSTER_RENEW_INTERVAL"
    if [[ -n "$HACLUSTER_MANILA_HOST" ]]; then
        iniset "$conf" DEFAULT host "$HACLUSTER_MANILA_HOST"
    fi
    if [[ "$HACLUSTER_HA_DUMMY_DRIVER" == "True" ]]; then
        local backend
        for backend in $(iniget "$conf" DEFAULT enabled_share_backends | tr ',' ' '); do
            if [[ "$(iniget "$conf" "$backend" share_driver)" == \
                  "manila.tests.share.drivers.dummy.DummyDriver" ]]; then
                iniset "$conf" "$backend" share_driver \
                    hacluster.testing.manila_driver.HADummyDriver
            fi
        done
    fi
}

# hacluster_cluster_of BACKEND: the cluster of one manila-share backend of
# this node, named as the HA share manager names it: [hacluster] cluster,
# else manila's host (host@backend; [DEFAULT] host, else the host name).
function hacluster_cluster_of {
    local conf=${MANILA_CONF:-/etc/manila/manila.conf}
    local cluster host
    cluster=$(iniget "$conf" hacluster cluster)
    if [[ -n "$cluster" ]]; then
        echo "$cluster"
        return
    fi
    host=$(iniget "$conf" DEFAULT host)
    host=${host:-$(hostname)}
    echo "$host@$1"
}

# hacluster_clusters: the cluster of each backend, one a line.
function hacluster_clusters {
    local conf=${MANILA_CONF:-/etc/manila/manila.conf}
    local backend
    for backend in $(iniget "$conf" DEFAULT enabled_share_backends | tr ',' ' '); do
        hacluster_cluster_of "$backend"
    done
}

function show_hacluster_status {
    local conf=${MANILA_CONF:-/etc/manila/manila.conf}
    local cluster
    for cluster in $(hacluster_clusters); do
        hacluster status --config-file "$conf" --cluster "$cluster" || true
    done
}

if is_service_enabled manila; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing hacluster"
        install_hacluster
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring manila-share for active-active (hacluster)"
        configure_hacluster
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        show_hacluster_status
    fi
fi
