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

"""The RabbitMQ queues of fan-out servers that are gone.

Every fan-out member listens as its own RPC server, named after its member
id, so each incarnation of a node declares a queue
``<topic>.<server>`` (oslo.messaging's per-server queue: not auto-deleted,
no expiry; its fan-out queue expires by itself). A member that stops
cleanly deletes its own; one that is killed leaves it behind with no
consumer, and over restarts they accumulate.

So each server's queue is registered in etcd (``fanout/queues/<server>``,
owned by this module, not bound to a lease: it must outlive its member)
and the leader deletes the queues of servers whose member is gone, with
RabbitMQ's ``if-unused`` guard: a queue that still has a consumer (a
frozen process whose connection RabbitMQ has not yet timed out, a member
whose record an operator deleted) is kept and tried again later. Messages
left in a deleted queue are not lost work: the cycle ledger in etcd sends
every unfinished item again at its deadline.

Only the ``rabbit://`` driver has such queues; with another driver this
does nothing.
"""

import json
import logging
import ssl
import threading
import time

from hacluster.etcd.kv import b64
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster.periodic import rpc as _rpc
from hacluster import url as _url

LOG = logging.getLogger(__name__)

#: Seconds between the leader's sweeps (a member leaving sweeps at once).
SWEEP_EVERY = 60.0


def server_queue(cluster, server_name):
    """The name of the per-server queue oslo.messaging declares for
    ``server_name`` (``<topic>.<server>``)."""
    return '%s.%s' % (_rpc.topic_for(cluster), server_name)


class Broker:
    """Deletes queues on the RabbitMQ broker of an oslo.messaging transport.

    :param transport: an oslo.messaging RPC transport (its URL and its
        ``[oslo_messaging_rabbit]`` TLS options are used; nothing else).

    Every method opens one AMQP connection (to the first host of the URL
    that answers) and blocks for it, at most a few seconds per host.
    Thread-safe (no shared state).
    """

    def __init__(self, transport):
        self._transport = transport

    def _hosts(self):
        # The driver keeps its parsed TransportURL (oslo.messaging has done
        # so since 1.x; without it there is nothing to clean up with).
        url = getattr(getattr(self._transport, '_driver', None), '_url',
                      None)
        if url is None or not (url.transport or '').startswith(
                ('rabbit', 'kombu')):
            return None, []
        return url.virtual_host or '/', list(url.hosts)

    def _ssl(self):
        try:
            opts = self._transport.conf.oslo_messaging_rabbit
            if not opts.ssl:
                return False
        except Exception:       # options of another driver
            return False
        context = ssl.create_default_context(cafile=opts.ssl_ca_file or None)
        if opts.ssl_cert_file:
            context.load_cert_chain(opts.ssl_cert_file,
                                    opts.ssl_key_file or None)
        return context

    def delete_unused(self, names):
        """Delete each queue in ``names`` unless it has a consumer.

        Returns ``(deleted, kept)``: lists of names. A queue that does not
        exist counts as deleted. Blocks for one connection and one request
        per name.

        :raises HAClusterError: the broker could not be reached (scrubbed).
        """
        import amqp

        vhost, hosts = self._hosts()
        if not hosts:
            return [], []
        errors = []
        for host in hosts:
            try:
                conn = amqp.Connection(
                    host='%s:%d' % (host.hostname, host.port or 5672),
                    userid=host.username or 'guest',
                    password=host.password or 'guest',
                    virtual_host=vhost, ssl=self._ssl(),
                    connect_timeout=3.0, read_timeout=5.0,
                    write_timeout=5.0)
                conn.connect()
            except Exception as exc:
                errors.append(exc)
                continue
            try:
                return self._delete(conn, names)
            except Exception as exc:    # the connection broke mid-way
                raise exceptions.HAClusterError(
                    'deleting fan-out queues on %s failed: %s'
                    % (host.hostname, _url.scrub(exc)), cause=exc) from exc
            finally:
                try:
                    conn.close()
                except Exception:
                    pass
        raise exceptions.HAClusterError(
            'cannot reach the message broker to delete the queues of '
            'departed fan-out members: %s' % _url.scrub(errors[-1]),
            cause=errors[-1])

    @staticmethod
    def _delete(conn, names):
        import amqp

        deleted, kept = [], []
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name, if_unused=True)
                deleted.append(name)
            except amqp.exceptions.NotFound:
                deleted.append(name)
                channel = conn.channel()    # the error closed the channel
            except amqp.exceptions.PreconditionFailed:
                kept.append(name)           # a consumer is still there
                channel = conn.channel()
        return deleted, kept


