# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""hacluster's configuration options.

Options live in the ``[hacluster]`` group. The etcd URL is ``[hacluster]
backend_url``, or, when that is unset, manila's own ``[coordination]
backend_url`` (registered here too when the service has not registered it
already); :func:`backend_url` decides, through :func:`hacluster.url.resolve`.
manila-api and manila-scheduler start tooz on ``[coordination]
backend_url``, and tooz reads one endpoint: several endpoints, or a user
and password, go in ``[hacluster] backend_url``.

``list_opts()`` is the ``oslo.config.opts`` entry point, so
``oslo-config-generator --namespace hacluster`` writes a sample.
"""

import collections
import copy
import os

from oslo_config import cfg

from hacluster import exceptions
from hacluster import session as _session

GROUP = 'hacluster'

hacluster_opts = [
    cfg.StrOpt('backend_url', secret=True,
               help='hacluster\'s etcd URL: etcd3+http://HOST:PORT[,HOST:'
                    'PORT...] (requests fail over between the endpoints), '
                    'etcd3+https://...?ca_cert=&cert_key=&cert_cert= for '
                    'TLS, etcd3+http://USER:PASSWORD@HOST:PORT for etcd '
                    'authentication, file:///dir for single-node mode. '
                    'Unset: [coordination] backend_url, manila\'s tooz URL, '
                    'is used; manila-api and manila-scheduler read that one '
                    'too, through tooz, which takes a single endpoint and no '
                    'user name -- so set this option when etcd has several '
                    'endpoints or needs a password.'),
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
    cfg.PortOpt('metrics_port', default=0,
                help='TCP port of this node\'s Prometheus metrics endpoint '
                     '(http://metrics_host:metrics_port/metrics), served by '
                     'the manila-share worker. 0 (the default): not served. '
                     'Each process serving a backend needs a port of its '
                     'own.'),
    cfg.StrOpt('metrics_host', default='127.0.0.1',
               help='Address the metrics endpoint listens on (metrics_port); '
                    'the default is reachable from this machine only: give '
                    'an address of this node, or 0.0.0.0 / ::, for a '
                    'Prometheus server elsewhere.'),
    cfg.StrOpt('metrics_textfile',
               help='Write this node\'s Prometheus metrics to this file '
                    'every metrics_textfile_interval seconds (atomically), '
                    'for node_exporter\'s textfile collector: an absolute '
                    'path ending in .prom in its --collector.textfile.'
                    'directory, one file per process. Unset (the default): '
                    'not written. An alternative to metrics_port (both may '
                    'be set).'),
    cfg.FloatOpt('metrics_textfile_interval', default=15.0,
                 help='Seconds between two writes of metrics_textfile.'),
]

coordination_opts = [
    cfg.StrOpt('backend_url', secret=True,
               help='manila\'s tooz coordination URL (manila registers this '
                    'option), which hacluster uses when [hacluster] '
                    'backend_url is unset. tooz reads one endpoint: '
                    'etcd3+http://HOST:PORT or etcd3+https://HOST:PORT?'
                    'ca_cert=&cert_key=&cert_cert=; tooz\'s timing options '
                    '(timeout, lock_timeout, membership_timeout) are ignored '
                    'by hacluster. Unset or file:///dir: single-node mode.'),
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


def backend_url(conf):
    """The backend URL hacluster uses with ``conf`` (parsed):
    ``[hacluster] backend_url``, else ``[coordination] backend_url``
    (:func:`hacluster.url.resolve` has the rules).

    :returns: :class:`hacluster.url.BackendURL` (``option`` names the
        option it came from).
    :raises ConfigurationError: naming the option, the password scrubbed.
    """
    from hacluster import url as _url

    register_opts(conf)
    return _url.resolve(conf[GROUP].backend_url, conf.coordination.backend_url)


#: ``[hacluster]`` metrics options, validated (:func:`metrics_settings`).
MetricsSettings = collections.namedtuple(
    'MetricsSettings', 'host port textfile textfile_interval')


def metrics_settings(conf):
    """The ``[hacluster] metrics_*`` options of ``conf``, validated.

    :returns: :data:`MetricsSettings` (``port`` 0 and ``textfile`` None:
        metrics are not exported).
    :raises ConfigurationError: an invalid value; the message names the
        option as written in the configuration file.
    """
    register_opts(conf)
    group = conf[GROUP]

    expected = {
        'metrics_port': 'a TCP port, 1-65535 (0: no metrics endpoint)',
        'metrics_host': 'an address to listen on',
        'metrics_textfile': 'a path',
        'metrics_textfile_interval': 'a positive number of seconds'}

    def read(name):
        try:
            return getattr(group, name)
        except (cfg.ConfigFileValueError, ValueError) as exc:
            # oslo.config's message names the file; keep what it found
            why = str(exc).rpartition(' is not valid: ')[2]
            raise exceptions.ConfigurationError(
                '[hacluster] %s must be %s: %s' % (name, expected[name], why),
                cause=exc) from exc

    port = read('metrics_port')
    if port is None or not 0 <= port <= 65535:
        raise exceptions.ConfigurationError(
            '[hacluster] metrics_port must be a TCP port, 1-65535 (0: no '
            'metrics endpoint), got %r' % (port,))
    host = read('metrics_host')
    if port and not (host or '').strip():
        raise exceptions.ConfigurationError(
            '[hacluster] metrics_host must be an address to listen on '
            '(e.g. 127.0.0.1, 0.0.0.0 or ::) when metrics_port is set')
    textfile = read('metrics_textfile') or None
    if textfile is not None:
        if not os.path.isabs(textfile) or not textfile.endswith('.prom'):
            raise exceptions.ConfigurationError(
                '[hacluster] metrics_textfile must be an absolute path '
                'ending in .prom (node_exporter\'s textfile collector reads '
                'only those), got %r' % textfile)
    interval = read('metrics_textfile_interval')
    if interval is None or not interval > 0:
        raise exceptions.ConfigurationError(
            '[hacluster] metrics_textfile_interval must be a positive '
            'number of seconds, got %r' % (interval,))
    return MetricsSettings(host.strip() if host else host, port, textfile,
                           interval)


def _opt(conf, name, group=None):
    try:
        return (conf[group] if group else conf)[name]
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None


def cluster_name(conf, host=None):
    """The cluster of a manila-share backend, named as the HA manager names
    it: ``[hacluster] cluster``, else the backend's manila host
    ``host@backend``.

    :param host: the backend's manila host (``host@backend``: manila-share
        gives it to the manager). Default: ``[DEFAULT] host`` and the one
        backend of ``[DEFAULT] enabled_share_backends``, if ``conf`` has
        those options registered (the ``hacluster`` command registers
        them).
    :raises ConfigurationError: no name can be derived; the message says
        why (no backend, or several: which names to choose from).
    """
    register_opts(conf)
    if conf[GROUP].cluster:
        return conf[GROUP].cluster
    if host:
        return host
    manila_host = _opt(conf, 'host')
    backends = _opt(conf, 'enabled_share_backends') or []
    if manila_host and len(backends) == 1:
        return '%s@%s' % (manila_host, backends[0].strip())
    if manila_host and len(backends) > 1:
        raise exceptions.ConfigurationError(
            'enabled_share_backends names %d backends (%s): each is a '
            'cluster of its own; choose one: %s' % (
                len(backends), ', '.join(backends), ', '.join(
                    '%s@%s' % (manila_host, b.strip()) for b in backends)))
    raise exceptions.ConfigurationError(
        '[hacluster] cluster is not set and no backend to name the cluster '
        'after ([DEFAULT] enabled_share_backends is not set)')


def coordinator_from_conf(conf, cluster=None, lock_path=None, config=None,
                          rpc_version=None, backend=None):
    """Build (not start) a coordinator from ``conf``.

    :param cluster: cluster name when ``[hacluster] cluster`` is unset.
    :param config, rpc_version: for the member record, as
        :func:`hacluster.coordinator.get_coordinator` takes them.
    :param backend: the :class:`hacluster.url.BackendURL` to use, when the
        caller resolved it already (default: :func:`backend_url`).
    :raises ConfigurationError: a setting is invalid (the message names
        the option, e.g. ``[hacluster] renew_deadline``).
    """
    from hacluster import factory as _factory

    register_opts(conf)
    group = conf[GROUP]
    # checked here too, where the HA share manager validates its
    # configuration before forking (not in a worker restarted for ever)
    metrics_settings(conf)
    name = group.cluster or cluster
    if not name:
        raise exceptions.ConfigurationError(
            '[hacluster] cluster is not set and no default was given')
    parsed = backend if backend is not None else backend_url(conf)
    try:
        return _factory.get_coordinator(
            parsed, name, node=group.node_name,
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
        raise exceptions.ConfigurationError(msg, cause=exc) from exc
