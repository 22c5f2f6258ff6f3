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

"""Regressions for failure interleavings found in review, on real etcd."""

import threading
import time

import hacluster
from hacluster import etcd as _etcd

FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)


def test_an_enqueue_sent_twice_does_not_wait_behind_itself(etcd,
                                                           cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        real = c.client.call
        sent = []

        def call_twice(path, payload, **kw):
            # The first answer is "lost" and the request sent again (as a
            # fail-over after a timeout would): the key keeps the create
            # revision of the first put.
            if path == '/kv/txn' and not sent and any(
                    'request_put' in op for op in payload['success']):
                sent.append(1)
                real(path, payload, **kw)
            return real(path, payload, **kw)
        c.client.call = call_twice
        lock = c.get_lock('twice')
        assert lock.acquire(blocking=2) is True
        kv = c.client.get(lock._key)
        assert lock.fencing_token == kv.create_revision
        lock.guarded_put('k', 'v')       # the token is the real one
        lock.release()


def test_a_renewal_answered_after_the_deadline_does_not_revive_the_session(
        etcd, cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        lock = c.get_lock('x')
        lock.acquire()
        lost = []
        lock.on_lost(lambda lk, why: lost.append(why))
        real = c.client.lease_keepalive
        slow = threading.Event()

        def keepalive(lease_id, **kw):
            if slow.is_set():
                slow.clear()
                time.sleep(FAST['renew_deadline'] + 0.3)
            return real(lease_id, **kw)
        c.client.lease_keepalive = keepalive
        slow.set()
        deadline = time.monotonic() + 6
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost
        # The session was given up and replaced, not revived ...
        deadline = time.monotonic() + 6
        while c.session.epoch < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.session.epoch == 2 and c.session.losses == 1
        # ... so no entry of the old session blocks the name.
        assert lock.acquire(blocking=2)
        other = hacluster.get_coordinator(etcd.url, cluster_name, 'n2',
                                          **FAST)
        with other:
            lock.release()
            assert other.get_lock('x').acquire(blocking=2)


def test_a_late_delete_event_of_an_old_key_spares_the_new_holding(
        etcd, cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        lock = c.get_lock('late')
        lock.acquire()
        old_key = lock._key
        c.session.expire_now('test')
        deadline = time.monotonic() + 5
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.acquire(blocking=5)
        stale = _etcd.KV({'key': _etcd.b64(old_key)})
        c._on_events([('DELETE', stale)])      # delivered late
        assert lock.held and lock.is_still_owner()
        lock.release()


def test_two_threads_cannot_acquire_one_lock_object_at_once(etcd,
                                                            cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        holder = c.get_lock('one')
        holder.acquire()
        shared_obj = c.get_lock('one')
        results = []

        def try_it():
            try:
                results.append(shared_obj.acquire(blocking=1))
            except hacluster.HAClusterError as exc:
                results.append(type(exc).__name__)
        threads = [threading.Thread(target=try_it) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join()
        assert sorted(map(str, results)) == ['False', 'HAClusterError']
        holder.release()
        assert c.client.count_prefix(c.layout.lock_prefix('one')) == 0


def test_the_session_thread_survives_an_unexpected_error(etcd,
                                                         cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        real = c.client.lease_keepalive
        boom = [1]

        def keepalive(lease_id, **kw):
            if boom:
                boom.pop()
                raise TypeError('a bug somewhere')
            return real(lease_id, **kw)
        c.client.lease_keepalive = keepalive
        time.sleep(FAST['renew_deadline'] + 0.5)
        assert not boom and c.session.renewals > 0
        assert c.session.valid() and c.session.losses == 0


def test_stop_then_start_again_renews(etcd, cluster_name):
    c = hacluster.get_coordinator(etcd.url, cluster_name, 'n1', **FAST)
    c.start()
    c.stop()
    c.start()
    try:
        time.sleep(FAST['renew_deadline'] + 0.5)
        assert c.session.valid()
        with c.get_lock('again'):
            pass
    finally:
        c.stop()


def test_a_member_whose_session_blips_keeps_its_claims(etcd, cluster_name):
    calls = []
    leader = hacluster.get_coordinator(etcd.url, cluster_name, 'leader',
                                       **FAST)
    leader.register_recovery('share', calls.append)
    worker = hacluster.get_coordinator(etcd.url, cluster_name, 'worker',
                                       **FAST)
    with leader, worker:
        deadline = time.monotonic() + 5
        while not leader.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        with worker.claim('share', 's1', 'create') as claim:
            # The worker's lease vanishes (as after a long etcd stall); it
            # notices at its next renewal and re-registers under the same
            # member id at once.
            worker.client.lease_revoke(worker.session.lease_id)
            deadline = time.monotonic() + 5
            while worker.session.epoch < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.session.epoch == 2
            time.sleep(2.0)          # several recovery passes of the leader
        assert calls == [] and not claim.recovered_elsewhere


def test_the_leader_does_not_spin_when_a_done_items_owner_leaves(
        etcd, rabbitmq, cluster_name):
    from hacluster.periodic import FANOUT
    from hacluster.periodic import periodic_task
    from hacluster.periodic import PeriodicRunner
    release = threading.Event()

    class Tasks:
        def __init__(self, node):
            self.node = node

        @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                       initial_delay=0.2, item_timeout=30)
        def poll(self, ctx):
            return ['i%d' % i for i in range(20)]

        def _item(self, ctx, item_id, payload):
            if self.node == 'a':
                release.wait(10)     # a's items take long

    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b', **FAST)
    with a, b:
        a.campaign()
        time.sleep(0.5)
        ra = PeriodicRunner(a, transport_url=rabbitmq.transport_url)
        ra.add_all(Tasks('a'))
        rb = PeriodicRunner(b, transport_url=rabbitmq.transport_url)
        rb.add_all(Tasks('b'))
        ra.start()
        rb.start()
        deadline = time.monotonic() + 10
        while rb.stats('poll')['items_handled'] < 1 and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)            # b's items done and flushed
        rb.stop()
        b.stop()                   # the owner of done items leaves
        time.sleep(0.5)
        before = a.client.requests
        time.sleep(1.0)
        spent = a.client.requests - before
        release.set()
        ra.stop()
    assert spent < 30, '%d etcd requests in 1 s' % spent


def test_the_member_record_comes_back_even_if_the_first_rejoin_fails(
        etcd, cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        real = c.client.txn
        failed = []

        def flaky_txn(*args, **kwargs):
            if c.session.epoch == 2 and not failed:
                failed.append(1)
                raise hacluster.BackendUnavailable('a blip, as in a test')
            return real(*args, **kwargs)
        c.client.txn = flaky_txn
        c.session.expire_now('test')
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not (
                failed and 'n1' in c.get_members()):
            time.sleep(0.05)
        assert failed and c.get_members()['n1']['member_id'] == c.member_id


def test_resigning_inside_on_started_keeps_the_callback_contract(
        etcd, cluster_name):
    events = []
    done = threading.Event()
    with hacluster.get_coordinator(etcd.url, cluster_name, 'n1',
                                   **FAST) as c:
        def started(term):
            events.append(('start', term))
            c.resign()                     # unhealthy: step down at once
            time.sleep(0.2)
            events.append(('start-returns', term))

        def stopped(term):
            events.append(('stop', term))
            done.set()
        c.run_for_leader(started, stopped)
        assert done.wait(5)
        time.sleep(0.3)
    kinds = [k for k, _ in events]
    assert kinds == ['start', 'start-returns', 'stop']


def test_a_resync_that_cannot_read_etcd_is_retried_until_it_does(
        etcd, cluster_name):
    from hacluster import exceptions
    c = hacluster.get_coordinator(etcd.url, cluster_name, 'n1', **FAST)
    with c:
        real = c.client.get_prefix
        calls = []

        def flaky(prefix, *args, **kwargs):
            calls.append(prefix)
            if len(calls) <= 2:
                raise exceptions.BackendUnavailable('etcd is away')
            return real(prefix, *args, **kwargs)
        c.client.get_prefix = flaky
        # a member joins while the view is being resynchronised
        other = hacluster.get_coordinator(etcd.url, cluster_name, 'n2',
                                          **FAST).start()
        try:
            c._on_resync()            # as after a watch fell behind
            deadline = time.monotonic() + 10
            while len(calls) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(calls) >= 4    # the failed re-reads were retried
            assert 'n2' in c.live_members()
        finally:
            other.stop()


def _run_fanout_until(etcd, rabbitmq, cluster_name, tasks, task, done,
                      timeout=30):
    """Run ``tasks`` on one member until ``done()`` (or ``timeout``);
    returns the task's stats."""
    from hacluster.periodic import PeriodicRunner
    c = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    with c:
        runner = PeriodicRunner(c, transport_url=rabbitmq.transport_url)
        runner.add_all(tasks)
        runner.start()
        try:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                time.sleep(0.1)
            return runner.stats(task)
        finally:
            runner.stop()


def test_large_fanout_payloads_are_batched_by_bytes_and_an_oversized_item_is_left_out(  # noqa: E501
        etcd, rabbitmq, cluster_name, caplog):
    from hacluster.periodic import FANOUT
    from hacluster.periodic import periodic_task
    handled = set()

    class Tasks:
        @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                       initial_delay=0.1, item_timeout=30)
        def bulky(self, ctx):
            # 100 items x 20 KB: 2 MB for the ledger, more than one etcd
            # request may carry; and one item far too big on its own
            items = {'i%d' % i: 'x' * 20000 for i in range(100)}
            items['huge'] = 'y' * (2 * 1024 * 1024)
            return items

        def _item(self, ctx, item_id, payload):
            handled.add(item_id)

    stats = _run_fanout_until(etcd, rabbitmq, cluster_name, Tasks(),
                              'bulky', lambda: len(handled) >= 100)
    assert handled == {'i%d' % i for i in range(100)}
    assert stats['items_rejected'] == 1 and not stats['last_error']
    assert any("fan-out task 'bulky': item 'huge'" in r.getMessage()
               for r in caplog.records)


class _SteppedClock:
    """A module's ``time``, its wall clock stepped by ``offset`` seconds
    (what an NTP step or an operator's date(1) does to one node)."""

    def __init__(self, offset=0.0):
        self.offset = offset

    def time(self):
        return time.time() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_wall_clock_stepped_back_on_the_leader_does_not_stall_retries(
        etcd, cluster_name, monkeypatch):
    from hacluster import recovery as _recovery
    clock = _SteppedClock()
    monkeypatch.setattr(_recovery, 'time', clock)
    attempts = []

    def step_back():
        time.sleep(0.3)                # once the failure is recorded
        clock.offset = -3600.0         # the leader's clock jumps back 1 h

    def handler(claim):
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            threading.Thread(target=step_back, daemon=True).start()
            raise RuntimeError('backend busy')
    leader = hacluster.get_coordinator(etcd.url, cluster_name, 'leader',
                                       **FAST)
    leader.register_recovery('share', handler)
    owner = hacluster.get_coordinator(etcd.url, cluster_name, 'owner',
                                      **FAST)
    owner._recovery.claim_grace = 0
    with leader:
        owner.start()
        owner.claim('share', 's1', 'create').__enter__()
        owner.session.stop(revoke=True)     # the owner is gone
        deadline = time.monotonic() + 20
        while len(attempts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        owner.stop()
    # retried after its backoff (1 s), not an hour later
    assert len(attempts) == 2, attempts
    assert attempts[1] - attempts[0] < 5


def test_a_wall_clock_step_on_the_leader_does_not_resend_a_cycle(
        etcd, rabbitmq, cluster_name, monkeypatch):
    from hacluster.periodic import FANOUT
    from hacluster.periodic import fanout_leader as _leader
    from hacluster.periodic import periodic_task
    clock = _SteppedClock()
    monkeypatch.setattr(_leader, 'time', clock)
    calls, finished = [], []

    class Tasks:
        @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                       initial_delay=0.1, item_timeout=20)
        def poll(self, ctx):
            return ['i%d' % i for i in range(5)]

        def _item(self, ctx, item_id, payload):
            calls.append(item_id)
            clock.offset = 3600.0      # the leader's clock jumps 1 h ahead
            time.sleep(1.0)
            finished.append(item_id)
    stats = _run_fanout_until(etcd, rabbitmq, cluster_name, Tasks(),
                              'poll', lambda: len(finished) >= 5)
    assert sorted(calls) == ['i%d' % i for i in range(5)]   # once each
    assert stats['redispatched'] == 0


def test_a_guarded_write_answered_after_the_renew_deadline_is_no_success(
        etcd, cluster_name):
    """Found by the fault suite (quorum loss): a guarded write sent while
    the session was valid, answered only once etcd was reachable again --
    after this process had stepped down -- was reported as done. It must
    end by the renew deadline as OutcomeUnknown instead."""
    from hacluster import exceptions
    from hacluster.testing.proxy import TcpProxy
    with TcpProxy(etcd.client_port) as link:
        # a request timeout longer than the renew deadline: only the
        # deadline can end the write in time
        c = hacluster.get_coordinator(
            'etcd3+http://' + link.address, cluster_name, 'a',
            request_timeout=5.0, **FAST)
        with c:
            lost = threading.Event()
            lock = c.get_lock('x', on_lost=lambda lk, why: lost.set())
            lock.acquire()
            outcome = []

            def write():
                try:
                    lock.guarded_put('k', 'v')
                    outcome.append(('done', time.monotonic()))
                except exceptions.HAClusterError as exc:
                    outcome.append((type(exc).__name__, time.monotonic()))
            link.cut()
            cut = time.monotonic()
            t = threading.Thread(target=write)
            t.start()
            deadline = time.monotonic() + 10
            while c.session.valid() and time.monotonic() < deadline:
                time.sleep(0.02)
            # etcd reachable again before the lease expires (ttl 3 s): the
            # held request lands and is answered
            link.restore()
            t.join(10)
    assert outcome and outcome[0][0] == 'OutcomeUnknown', outcome
    assert outcome[0][1] - cut < FAST['renew_deadline'] + 0.5
    assert lost.is_set()