class QueueJanitor:
    """Registers this member's fan-out queue and, on the leader, deletes
    the queues of servers that are gone (see the module doc).

    :param client: the etcd :class:`~hacluster.etcd.Client`.
    :param layout: the cluster's :class:`~hacluster.keys.Layout`.
    :param node: this node's name (shown in the records).
    :param members: ``callable() -> {node: record}``, the members read
        from etcd (``member_id`` is used; a fresh read, not the watch's
        view, which may not yet show a member whose queue is registered).
    :param broker: a :class:`Broker`, or None (no cleanup).
    :param clock: monotonic clock (tests may step it).

    Thread-safe: :meth:`sweep_if_due` may run in timer threads while
    :meth:`note_departure` runs in the watch thread; one sweep at a time.
    """

    def __init__(self, client, layout, node, member_id, members, broker,
                 clock=time.monotonic):
        self._client = client
        self._layout = layout
        self._node = node
        self._member_id = member_id
        self._members = members
        self._broker = broker
        self._clock = clock
        self._due = 0.0         # sweep at the first chance
        self._sweeping = threading.Lock()
        #: queues deleted by this node's sweeps
        self.deleted = 0

    def _key(self, server_name):
        return self._layout.fanout_queue(server_name)

    def _queue(self, server_name):
        return server_queue(self._layout.cluster, server_name)

    def register(self, server_name):
        """Record ``server_name``'s queue in etcd (before the server is
        advertised, so no queue can exist unrecorded). Blocks for one etcd
        request.

        :raises HAClusterError: etcd refused or could not be reached.
        """
        record = {'server': server_name, 'node': self._node,
                  'member_id': self._member_id,
                  'queue': self._queue(server_name)}
        self._client.put(self._key(server_name), json.dumps(record))

    def release(self, server_name):
        """A clean stop: delete this member's own queue (its server is
        stopped, so it has no consumer) and its record. Blocks for one AMQP
        connection and one etcd request; never raises (what is left is
        swept by the leader)."""
        if self._broker is None:
            return
        name = self._queue(server_name)
        try:
            deleted, _ = self._broker.delete_unused([name])
            if deleted:
                self._client.delete(self._key(server_name))
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: fan-out queue %s left for the leader to '
                        'delete: %s', name, _url.scrub(exc))

    def note_departure(self):
        """A member left or came back as a new incarnation: sweep at the
        next chance. Never blocks."""
        self._due = 0.0

    def sweep_if_due(self):
        """On the leader: delete the queues of servers whose member is
        gone, if a sweep is due. Returns the number deleted. Blocks
        for one etcd read and, when there is something to delete, one AMQP
        connection and one etcd delete per queue; never raises."""
        if self._broker is None or self._clock() < self._due:
            return 0
        if not self._sweeping.acquire(blocking=False):
            return 0
        try:
            return self._sweep()
        finally:
            self._sweeping.release()

    def _sweep(self):
        self._due = self._clock() + SWEEP_EVERY
        prefix = self._layout.fanout_queues
        try:
            kvs, _ = self._client.get_prefix(prefix)
            # Read after the registrations: a member registers its queue
            # after it joined, so every registration read has its member
            # in this read unless that member is gone.
            live = {rec.get('member_id') for rec in self._members().values()}
        except exceptions.HAClusterError as exc:
            LOG.info('hacluster: fan-out queue sweep skipped: %s',
                     _url.scrub(exc))
            self._due = self._clock() + 5.0
            return 0
        live.add(self._member_id)
        gone = {}
        for kv in kvs:
            try:
                record = json.loads(kv.value)
            except ValueError:
                record = {}
            if record.get('member_id') not in live:
                server = _keys.unquote_segment(kv.key[len(prefix):])
                gone[self._queue(server)] = kv
        if not gone:
            return 0
        try:
            deleted, kept = self._broker.delete_unused(sorted(gone))
        except exceptions.HAClusterError as exc:
            LOG.warning('hacluster: %s', exc)
            self._due = self._clock() + 5.0
            return 0
        for name in deleted:
            kv = gone[name]
            try:
                # Compare-and-delete: only the record that was read.
                self._client.txn(
                    compare=[{'key': b64(kv.key), 'target': 'MOD',
                              'result': 'EQUAL',
                              'mod_revision': kv.mod_revision}],
                    success=[{'request_delete_range': {
                        'key': b64(kv.key)}}])
            except exceptions.HAClusterError:
                pass        # deleted again at the next sweep
        if kept:
            # Still consumed: a frozen member whose connection RabbitMQ has
            # not dropped yet, or a live one whose record is missing.
            LOG.info('hacluster: fan-out queues still consumed, kept for '
                     'now: %s', ', '.join(kept))
            self._due = min(self._due, self._clock() + 10.0)
        if deleted:
            LOG.info('hacluster: deleted the queues of departed fan-out '
                     'members: %s', ', '.join(deleted))
        self.deleted += len(deleted)
        return len(deleted)
