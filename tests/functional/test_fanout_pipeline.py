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

"""Fan-out costs and latencies that follow items, not timers (issue 16),
with real etcd and real RabbitMQ, members in this process: done markers
written by count, casts going out while the ledger is written, a failed
assignment check retried instead of the batch dropped, an adopted cycle
cast again at once."""

import threading
import time

import hacluster
from hacluster import etcd as _etcd
from hacluster import keys as _keys
from hacluster.periodic import FANOUT
from hacluster.periodic import ledger as _ledger
from hacluster.periodic import periodic_task
from hacluster.periodic import PeriodicRunner
from hacluster.testing.proxy import TcpProxy
from helpers import wait_for


class Poll:
    """A fan-out task ``poll`` of ``n`` items that never ticks by itself;
    each handler call is recorded as ``(node, item, attempt)``."""

    def __init__(self, node, n, sleep=0.0, item_timeout=30, on_item=None):
        self.node = node
        self.n = n
        self.sleep = sleep
        self.on_item = on_item
        self.calls = []
        self._lock = threading.Lock()

        def poll(ctx):
            return ['item-%05d' % i for i in range(self.n)]
        self.poll = periodic_task(
            spacing=3600, initial_delay=3600, mode=FANOUT, name='poll',
            handler=self._item, item_timeout=item_timeout)(poll)

    def _item(self, ctx, item_id, payload):
        if self.on_item is not None:
            self.on_item(ctx)
        time.sleep(self.sleep)
        with self._lock:
            self.calls.append((self.node, item_id, ctx.attempt))


def fanout_servers(coord):
    return {n: r['fanout_server'] for n, r in coord.live_members().items()
            if r.get('fanout_server')}


def last_cycle(coord):
    return _ledger.Ledger(coord, 'poll').current()


def done_markers_before_the_finish(coord, cycle_id):
    """The done markers of a finished cycle as they were just before the
    finish deleted them (etcd keeps the history until compacted)."""
    ledger = _ledger.Ledger(coord, 'poll')
    finished = coord.client.get(ledger.cycle_key).mod_revision
    prefix = ledger.done_prefix(cycle_id)
    op = _etcd.range_op(prefix, _keys.prefix_end(prefix))['request_range']
    resp = coord.client.call('/kv/range', dict(op, revision=finished - 1))
    return [_etcd.KV(kv) for kv in resp.get('kvs') or []]


def test_done_markers_are_written_by_count_not_by_timer(
        etcd, rabbitmq, cluster_name):
    # 250 items of 10 ms on one member: 2.5 s of work. Flushed every
    # 0.25 s (as before) that is ~10 transactions of markers; by count (100
    # a transaction) and once idle, 3.
    poll = Poll('a', 250, sleep=0.01)
    with hacluster.get_coordinator(etcd.url, cluster_name, 'a') as a:
        a.campaign()
        wait_for(lambda: a.is_leader, 10, 'leadership')
        runner = PeriodicRunner(a, transport_url=rabbitmq.transport_url)
        runner.add(poll.poll)
        runner.start()
        try:
            t = time.monotonic()
            runner.run_now('poll', wait=True)
            took = time.monotonic() - t
            record = last_cycle(a)
            kvs = done_markers_before_the_finish(a, record['cycle_id'])
        finally:
            runner.stop()
    assert record['status'] == 'done' and record['done'] == 250
    assert sorted(i for _, i, _ in poll.calls) == \
        ['item-%05d' % i for i in range(250)]
    # markers written in one transaction share its revision
    transactions = {kv.mod_revision for kv in kvs}
    assert len(kvs) == 250
    assert len(transactions) <= 3, sorted(transactions)
    # ... and the last ones at once when the member ran out of work, not
    # after a timer: the cycle is not much longer than its work
    assert took < 2.5 + 2.0, took


def test_casts_start_before_the_ledger_is_completely_written(
        etcd, rabbitmq, cluster_name):
    # 4,000 items are 40 ledger transactions (and the cycle record after
    # them): the first batch must be handled while they are written, not
    # after.
    seen = []

    def on_item(ctx):
        if not seen:
            seen.append(last_cycle(a))

    poll = Poll('a', 4000, on_item=on_item)
    with hacluster.get_coordinator(etcd.url, cluster_name, 'a') as a:
        a.campaign()
        wait_for(lambda: a.is_leader, 10, 'leadership')
        runner = PeriodicRunner(a, transport_url=rabbitmq.transport_url)
        runner.add(poll.poll)
        runner.start()
        try:
            runner.run_now('poll', wait=True)
            record = last_cycle(a)
        finally:
            runner.stop()
    assert record['status'] == 'done' and record['done'] == 4000
    assert record['redispatched'] == 0
    assert len(poll.calls) == 4000
    # when the first item ran, the cycle record (written last) was not
    # there yet: still none, or the previous cycle's
    first = seen[0]
    assert first is None or first['cycle_id'] != record['cycle_id'], first


