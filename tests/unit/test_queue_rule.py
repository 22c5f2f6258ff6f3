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

import pytest

from hacluster import exceptions
from hacluster import locks


def q(*entries):
    """(revision, mode) pairs to queue entries."""
    return [(rev, 'p/%x-%d-%s' % (rev, rev, mode)) for rev, mode in entries]


def test_first_entry_holds_an_exclusive_lock():
    assert locks.find_blocker(q((5, 'w')), 5, shared=False) is None


def test_an_exclusive_waiter_waits_for_its_immediate_predecessor():
    entries = q((3, 'r'), (4, 'w'), (6, 'r'), (9, 'w'))
    assert locks.find_blocker(entries, 9, shared=False)[0] == 6


def test_readers_share_with_earlier_readers():
    assert locks.find_blocker(q((3, 'r'), (4, 'r'), (5, 'r')), 5,
                              shared=True) is None


def test_a_reader_waits_for_the_latest_earlier_writer_only():
    entries = q((2, 'w'), (3, 'r'), (4, 'w'), (5, 'r'), (7, 'r'))
    assert locks.find_blocker(entries, 7, shared=True)[0] == 4


def test_a_writer_is_not_overtaken_by_later_readers():
    entries = q((2, 'r'), (3, 'w'), (4, 'r'))
    # the reader that came after the writer waits for it ...
    assert locks.find_blocker(entries, 4, shared=True)[0] == 3
    # ... and the writer waits only for the reader before it.
    assert locks.find_blocker(entries, 3, shared=False)[0] == 2


def test_later_entries_never_block():
    assert locks.find_blocker(q((5, 'w'), (8, 'w')), 5, shared=False) is None


@pytest.mark.parametrize('value, expected', [
    (True, None), (False, 0.0), (None, 0.0), (0, 0.0), (2.5, 2.5)])
def test_blocking_values(value, expected):
    assert locks.parse_blocking(value) == expected


@pytest.mark.parametrize('value', [-1, 'soon', [1]])
def test_bad_blocking_values_are_refused(value):
    with pytest.raises(exceptions.ConfigurationError) as e:
        locks.parse_blocking(value)
    assert 'blocking' in str(e.value)


# -- the safety check of a blocked waiter (locks module docstring) ------------

def test_no_safety_read_while_nothing_changed_in_etcd():
    # an idle cluster: the keep-alives report the revision of our read
    assert not locks.safety_read_due(40, 40, since_read=3600.0, period=2.0)


def test_a_safety_read_once_the_revision_moved_and_the_period_passed():
    assert locks.safety_read_due(41, 40, since_read=2.0, period=2.0)
    assert not locks.safety_read_due(41, 40, since_read=1.0, period=2.0)


def test_a_timed_wait_returning_a_hair_early_still_counts():
    assert locks.safety_read_due(41, 40, since_read=1.99, period=2.0)


def test_the_safety_period_doubles_while_the_queue_stays_as_it_was():
    period = 0.5
    seen = []
    for _ in range(5):
        period = locks.next_safety_period(period, changed=False, woken=False,
                                          start=0.5, ceiling=3.0)
        seen.append(period)
    assert seen == [1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize('changed,woken', [(True, False), (False, True)])
def test_a_change_or_a_wake_up_sets_the_period_back(changed, woken):
    assert locks.next_safety_period(3.0, changed=changed, woken=woken,
                                    start=0.5, ceiling=3.0) == 0.5
