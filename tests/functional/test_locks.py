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

"""Distributed locks against a real, private etcd (started by the fixtures)."""

import os
import signal
import threading
import time

import pytest

import hacluster
from hacluster import exceptions

FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)


@pytest.fixture
def coord(etcd, cluster_name):
    c = hacluster.get_coordinator(etcd.url, cluster_name, node='test', **FAST)
    with c:
        yield c


def other(etcd, cluster_name, node='other', **timings):
    return hacluster.get_coordinator(etcd.url, cluster_name, node=node,
                                     **(timings or FAST))


def queue_length(coord, name):
    kvs, _ = coord.client.get_prefix(coord.layout.lock_prefix(name),
                                     keys_only=True)
    return len(kvs)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for ' + what)
        time.sleep(0.02)


# -- mutual exclusion and order -----------------------------------------------

def test_a_counter_under_the_lock_loses_no_update_across_processes(
        etcd, cluster_name, workers, tmp_path):
    path = str(tmp_path / 'counter')
    with open(path, 'w') as f:
        f.write('0')
    procs = [workers(etcd.url, cluster_name, 'n%d' % i, 'count', 'c', path,
                     25) for i in range(3)]
    for w in procs:
        assert w.proc.wait(120) == 0, w.stderr_tail()
    assert open(path).read() == '75'
    tokens = [int(t) for t in open(path + '.tokens').read().split()]
    # Each holder's token is larger than every earlier holder's.
    assert len(tokens) == 75 and tokens == sorted(set(tokens))


def test_waiters_get_the_lock_in_the_order_they_queued(
        coord, etcd, cluster_name, workers, tmp_path):
    order = str(tmp_path / 'order')
    holder = coord.get_lock('fifo')
    holder.acquire()
    labels = ['w%d' % i for i in range(5)]
    for i, label in enumerate(labels):
        workers(etcd.url, cluster_name, label, 'queue', 'fifo', order, label)
        # The next worker starts only once this one is queued.
        wait_until(lambda: queue_length(coord, 'fifo') == i + 2, 20,
                   '%s to queue' % label)
    holder.release()
    wait_until(lambda: os.path.exists(order) and
               len(open(order).read().split()) == 5, 20, 'all to finish')
    assert open(order).read().split() == labels


