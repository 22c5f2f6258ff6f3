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

"""Building a coordinator: the backend URL picks the kind.

:func:`get_coordinator` returns an etcd coordinator
(:class:`hacluster.coordinator.Coordinator`; ``etcd3+http``,
``etcd3+https``) or a single-node one (:class:`hacluster.local.
LocalCoordinator`; ``file://`` or no URL). Both implement
:class:`hacluster.api.CoordinatorAPI`::

    coord = hacluster.get_coordinator('etcd3+http://10.0.0.1:2379',
                                      cluster='manila@dummy', node='node-1')
    with coord:                       # start() ... stop()
        with coord.get_lock('share-42'):
            ...

:func:`set_default` names the coordinator :func:`hacluster.synchronized`
uses when it is given none.
"""

import socket
import threading

from hacluster import fencing as _fencing
from hacluster import keys as _keys
from hacluster import session as _session
from hacluster import url as _url

_default = None
_default_lock = threading.Lock()


def set_default(coordinator):
    """Make ``coordinator`` the one :func:`hacluster.synchronized` uses when
    it is given none (None clears it). Thread-safe."""
    global _default
    with _default_lock:
        _default = coordinator


def get_default():
    """The coordinator set with :func:`set_default`, or None."""
    return _default


def get_coordinator(backend_url, cluster, node=None,
                    lease_ttl=_session.DEFAULT_LEASE_TTL,
                    renew_deadline=_session.DEFAULT_RENEW_DEADLINE,
                    renew_interval=_session.DEFAULT_RENEW_INTERVAL,
                    lock_path=None, request_timeout=None, config=None,
                    rpc_version=None, clock=_session.boottime,
                    fencing=_fencing.NONE, watchdog_timeout=None,
                    watchdog_device=_fencing.DEFAULT_WATCHDOG_DEVICE):
    """Build (not start) the coordinator for ``cluster``.

    :param backend_url: ``etcd3+http://host:port[,host:port...]``,
        ``etcd3+https://...?ca_cert=&cert_key=&cert_cert=``, ``file:///dir``
        or None (single-node mode, locks in ``lock_path``).
    :param cluster: the cluster name (one per storage backend), e.g. the
        manila host ``hostgroup@backend``.
    :param node: this node's stable, unique name (default: the hostname).
    :param lease_ttl, renew_deadline, renew_interval: session timings in
        seconds; ``lease_ttl > renew_deadline > renew_interval``.
    :param lock_path: directory for single-node locks when ``backend_url``
        is None.
    :param request_timeout: seconds one etcd request may take on one
        endpoint (default: ``renew_interval``, at least 1 s).
    :param config: a dict of this node's relevant configuration; its
        fingerprint (secrets excluded) goes in the member record so drift
        between nodes is visible.
    :param rpc_version: the RPC API version this node speaks (member
        record).
    :param fencing: ``none`` (default), ``exit`` or ``watchdog``: what the
        process does when its renew deadline passes while it holds work
        (see :mod:`hacluster.fencing`).
    :param watchdog_timeout, watchdog_device: for ``watchdog`` fencing
        (default ``lease_ttl - renew_deadline`` seconds, /dev/watchdog).
    :raises ConfigurationError: an argument is invalid; the message names it.

    Does not block and touches no network.
    """
    parsed = _url.parse(backend_url)
    _keys.validate_ident(cluster, 'cluster')
    if node is None:
        node = socket.gethostname()
    _keys.validate_ident(node, 'node')
    timings = _session.validate_timings(lease_ttl, renew_deadline,
                                        renew_interval)
    _fencing.validate(fencing, timings[0], timings[1], watchdog_timeout)
    if parsed.kind == 'file':
        from hacluster import local
        return local.LocalCoordinator(cluster, node,
                                      lock_path=parsed.path or lock_path,
                                      timings=timings, config=config,
                                      rpc_version=rpc_version)
    from hacluster import coordinator
    return coordinator.Coordinator(parsed, cluster, node, timings,
                                   request_timeout=request_timeout,
                                   clock=clock, config=config,
                                   rpc_version=rpc_version, fencing=fencing,
                                   watchdog_timeout=watchdog_timeout,
                                   watchdog_device=watchdog_device)