def test_a_failed_assignment_check_is_retried_not_the_batch_dropped(
        etcd, rabbitmq, cluster_name):
    # b reaches etcd through a proxy that the test cuts for longer than
    # one request may take (2 rounds of 1 s): its assignment check of the
    # batch it is sent fails. Dropped (as before), the batch waited its
    # item_timeout of 30 s and was re-dispatched; retried, it is handled
    # by b as soon as etcd is back.
    pa = Poll('a', 40, item_timeout=30)
    pb = Poll('b', 40, item_timeout=30)
    with TcpProxy(etcd.client_port) as link:
        a = hacluster.get_coordinator(etcd.url, cluster_name, 'a')
        b = hacluster.get_coordinator('etcd3+http://%s' % link.address,
                                      cluster_name, 'b', request_timeout=1)
        with a, b:
            a.campaign()
            wait_for(lambda: a.is_leader, 10, 'leadership')
            ra = PeriodicRunner(a, transport_url=rabbitmq.transport_url)
            ra.add(pa.poll)
            rb = PeriodicRunner(b, transport_url=rabbitmq.transport_url)
            rb.add(pb.poll)
            ra.start()
            rb.start()
            try:
                wait_for(lambda: len(fanout_servers(a)) == 2, 10,
                         'both fan-out servers')
                link.cut()
                threading.Timer(3.5, link.restore).start()
                t = time.monotonic()
                ra.run_now('poll', wait=True)
                took = time.monotonic() - t
                record = last_cycle(a)
            finally:
                link.restore()
                rb.stop()
                ra.stop()
    assert record['status'] == 'done' and record['done'] == 40
    assert record['redispatched'] == 0, record
    assert {n for n, _, _ in pb.calls} == {'b'} and pb.calls
    assert sorted(i for _, i, _ in pa.calls + pb.calls) == \
        ['item-%05d' % i for i in range(40)]
    assert took < 15, took


def test_an_adopted_cycle_is_cast_again_at_once(etcd, rabbitmq,
                                                cluster_name):
    # A leader wrote a cycle's ledger and died before casting anything
    # (here: the test writes the ledger under the task lock, as a leader
    # does, and lets go of the lock). The next leader adopts the cycle:
    # waiting for the items' item_timeout of 60 s (as before) means a
    # minute lost for items nobody ever got; cast again, they are done at
    # once, each once.
    poll = Poll('a', 30, item_timeout=60)
    with hacluster.get_coordinator(etcd.url, cluster_name, 'a') as a, \
            hacluster.get_coordinator(etcd.url, cluster_name,
                                      'dead-leader') as dead:
        a.campaign()
        wait_for(lambda: a.is_leader, 10, 'leadership')
        runner = PeriodicRunner(a, transport_url=rabbitmq.transport_url)
        runner.add(poll.poll)
        runner.start()
        try:
            server = wait_for(lambda: fanout_servers(a).get('a'), 10,
                              "a's fan-out server")
            lock = dead.get_lock('hacluster-task:poll')
            assert lock.acquire(5)
            ledger = _ledger.Ledger(dead, 'poll')
            cycle_id = ledger.new_cycle_id()
            items = {'item-%05d' % i: {
                'id': 'item-%05d' % i, 'owner': server, 'attempt': 1,
                'sent_at': time.time(), 'payload': None} for i in range(30)}
            ledger.create(lock, {
                'cycle_id': cycle_id, 'status': 'running',
                'started_at': time.time(), 'node': 'dead-leader',
                'member_id': dead.member_id, 'term': 1, 'items': 30,
                'fencing_token': lock.fencing_token}, items)
            lock.release()
            t = time.monotonic()
            runner.run_now('poll', wait=True)
            took = time.monotonic() - t
            record = last_cycle(a)
        finally:
            runner.stop()
    assert record['cycle_id'] == cycle_id and record['status'] == 'done'
    assert record['adopted_by'] == a.member_id
    assert record['done'] == 30 and record['redispatched'] == 0
    assert sorted(i for _, i, _ in poll.calls) == sorted(items)
    assert took < 10, took