def test_two_threads_of_one_process_exclude_each_other(coord):
    inside, worst = [0], [0]
    guard = threading.Lock()

    def work():
        for _ in range(15):
            with coord.get_lock('threads'):
                with guard:
                    inside[0] += 1
                    worst[0] = max(worst[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert worst[0] == 1


def test_readers_hold_together_and_a_writer_waits_for_them(coord):
    readers = [coord.get_lock('rw', shared=True) for _ in range(4)]
    assert all(r.acquire(blocking=False) for r in readers)
    writer = coord.get_lock('rw')
    assert writer.acquire(blocking=0.3) is False
    for r in readers:
        r.release()
    assert writer.acquire(blocking=2)
    assert coord.get_lock('rw', shared=True).acquire(blocking=False) is False
    writer.release()


def test_a_writer_is_not_starved_by_later_readers(coord):
    first = coord.get_lock('starve', shared=True)
    assert first.acquire()
    order = []
    writer = coord.get_lock('starve')
    t_writer = threading.Thread(
        target=lambda: (writer.acquire(), order.append('writer'),
                        time.sleep(0.1), writer.release()))
    t_writer.start()
    wait_until(lambda: queue_length(coord, 'starve') == 2, 5,
               'the writer to queue')
    late = coord.get_lock('starve', shared=True)
    t_reader = threading.Thread(
        target=lambda: (late.acquire(), order.append('late reader'),
                        late.release()))
    t_reader.start()
    wait_until(lambda: queue_length(coord, 'starve') == 3, 5,
               'the late reader to queue')
    time.sleep(0.2)
    assert order == []          # the late reader did not overtake
    first.release()
    t_writer.join(10)
    t_reader.join(10)
    assert order == ['writer', 'late reader']


def test_a_blocked_waiter_is_handed_the_lock_quickly(coord, etcd,
                                                     cluster_name):
    with other(etcd, cluster_name) as c2:
        holder = coord.get_lock('handoff')
        holder.acquire()
        waiter = c2.get_lock('handoff')
        got = []
        t = threading.Thread(target=lambda: got.append(
            (waiter.acquire(), time.monotonic())))
        t.start()
        wait_until(lambda: queue_length(coord, 'handoff') == 2, 5,
                   'the waiter to queue')
        released = time.monotonic()
        holder.release()
        t.join(5)
        assert got and got[0][0] is True
        # Woken by the watch, not by the renew_interval safety re-read.
        assert got[0][1] - released < FAST['renew_interval']
        assert waiter.fencing_token > 0
        waiter.release()


def test_non_blocking_and_timed_acquire_give_up(coord, etcd, cluster_name):
    holder = coord.get_lock('busy')
    holder.acquire()
    with other(etcd, cluster_name) as c2:
        assert c2.get_lock('busy').acquire(blocking=False) is False
        started = time.monotonic()
        assert c2.get_lock('busy').acquire(blocking=0.5) is False
        assert 0.45 < time.monotonic() - started < 2.0
        # Giving up leaves nothing behind in the queue.
        assert queue_length(coord, 'busy') == 1
    holder.release()


def test_with_raises_and_release_refuses_an_unheld_lock(coord):
    lock = coord.get_lock('ctx')
    with lock:
        assert lock.is_still_owner()
        with pytest.raises(exceptions.HAClusterError):
            lock.acquire()
    assert not lock.held
    with pytest.raises(exceptions.LockNotHeld):
        lock.release()


# -- loss, expiry, fencing ----------------------------------------------------

def test_a_paused_holder_learns_it_lost_the_lock_and_is_fenced(
        coord, etcd, cluster_name, workers):
    w = workers(etcd.url, cluster_name, 'paused', 'hold', 'fence')
    old_token = int(w.wait_line('HELD').split()[1])
    os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        lock = coord.get_lock('fence')
        started = time.monotonic()
        assert lock.acquire(blocking=FAST['lease_ttl'] + 3)
        waited = time.monotonic() - started
        assert lock.fencing_token > old_token
        lock.guarded_put('fenced', 'from-new-holder')
    finally:
        os.kill(w.proc.pid, signal.SIGCONT)
    # The paused process notices on its own, as soon as it runs again.
    assert 'LOST' in w.wait_line('LOST', timeout=5)
    assert w.wait_line('OWNER') == 'OWNER False'
    assert w.wait_line('GUARDED') == 'GUARDED StaleFencingToken'
    assert coord.get_data('fenced')[0] == b'from-new-holder'
    assert waited < FAST['lease_ttl'] + 1.5
    lock.release()


def test_sigkill_of_a_holder_frees_the_lock_within_the_ttl(
        coord, etcd, cluster_name, workers):
    w = workers(etcd.url, cluster_name, 'doomed', 'hold', 'kill')
    w.wait_line('HELD')
    lock = coord.get_lock('kill')
    assert lock.acquire(blocking=False) is False
    w.proc.kill()
    killed = time.monotonic()
    assert lock.acquire(blocking=FAST['lease_ttl'] + 2)
    assert time.monotonic() - killed <= FAST['lease_ttl'] + 1
    lock.release()


def test_stop_frees_everything_at_once(etcd, cluster_name):
    c1 = other(etcd, cluster_name, node='n1',
               lease_ttl=30, renew_deadline=20, renew_interval=5).start()
    held = [c1.get_lock('s%d' % i) for i in range(3)]
    for lock in held:
        lock.acquire()
    lost = []
    held[0].on_lost(lambda lk, why: lost.append(why))
    with other(etcd, cluster_name, node='n2') as c2:
        c1.stop()
        stopped = time.monotonic()
        for i in range(3):
            lock = c2.get_lock('s%d' % i)
            assert lock.acquire(blocking=1)
            lock.release()
        assert time.monotonic() - stopped < 1.0
    assert lost == ['coordinator stopped']


def test_a_lock_key_deleted_by_someone_else_is_reported_lost(coord):
    lost = threading.Event()
    lock = coord.get_lock('stolen', on_lost=lambda lk, why: lost.set())
    lock.acquire()
    coord.client.delete_prefix(coord.layout.lock_prefix('stolen'))
    assert lost.wait(2)
    assert lock.lost and not lock.is_still_owner()
    with pytest.raises(exceptions.StaleFencingToken):
        lock.guarded_put('k', 'v')
    assert lock.release() is False      # nothing to release; no error


def test_etcd_down_steps_the_holder_down_and_it_rejoins(fresh_etcd,
                                                        cluster_name):
    c = hacluster.get_coordinator(fresh_etcd.url, cluster_name, node='n1',
                                  **FAST).start()
    try:
        lost_at = []
        lock = c.get_lock('x', on_lost=lambda lk, why: lost_at.append(
            time.monotonic()))
        lock.acquire()
        first_member = c.member_id
        fresh_etcd.kill()
        down = time.monotonic()
        wait_until(lambda: lost_at, FAST['renew_deadline'] + 2, 'lock loss')
        # Stepped down within the renew deadline (+ one retry period),
        # before the lease could expire for anyone else.
        assert lost_at[0] - down <= FAST['renew_deadline'] + 0.5
        assert lost_at[0] - down < FAST['lease_ttl']
        assert not lock.is_still_owner()
        fresh_etcd.restart()
        again = c.get_lock('x')
        assert again.acquire(blocking=15)
        # Same process incarnation, new session; its record comes back (put
        # back by the rejoin thread, a moment after the new session).
        assert c.member_id == first_member and c.session.epoch == 2
        wait_until(lambda: 'n1' in c.get_members(), 5, 'the member record')
        assert c.get_members()['n1']['member_id'] == first_member
        assert again.fencing_token > 0
        again.release()
    finally:
        c.stop()


def test_a_waiter_is_woken_after_etcd_restarts(fresh_etcd, cluster_name):
    kw = dict(lease_ttl=10, renew_deadline=7, renew_interval=2)
    c1 = hacluster.get_coordinator(fresh_etcd.url, cluster_name, 'n1', **kw)
    c2 = hacluster.get_coordinator(fresh_etcd.url, cluster_name, 'n2', **kw)
    with c1, c2:
        holder = c1.get_lock('w')
        holder.acquire()
        waiter = c2.get_lock('w')
        got = []
        t = threading.Thread(target=lambda: got.append(waiter.acquire(20)))
        t.start()
        time.sleep(0.3)
        fresh_etcd.stop()
        fresh_etcd.restart()
        time.sleep(1.0)     # the watch reconnects from its last revision
        released = time.monotonic()
        holder.release()
        t.join(20)
        assert got == [True]
        # woken by the re-established watch, well before a 2 s re-read
        assert time.monotonic() - released < kw['renew_interval']
        waiter.release()


# -- several endpoints --------------------------------------------------------

def test_operations_go_on_when_the_endpoint_in_use_dies(etcd_cluster,
                                                        cluster_name):
    c = hacluster.get_coordinator(etcd_cluster.url, cluster_name, 'n1',
                                  lease_ttl=6, renew_deadline=4,
                                  renew_interval=1)
    with c:
        with c.get_lock('a') as lock:
            token = lock.fencing_token
        port = c.client.current().port
        victim = [m for m in etcd_cluster.members if m.client_port == port]
        assert victim
        victim[0].kill()
        for i in range(5):
            with c.get_lock('a') as lock:
                assert lock.fencing_token > token
                token = lock.fencing_token
        assert c.client.current().port != port
        time.sleep(2.5)      # a few renewals through the survivors
        assert c.session.losses == 0


# -- bad input ----------------------------------------------------------------

def test_an_unreachable_etcd_is_named_without_its_password(cluster_name):
    from hacluster.testing.servers import free_port
    port = free_port()
    c = hacluster.get_coordinator(
        'etcd3+http://admin:hunter2@127.0.0.1:%d' % port, cluster_name, 'n1',
        **FAST)
    with pytest.raises(exceptions.BackendUnavailable) as e:
        c.start(timeout=1)
    assert '127.0.0.1:%d' % port in str(e.value)
    assert 'hunter2' not in str(e.value)


def test_a_lock_cannot_be_taken_before_start(etcd, cluster_name):
    c = other(etcd, cluster_name)
    with pytest.raises(exceptions.NotStarted):
        c.get_lock('x').acquire()


def test_two_clusters_never_see_each_others_locks(etcd):
    with other(etcd, 'b1', node='n1') as b1, \
            other(etcd, 'b10', node='n1') as b10:
        with b1.get_lock('same'):
            assert b10.get_lock('same').acquire(blocking=False)
            assert b10.client.count_prefix(b10.layout.locks) == 1


def test_acquiring_locks_grants_no_lease_of_its_own(fresh_etcd, cluster_name):
    def leases():
        return len(coord.client.call('/lease/leases', {}).get('leases') or [])

    coord = hacluster.get_coordinator(fresh_etcd.url, cluster_name, 'n1',
                                      **FAST)
    with coord:
        before = leases()
        for i in range(20):
            with coord.get_lock('l%d' % (i % 3)):
                pass
        assert leases() == before == 1     # the one session lease
    assert leases() == 0                   # revoked at stop


# -- waiting without polling (the safety check, hacluster.locks) --------------
#
# A blocked waiter sends no request while nothing changes in etcd, and still
# acquires within lease_ttl + renew_interval + two requests (2 x
# renew_interval + two requests in a cluster that was idle) of its blocker
# going, even when the watch never delivers that deletion.
REQUEST_TIMEOUT = 1.0       # what FAST timings give (max(1, renew_interval))
SAFETY_BOUND = FAST['lease_ttl'] + FAST['renew_interval'] + \
    2 * REQUEST_TIMEOUT


def drop_deletions(coord, prefix):
    """Make ``coord``'s dispatcher lose every DELETE event under ``prefix``
    (as a watch that never delivered them would); returns the list the
    dropped keys are appended to."""
    dropped = []
    real = coord._dispatch.deliver

    def deliver(events):
        kept = []
        for etype, kv in events:
            if etype == 'DELETE' and kv.key.startswith(prefix):
                dropped.append(kv.key)
            else:
                kept.append((etype, kv))
        real(kept)
    coord._dispatch.deliver = deliver
    return dropped


def start_waiter(lock, blocking=True):
    got = []
    t = threading.Thread(target=lambda: got.append(
        (lock.acquire(blocking), time.monotonic())), daemon=True)
    t.start()
    return t, got


def own_requests(coord):
    """Requests this coordinator sent besides its lease renewals."""
    s = coord.session
    return coord.client.requests - s.renewals - s.renew_failures


def test_an_idle_blocked_waiter_sends_no_request_of_its_own(fresh_etcd,
                                                            cluster_name):
    # A fresh etcd: nothing else writes, as in an idle cluster.
    with other(fresh_etcd, cluster_name, node='n1') as c1, \
            other(fresh_etcd, cluster_name, node='n2') as c2:
        holder = c1.get_lock('idle')
        holder.acquire()
        waiter = c2.get_lock('idle')
        t, got = start_waiter(waiter)
        wait_until(lambda: queue_length(c1, 'idle') == 2, 5,
                   'the waiter to queue')
        time.sleep(FAST['renew_interval'])      # past its first check
        before, renewals = own_requests(c2), c2.session.renewals
        time.sleep(8 * FAST['renew_interval'])
        assert c2.session.renewals - renewals >= 6   # the session renewed
        assert own_requests(c2) - before == 0
        holder.release()
        t.join(5)
        assert got and got[0][0] is True
        waiter.release()


def test_a_waiter_acquires_when_the_deletion_event_is_never_delivered(
        fresh_etcd, cluster_name):
    with other(fresh_etcd, cluster_name, node='n1') as c1, \
            other(fresh_etcd, cluster_name, node='n2') as c2:
        dropped = drop_deletions(c2, c2.layout.lock_prefix('lost-event'))
        holder = c1.get_lock('lost-event')
        holder.acquire()
        waiter = c2.get_lock('lost-event')
        t, got = start_waiter(waiter)
        wait_until(lambda: queue_length(c1, 'lost-event') == 2, 5,
                   'the waiter to queue')
        time.sleep(3 * FAST['renew_interval'])
        released = time.monotonic()
        holder.release()
        t.join(SAFETY_BOUND + 5)
        assert got and got[0][0] is True
        took = got[0][1] - released
        print('deletion never delivered: acquired %.2f s after the release'
              % took)
        assert len(dropped) >= 1            # the event really was lost
        assert took < SAFETY_BOUND
        waiter.release()


def test_a_timed_acquire_looks_once_more_before_giving_up(
        fresh_etcd, cluster_name, monkeypatch):
    """The deletion event is lost and the safety check would not re-read
    before the timeout (switched off here, as with a period grown to
    lease_ttl): a timed acquire whose lock was freed meanwhile must still
    take it at its timeout, not return False on a free lock."""
    from hacluster import locks
    monkeypatch.setattr(locks, 'safety_read_due', lambda *a: False)
    with other(fresh_etcd, cluster_name, node='n1') as c1, \
            other(fresh_etcd, cluster_name, node='n2') as c2:
        dropped = drop_deletions(c2, c2.layout.lock_prefix('last-look'))
        holder = c1.get_lock('last-look')
        holder.acquire()
        waiter = c2.get_lock('last-look')
        t, got = start_waiter(waiter, blocking=3)
        wait_until(lambda: queue_length(c1, 'last-look') == 2, 5,
                   'the waiter to queue')
        holder.release()
        t.join(10)
        assert len(dropped) >= 1            # the event really was lost
        assert got and got[0][0] is True
        waiter.release()


def test_a_resync_wakes_a_waiter_whose_event_was_lost(
        fresh_etcd, cluster_name, monkeypatch):
    # The safety check switched off: only the resync (what the watch does
    # after a compaction) can wake the waiter.
    from hacluster import locks
    monkeypatch.setattr(locks, 'safety_read_due', lambda *a: False)
    with other(fresh_etcd, cluster_name, node='n1') as c1, \
            other(fresh_etcd, cluster_name, node='n2') as c2:
        drop_deletions(c2, c2.layout.lock_prefix('resync'))
        holder = c1.get_lock('resync')
        holder.acquire()
        waiter = c2.get_lock('resync')
        t, got = start_waiter(waiter, blocking=10)
        wait_until(lambda: queue_length(c1, 'resync') == 2, 5,
                   'the waiter to queue')
        holder.release()
        time.sleep(2 * FAST['renew_interval'])
        assert not got                      # no event, no safety check
        resynced = time.monotonic()
        c2._on_resync()
        t.join(5)
        assert got and got[0][0] is True
        assert got[0][1] - resynced < FAST['renew_interval']
        waiter.release()


@pytest.mark.parametrize('event_lost', [False, True])
def test_a_waiter_whose_own_entry_is_deleted_queues_again(
        fresh_etcd, cluster_name, event_lost):
    with other(fresh_etcd, cluster_name, node='n1') as c1, \
            other(fresh_etcd, cluster_name, node='n2') as c2:
        prefix = c2.layout.lock_prefix('own')
        if event_lost:
            drop_deletions(c2, prefix)
        holder = c1.get_lock('own')
        holder.acquire()
        waiter = c2.get_lock('own')
        t, got = start_waiter(waiter)
        wait_until(lambda: queue_length(c1, 'own') == 2, 5,
                   'the waiter to queue')
        kvs, _ = c1.client.get_prefix(prefix, sort_create=True)
        mine = kvs[-1]
        c1.client.delete(mine.key)          # an operator's mistake
        deleted = time.monotonic()

        def requeued():
            kvs, _ = c1.client.get_prefix(prefix, keys_only=True)
            return len(kvs) == 2 and mine.key not in [kv.key for kv in kvs]
        wait_until(requeued, SAFETY_BOUND + 2, 'the waiter to queue again')
        took = time.monotonic() - deleted
        # woken by its own entry's deletion, else by the safety check
        assert took < (SAFETY_BOUND if event_lost
                       else FAST['renew_interval'])
        assert not got                      # still behind the holder
        holder.release()
        t.join(SAFETY_BOUND + 2)
        assert got and got[0][0] is True
        waiter.release()


def test_a_waiter_whose_session_is_lost_queues_again_on_the_new_one(
        fresh_etcd, cluster_name):
    with other(fresh_etcd, cluster_name, node='n1') as c1, \
            other(fresh_etcd, cluster_name, node='n2') as c2:
        holder = c1.get_lock('session')
        holder.acquire()
        waiter = c2.get_lock('session')
        t, got = start_waiter(waiter)
        wait_until(lambda: queue_length(c1, 'session') == 2, 5,
                   'the waiter to queue')
        first_lease = c2.session.lease_id
        c2.session.expire_now('test')
        prefix = c2.layout.lock_prefix('session')

        def on_new_lease():
            kvs, _ = c1.client.get_prefix(prefix)
            return len(kvs) == 2 and kvs[-1].lease not in (0, first_lease) \
                and kvs[-1].lease == c2.session.lease_id
        wait_until(on_new_lease, FAST['renew_interval'] + 3,
                   'the waiter to queue on its new session')
        holder.release()
        t.join(5)
        assert got and got[0][0] is True
        assert waiter.epoch == 2
        waiter.release()
