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

"""hacluster.synchronized, on real single-node locks and on oslo.concurrency
external locks (no coordinator)."""

import threading
import time
import types

import pytest

import hacluster
from hacluster import exceptions


@pytest.fixture
def coord(tmp_path):
    c = hacluster.get_coordinator('file://%s' % tmp_path, 'b1', node='n1')
    taken = []
    real = c.get_lock

    def recording_get_lock(name, shared=False, on_lost=None):
        lock = real(name, shared=shared, on_lost=on_lost)
        acquire = lock.acquire

        def acquire_and_record(blocking=True):
            ok = acquire(blocking)
            if ok:
                taken.append(name)
            return ok
        lock.acquire = acquire_and_record
        return lock

    c.get_lock = recording_get_lock
    c.taken = taken
    with c:
        yield c


def test_names_are_formatted_from_the_arguments_and_f_name(coord):
    @hacluster.synchronized('{share.id}-{f_name}', coordinator=coord)
    def extend_share(self, share, new_size=1):
        return new_size

    share = types.SimpleNamespace(id='42')
    assert extend_share(None, share, new_size=3) == 3
    assert coord.taken == ['42-extend_share']


def test_defaults_take_part_in_the_name(coord):
    @hacluster.synchronized('pool-{pool}', coordinator=coord)
    def f(pool='default'):
        pass

    f()
    assert coord.taken == ['pool-default']


def test_several_names_are_taken_in_sorted_order(coord):
    @hacluster.synchronized('z-{a}', 'a-{b}', 'm', coordinator=coord)
    def f(a, b):
        return coord.held_locks()

    held = f('1', '2')
    assert coord.taken == ['a-2', 'm', 'z-1']
    assert len(held) == 3 and coord.held_locks() == []


def test_locks_are_released_when_the_function_raises(coord):
    @hacluster.synchronized('x', coordinator=coord)
    def f():
        raise KeyError('boom')

    with pytest.raises(KeyError):
        f()
    assert coord.held_locks() == []


def test_non_blocking_raises_instead_of_running_unlocked(coord):
    ran = []

    @hacluster.synchronized('busy', blocking=False, coordinator=coord)
    def f():
        ran.append(1)

    holder = coord.get_lock('busy')
    holder.acquire()
    try:
        with pytest.raises(exceptions.AcquireTimeout) as e:
            f()
        assert 'busy' in str(e.value)
        assert ran == []
    finally:
        holder.release()
    f()
    assert ran == [1]


def test_a_timeout_raises_after_waiting(coord):
    @hacluster.synchronized('busy', blocking=0.2, coordinator=coord)
    def f():
        pass

    holder = coord.get_lock('busy')
    holder.acquire()
    try:
        with pytest.raises(exceptions.AcquireTimeout):
            f()
    finally:
        holder.release()


def test_the_coordinator_can_be_given_lazily(coord):
    owner = types.SimpleNamespace(coordinator=None)

    @hacluster.synchronized('lazy', coordinator=lambda: owner.coordinator)
    def f():
        return coord.held_locks()

    owner.coordinator = coord
    assert [lk.name for lk in f()] == ['lazy']


def test_the_default_coordinator_is_used(coord):
    hacluster.set_default(coord)
    try:
        @hacluster.synchronized('dflt')
        def f():
            pass
        f()
        assert coord.taken == ['dflt']
    finally:
        hacluster.set_default(None)


def test_a_template_naming_a_missing_argument_fails_at_decoration():
    with pytest.raises(exceptions.ConfigurationError) as e:
        @hacluster.synchronized('{shar.id}')
        def f(share):
            pass
    assert 'shar' in str(e.value) and 'f' in str(e.value)


def test_no_name_is_refused():
    with pytest.raises(exceptions.ConfigurationError):
        hacluster.synchronized()


def test_without_a_coordinator_oslo_external_locks_are_used(
        tmp_path, monkeypatch):
    from oslo_concurrency import lockutils
    monkeypatch.setenv('OSLO_LOCK_PATH', str(tmp_path))
    lockutils.set_defaults(str(tmp_path))
    hacluster.set_default(None)
    inside = threading.Event()
    proceed = threading.Event()

    @hacluster.synchronized('ext-{x}', lock_file_prefix='manila-')
    def slow(x):
        inside.set()
        proceed.wait(5)

    @hacluster.synchronized('ext-{x}', blocking=False,
                            lock_file_prefix='manila-')
    def quick(x):
        pass

    t = threading.Thread(target=slow, args=('1',))
    t.start()
    assert inside.wait(5)
    # The same file manila's utils.synchronized('ext-1', external=True)
    # would use.
    assert (tmp_path / 'manila-ext-1').exists()
    with pytest.raises(exceptions.AcquireTimeout):
        quick('1')
    proceed.set()
    t.join()
    quick('1')


def test_without_a_coordinator_a_manila_name_is_manilas_own_lock(
        tmp_path, monkeypatch):
    """What the audit's fix writes (``'manila-' + name``) must exclude
    manila's own ``utils.synchronized(name)`` in single-node mode too:
    within one process as well as through the lock file."""
    from oslo_concurrency import lockutils
    monkeypatch.setenv('OSLO_LOCK_PATH', str(tmp_path))
    lockutils.set_defaults(str(tmp_path))
    hacluster.set_default(None)
    inside = threading.Event()
    proceed = threading.Event()

    @hacluster.synchronized('manila-pool-{x}')
    def fixed(x):
        inside.set()
        proceed.wait(5)

    # manila.utils.synchronized(name, external=True) is this:
    @lockutils.synchronized('pool-1', lock_file_prefix='manila-',
                            external=True)
    def manilas_own():
        return time.monotonic()

    t = threading.Thread(target=fixed, args=('1',))
    t.start()
    assert inside.wait(5)
    got = []
    other = threading.Thread(target=lambda: got.append(manilas_own()))
    other.start()
    time.sleep(0.2)            # give it the chance to (wrongly) get in
    assert not got
    released = time.monotonic()
    proceed.set()
    t.join()
    other.join(5)
    assert got and got[0] >= released
