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

import collections

import pytest

from hacluster import exceptions
from hacluster.periodic.fanout_leader import interleave
from hacluster.periodic import periodic_task
from hacluster.periodic.rpc import safe_name
from hacluster.periodic.rpc import topic_for
from hacluster.periodic.runner import assign_bounded
from hacluster.periodic.task import spec_of

MEMBERS = ['node-1-3fa9c2d1', 'node-2-77b0e1aa', 'node-3-0c9d4f10']
ITEMS = ['share-%04d' % i for i in range(300)]


def test_no_member_gets_more_than_five_percent_over_its_share():
    for n in (1, 2, 3, 7):
        members = MEMBERS[:min(n, 3)] + ['x%d' % i
                                         for i in range(max(0, n - 3))]
        owners = assign_bounded(members, ITEMS)
        counts = collections.Counter(owners.values())
        assert sum(counts.values()) == 300
        assert max(counts.values()) <= -(-300 * 1.05 // n)


def test_assignment_is_deterministic_and_mostly_stable():
    assert assign_bounded(MEMBERS, ITEMS) == assign_bounded(
        list(reversed(MEMBERS)), ITEMS)
    before = assign_bounded(MEMBERS, ITEMS)
    after = assign_bounded(MEMBERS[:2], ITEMS)
    survivors = [i for i in ITEMS if before[i] in MEMBERS[:2]]
    moved = [i for i in survivors if after[i] != before[i]]
    assert len(moved) <= len(survivors) * 0.15


def test_assigning_to_nobody_is_an_error():
    with pytest.raises(exceptions.HAClusterError):
        assign_bounded([], ITEMS)


def test_names_are_made_safe_for_amqp_routing_keys():
    assert safe_name('node-1') == 'node-1'
    assert '#' not in safe_name('host@backend#pool')
    assert safe_name('a@b') != safe_name('a_b')
    assert topic_for('host@dummy').startswith('hacluster.host_dummy_')


@pytest.mark.parametrize('kwargs, words', [
    (dict(mode='sometimes'), 'mode must be one of'),
    (dict(spacing=0), 'spacing must be a positive'),
    (dict(spacing='60'), 'spacing must be a positive'),
    (dict(mode='fanout'), 'needs a handler'),
    (dict(mode='leader', handler='x'), 'only fanout tasks take a handler'),
    (dict(jitter=1.5), 'jitter'),
    (dict(mode='fanout', handler='h', max_workers=0), 'max_workers'),
    (dict(initial_delay=-1), 'initial_delay'),
])
def test_bad_task_declarations_are_refused_naming_the_argument(kwargs,
                                                               words):
    with pytest.raises(exceptions.ConfigurationError) as e:
        @periodic_task(**kwargs)
        def poll(ctx):
            pass
    assert words in str(e.value) and "'poll'" in str(e.value)


def test_the_decorator_only_tags():
    @periodic_task(spacing=5, mode='leader')
    def stats(ctx):
        return 'ran'
    assert stats(None) == 'ran'
    spec = spec_of(stats)
    assert (spec.name, spec.mode, spec.spacing) == ('stats', 'leader', 5)


def test_a_runner_refuses_untagged_functions_and_unknown_handlers(tmp_path):
    import hacluster
    from hacluster.periodic import PeriodicRunner

    class M:
        @periodic_task(mode='fanout', handler='_missing')
        def poll(self, ctx):
            return []

    with hacluster.get_coordinator('file://%s' % tmp_path, 'b', 'n') as c:
        runner = PeriodicRunner(c)
        with pytest.raises(exceptions.ConfigurationError) as e:
            runner.add(lambda ctx: None)
        assert 'not a periodic task' in str(e.value)
        with pytest.raises(exceptions.ConfigurationError) as e:
            runner.add(M().poll)
        assert "handler '_missing'" in str(e.value)
        with pytest.raises(exceptions.ConfigurationError) as e:
            runner.stop_task('nope')
        assert "no periodic task named 'nope'" in str(e.value)


def test_a_bad_spacing_in_config_names_the_option(tmp_path):
    from oslo_config import cfg

    import hacluster
    from hacluster import opts
    from hacluster.periodic import PeriodicRunner

    @periodic_task(spacing=5, mode='every')
    def tick(ctx):
        pass

    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], project='t', default_config_files=[])
    conf.set_override('task_spacing', {'tick': 'soon'}, group='hacluster')
    with hacluster.get_coordinator('file://%s' % tmp_path, 'b', 'n') as c:
        runner = PeriodicRunner(c, conf=conf)
        runner.add(tick)
        with pytest.raises(exceptions.ConfigurationError) as e:
            runner.start()
        assert '[hacluster] task_spacing' in str(e.value)


def test_every_owner_gets_its_first_batch_before_any_gets_its_second():
    items = {'i%03d' % i: {'owner': 'm%d' % (i % 3)} for i in range(250)}
    batches = interleave(items, 50)
    owners = [owner for owner, _ in batches]
    # 84 / 83 / 83 items: a first batch of 50 each, then the rest
    assert owners == ['m0', 'm1', 'm2'] * 2
    assert [len(qs) for _, qs in batches] == [50, 50, 50, 34, 33, 33]
    for owner, qs in batches:
        assert all(items[q]['owner'] == owner for q in qs)
    # every item exactly once, each owner's in their order
    assert sorted(q for _, qs in batches for q in qs) == sorted(items)
    for owner in ('m0', 'm1', 'm2'):
        mine = [q for o, qs in batches if o == owner for q in qs]
        assert mine == [q for q in items if items[q]['owner'] == owner]


def test_a_late_copy_of_old_cycles_does_not_evict_the_current_one():
    """A member remembers the items of the last few cycles so that a copy
    (a leader adopting the cycle casts again) is ignored; late batches of
    two older cycles arriving after the current one's must not make it
    forget the current one."""
    import threading

    from hacluster.periodic import fanout_member

    member = fanout_member.FanoutMember(None, threading.Event(), None)
    item = {'q': 'i1', 'id': 'i1', 'attempt': 1}
    current, older, oldest, ancient = ('300-c', '200-b', '100-a', '50-z')
    assert member._accept('t', current, [item]) == [item]
    for stale in (oldest, older, ancient):
        member._accept('t', stale, [dict(item)])
    # the copy of the current cycle's item is still recognised
    assert member._accept('t', current, [dict(item)]) == []
    # a new attempt of it is not a copy
    again = dict(item, attempt=2)
    assert member._accept('t', current, [again]) == [again]
