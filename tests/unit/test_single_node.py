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

"""Single-node mode: real file locks in a temp dir, real processes."""

import multiprocessing
import os
import threading
import time

import pytest

import hacluster
from hacluster import exceptions


@pytest.fixture
def coord(tmp_path):
    c = hacluster.get_coordinator('file://%s' % tmp_path, 'b1', node='n1')
    with c:
        yield c


def _count(path, lock_dir, n):
    c = hacluster.get_coordinator('file://%s' % lock_dir, 'b1', node='p%d'
                                  % os.getpid())
    with c:
        for _ in range(n):
            with c.get_lock('counter') as lock:
                with open(path) as f:
                    value = int(f.read())
                time.sleep(0.001)
                with open(path, 'w') as f:
                    f.write(str(value + 1))
                with open(path + '.tokens', 'a') as f:
                    f.write('%d\n' % lock.fencing_token)


def test_a_counter_under_the_lock_loses_no_update_across_processes(tmp_path):
    path = str(tmp_path / 'counter')
    with open(path, 'w') as f:
        f.write('0')
    # spawn, not fork: eventlet (imported, not patched, by etcd3gw's futurist)
    # warns about fork, and a fresh interpreter is what a real node is.
    ctx = multiprocessing.get_context('spawn')
    procs = [ctx.Process(target=_count, args=(path, tmp_path / 'locks', 40))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert open(path).read() == '120'
    tokens = [int(t) for t in open(path + '.tokens').read().split()]
    assert tokens == sorted(tokens) and len(set(tokens)) == 120


def test_threads_of_one_process_exclude_each_other(coord):
    inside, worst = [0], [0]
    guard = threading.Lock()

    def work():
        for _ in range(20):
            with coord.get_lock('x'):
                with guard:
                    inside[0] += 1
                    worst[0] = max(worst[0], inside[0])
                time.sleep(0.0005)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert worst[0] == 1


def test_readers_share_and_a_writer_excludes_them(coord):
    r1, r2 = coord.get_lock('rw', shared=True), coord.get_lock('rw',
                                                               shared=True)
    assert r1.acquire(False) and r2.acquire(False)
    w = coord.get_lock('rw')
    assert not w.acquire(blocking=0.2)
    r1.release()
    r2.release()
    assert w.acquire(False)
    assert not coord.get_lock('rw', shared=True).acquire(False)
    w.release()


def test_fencing_tokens_increase_and_survive_a_restart(tmp_path):
    url = 'file://%s' % tmp_path
    tokens = []
    for _ in range(2):
        with hacluster.get_coordinator(url, 'b1', node='n1') as c:
            for name in ('a', 'b'):
                with c.get_lock(name) as lock:
                    tokens.append(lock.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_guarded_writes_need_the_lock(coord):
    lock = coord.get_lock('g')
    with pytest.raises(exceptions.StaleFencingToken):
        lock.guarded_put('k', 'v')
    with lock:
        lock.guarded_put('k', 'v')
    assert coord.get_data('k') == (b'v', 0)


def test_stop_releases_and_reports_held_locks(tmp_path):
    url = 'file://%s' % tmp_path
    c = hacluster.get_coordinator(url, 'b1', node='n1').start()
    lost = []
    lock = c.get_lock('x', on_lost=lambda lk, why: lost.append(why))
    assert lock.acquire()
    c.stop()
    assert lost == ['coordinator stopped']
    with hacluster.get_coordinator(url, 'b1', node='n2') as c2:
        assert c2.get_lock('x').acquire(False)


def test_single_node_needs_a_lock_directory():
    with pytest.raises(exceptions.ConfigurationError) as e:
        hacluster.get_coordinator(None, 'b1', node='n1')
    assert 'lock directory' in str(e.value)


def test_a_lock_cannot_be_used_before_start(tmp_path):
    c = hacluster.get_coordinator('file://%s' % tmp_path, 'b1', node='n1')
    with pytest.raises(exceptions.NotStarted):
        c.get_lock('x').acquire()


def test_non_blocking_never_waits(coord):
    writer = coord.get_lock('nb')
    assert writer.acquire()
    started = time.monotonic()
    assert coord.get_lock('nb', shared=True).acquire(blocking=False) is False
    assert coord.get_lock('nb').acquire(blocking=False) is False
    assert time.monotonic() - started < 0.1
    writer.release()


def test_two_coordinators_of_one_process_still_exclude_each_other(tmp_path):
    url = 'file://%s' % tmp_path
    with hacluster.get_coordinator(url, 'b1', node='a') as a, \
            hacluster.get_coordinator(url, 'b1', node='b') as b:
        assert a.get_lock('x').acquire(False)
        assert b.get_lock('x').acquire(False) is False


def test_a_writer_giving_up_lets_waiting_readers_in(coord):
    r0 = coord.get_lock('wg', shared=True)
    assert r0.acquire()
    w = coord.get_lock('wg')
    got = []
    tw = threading.Thread(target=lambda: w.acquire(blocking=0.3))
    tw.start()
    time.sleep(0.1)
    r1 = coord.get_lock('wg', shared=True)
    tr = threading.Thread(target=lambda: got.append(
        (r1.acquire(blocking=3), time.monotonic())))
    tr.start()
    tw.join()
    gave_up = time.monotonic()
    tr.join()
    assert got[0][0] is True and got[0][1] - gave_up < 0.5
    r1.release()
    r0.release()
