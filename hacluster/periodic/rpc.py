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

"""Fan-out messages over oslo.messaging.

One RPC server per member: topic ``hacluster.<cluster>``, server = the member
id (both reduced to characters that are safe in AMQP routing keys, with a
short hash so distinct names stay distinct). The leader casts batches of items
to the member that owns them.

RPC is at-most-once (oslo.messaging acknowledges before dispatching): nothing
here is relied on to deliver. The cycle ledger in etcd is the truth; a lost
message only delays an item until its deadline, when it is sent again.
"""

import hashlib
import logging
import re

from hacluster import exceptions
from hacluster import url as _url

LOG = logging.getLogger(__name__)

_UNSAFE = re.compile(r'[^A-Za-z0-9_.-]')


def safe_name(name):
    """``name`` reduced to ``[A-Za-z0-9_.-]`` (``#`` and ``*`` are wildcards
    in AMQP topic routing keys), plus a short hash when anything changed."""
    cleaned = _UNSAFE.sub('_', name)
    if cleaned == name:
        return name
    return '%s_%s' % (cleaned, hashlib.sha1(name.encode()).hexdigest()[:6])


def topic_for(cluster):
    return 'hacluster.' + safe_name(cluster)


def register_messaging_opts(conf):
    """Make ``conf`` usable by oslo.messaging.

    oslo.messaging 18.x reads ``[oslo_messaging_metrics]`` and
    ``[oslo_messaging_tracing]`` on every call/cast but registers them on the
    global ``cfg.CONF`` only: with a service's own ``ConfigOpts`` the first
    cast fails with NoSuchOptError. Register them here if they are missing.
    """
    import importlib

    from oslo_config import cfg
    for module, group in (('oslo_messaging._metrics.client',
                           'oslo_messaging_metrics'),
                          ('oslo_messaging._tracing.client',
                           'oslo_messaging_tracing')):
        try:
            opts = getattr(importlib.import_module(module), group)
        except (ImportError, AttributeError):
            continue        # another oslo.messaging version
        try:
            conf.register_opts(opts, group=group)
        except cfg.DuplicateOptError:
            pass


def get_transport(conf, transport_url=None):
    """An oslo.messaging RPC transport from ``conf`` (``transport_url``
    option) or the given URL.

    :raises ConfigurationError: no URL, or one oslo.messaging refuses (the
        message names the scrubbed URL).
    """
    import oslo_messaging

    register_messaging_opts(conf)
    try:
        return oslo_messaging.get_rpc_transport(conf, url=transport_url)
    except Exception as exc:
        raise exceptions.ConfigurationError(
            'cannot use transport_url %s for fan-out: %s'
            % (_url.scrub(transport_url or getattr(conf, 'transport_url',
                                                   None)),
               _url.scrub(exc)), cause=exc) from exc


class FanoutAPI:
    """Client side of the fan-out RPC API.

    API version history:

    * 1.0 - Initial version: ``process_items``.
    * 1.1 - (the canary protocol only, see :mod:`hacluster.protocol`)
      ``process_items`` takes ``item_timeout``: how long the leader waits
      for each item.

    The version sent is chosen by the leader per dispatch (the lowest every
    member serves); never more than :data:`hacluster.protocol.FANOUT_RPC`
    allows this node.
    """

    BASE_RPC_API_VERSION = '1.0'

    def __init__(self, transport, cluster):
        import oslo_messaging

        self.topic = topic_for(cluster)
        from hacluster import protocol as _protocol
        target = oslo_messaging.Target(topic=self.topic,
                                       version=self.BASE_RPC_API_VERSION)
        # a cast above what this node speaks is refused by oslo.messaging
        # (version_cap), whatever a caller asks for
        self._cap = _protocol.local().fanout_rpc[-1]
        self.client = oslo_messaging.get_rpc_client(
            transport, target, version_cap=self._cap)

    def process_items(self, server, task, cycle_id, items, version='1.0',
                      item_timeout=None):
        """Cast a batch of items to the member listening as ``server``, at
        RPC API ``version`` (arguments newer than it are left out).

        :param items: ``[{'id': ..., 'attempt': n, 'payload': ...}]``.
        :raises HAClusterError: the message could not be handed to the
            broker (the items stay pending and are sent again later).
        """
        # retry=1: with the broker down, fail fast instead of blocking the
        # leader's cycle; the ledger re-sends the items at their deadline.
        call_context = self.client.prepare(server=server, version=version,
                                           retry=1)
        kwargs = {'task': task, 'cycle_id': cycle_id, 'items': items}
        if version != '1.0' and item_timeout is not None:
            kwargs['item_timeout'] = item_timeout
        try:
            call_context.cast({}, 'process_items', **kwargs)
        except Exception as exc:
            raise exceptions.HAClusterError(
                'cannot send %d items of %s to %s: %s'
                % (len(items), task, server, _url.scrub(exc)),
                cause=exc) from exc


class FanoutEndpoint:
    """Server side: hands incoming batches to the receiver (at once: the
    handlers run in the receiver's own workers).

    :param receiver: an object with ``receive(task, cycle_id, items)``
        (:class:`hacluster.periodic.fanout_member.FanoutMember`).
    """

    def __init__(self, receiver):
        import oslo_messaging

        from hacluster import protocol as _protocol
        # the newest version served: oslo.messaging accepts any 1.x up to it
        self.target = oslo_messaging.Target(
            namespace=None, version=_protocol.local().fanout_rpc[-1])
        self._receiver = receiver

    def process_items(self, ctxt, task, cycle_id, items, item_timeout=None):
        # item_timeout (1.1) is informational: the leader's ledger keeps
        # the deadlines
        self._receiver.receive(task, cycle_id, items)


def start_server(transport, cluster, member_id, receiver, executor=None):
    """Start this member's RPC server, delivering to ``receiver`` (see
    :class:`FanoutEndpoint`); returns ``(server, server_name)``. Blocks for
    the server start."""
    import oslo_messaging

    server_name = safe_name(member_id)
    target = oslo_messaging.Target(topic=topic_for(cluster),
                                   server=server_name)
    kwargs = {}
    if executor is not None:
        kwargs['executor'] = executor
    server = oslo_messaging.get_rpc_server(
        transport, target, [FanoutEndpoint(receiver)], **kwargs)
    server.start()
    return server, server_name
