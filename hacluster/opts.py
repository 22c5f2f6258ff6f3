"""hacluster's configuration options.

Options live in the ``[hacluster]`` group; the etcd URL is manila's own
``[coordination] backend_url`` (one setting for operators), registered here
too when the service has not registered it already.

``list_opts()`` is the ``oslo.config.opts`` entry point, so
``oslo-config-generator --namespace hacluster`` writes a sample.
"""

import copy

from oslo_config import cfg

from hacluster import exceptions
from hacluster import session as _session

GROUP = 'hacluster'

hacluster_opts = [
    cfg.StrOpt('node_name',
               help='This node\'s name in the cluster: stable across '
                    'restarts and unique among the nodes of a backend. '
                    'Defaults to the host name. Not manila\'s "host": all '
                    'nodes of one backend share that.'),
    cfg.StrOpt('cluster',
               help='Cluster name. Defaults to the backend\'s manila host '
                    '(host@backend), so each backend is its own cluster.'),
    cfg.IntOpt('lease_ttl', default=_session.DEFAULT_LEASE_TTL, min=2,
               help='Seconds a node\'s session lease lives without renewal. '
                    'A crashed node\'s locks and leadership are released '
                    'after at most this long. Must be greater than '
                    'renew_deadline.'),
    cfg.FloatOpt('renew_deadline', default=_session.DEFAULT_RENEW_DEADLINE,
                 help='Seconds without a successful renewal after which a '
                      'node gives up everything it holds (then rejoins). '
                      'Must be greater than renew_interval and smaller '
                      'than lease_ttl.'),
    cfg.FloatOpt('renew_interval', default=_session.DEFAULT_RENEW_INTERVAL,
                 help='Seconds between session lease renewals.'),
    cfg.DictOpt('task_spacing', default={},
                help='Seconds between runs of periodic tasks, by task name '
                     '(e.g. report_driver_status:60,share_status:120). '
                     'Tasks not named keep their declared spacing. Read '
                     'when the tasks start, never at import.'),
    cfg.StrOpt('fencing', default='exit',
               choices=[('none', 'step down and rejoin; final writes of '
                                 'claimed operations are still fenced'),
                        ('exit', 'exit the process at once when the renew '
                                 'deadline passes while it holds claims or '
                                 'cluster locks'),
                        ('watchdog', 'exit, and pet the Linux watchdog '
                                     'device so a frozen machine is reset '
                                     'before its lease can expire')],
               help='What a node does when its session\'s renew deadline '
                    'passes while it holds work that a survivor may '
                    'recover (open claims, cluster locks). "exit" (the '
                    'default) makes sure a node that is thought dead has '
                    'really stopped before its lease can expire whenever '
                    'the process runs at all; manila-share\'s process '
                    'manager starts a new worker, which recovers what its '
                    'previous incarnation left. See hacluster.fencing.'),
    cfg.IntOpt('watchdog_timeout', min=1,
               help='Seconds of the watchdog device\'s timeout (fencing = '
                    'watchdog). At most lease_ttl - renew_deadline, which '
                    'is the default.'),
    cfg.StrOpt('watchdog_device', default='/dev/watchdog',
               help='The watchdog device (fencing = watchdog), e.g. of the '
                    'softdog module. Used by one process per machine.'),
    cfg.FloatOpt('request_timeout',
                 help='Seconds one etcd request may take on one endpoint '
                      'before the next endpoint is tried. Defaults to '
                      'renew_interval (at least 1).'),
]

coordination_opts = [
    cfg.StrOpt('backend_url', secret=True,
               help='The etcd URL, as tooz spells it: '
                    'etcd3+http://HOST:PORT[,HOST:PORT...] or '
                    'etcd3+https://...?ca_cert=&cert_key=&cert_cert=. '
                    'Unset or file:///dir: single-node mode.'),
]


def register_opts(conf):
    """Register hacluster's options (and ``[coordination] backend_url``,
    unless already registered) on ``conf``."""
    conf.register_opts(hacluster_opts, group=GROUP)
    try:
        conf.register_opts(coordination_opts, group='coordination')
    except cfg.DuplicateOptError:
        pass    # the service (manila) registered its own: use it


def list_opts():
    """``[(group, [options])]`` for oslo-config-generator (copies)."""
    return [(GROUP, copy.deepcopy(hacluster_opts)),
            ('coordination', copy.deepcopy(coordination_opts))]


def coordinator_from_conf(conf, cluster=None, lock_path=None, config=None,
                          rpc_version=None):
    """Build (not start) a coordinator from ``conf``.

    :param cluster: cluster name when ``[hacluster] cluster`` is unset.
    :param config, rpc_version: for the member record, as
        :func:`hacluster.coordinator.get_coordinator` takes them.
    :raises ConfigurationError: a setting is invalid (the message names
        the option, e.g. ``[hacluster] renew_deadline``).
    """
    from hacluster import factory as _factory

    register_opts(conf)
    group = conf[GROUP]
    name = group.cluster or cluster
    if not name:
        raise exceptions.ConfigurationError(
            '[hacluster] cluster is not set and no default was given')
    try:
        return _factory.get_coordinator(
            conf.coordination.backend_url, name, node=group.node_name,
            lease_ttl=group.lease_ttl, renew_deadline=group.renew_deadline,
            renew_interval=group.renew_interval, lock_path=lock_path,
            request_timeout=group.request_timeout, config=config,
            rpc_version=rpc_version, fencing=group.fencing,
            watchdog_timeout=group.watchdog_timeout,
            watchdog_device=group.watchdog_device)
    except exceptions.ConfigurationError as exc:
        # Name the option as operators write it in the config file.
        msg = str(exc)
        for opt in ('lease_ttl', 'renew_deadline', 'renew_interval',
                    'watchdog_timeout', 'fencing'):
            msg = msg.replace(opt, '[hacluster] ' + opt)
        msg = msg.replace('backend_url', '[coordination] backend_url')
        raise exceptions.ConfigurationError(msg, cause=exc) from exc
