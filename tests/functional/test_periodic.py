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

"""Periodic tasks with real etcd and real RabbitMQ, members in separate
processes."""

import collections
import os
import signal
import time

import hacluster
from hacluster.periodic import ledger as _ledger
from hacluster.testing import servers
from helpers import wait_for

SCRIPT = os.path.join(os.path.dirname(__file__), 'periodicworker.py')


def start_members(workers, etcd_url, amqp_url, cluster, record, nodes,
                  *extra):
    members = {}
    for node in nodes:
        w = workers(etcd_url, amqp_url, cluster, node, record, *extra,
                    script=SCRIPT)
        members[node] = w
    for w in members.values():
        w.wait_line('READY', timeout=30)
    return members


def stop_members(members, timeout=30):
    for w in members.values():
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    stuck = []
    for name, w in members.items():
        try:
            w.proc.wait(timeout)
        except Exception:
            w.proc.send_signal(signal.SIGUSR1)     # dump its stacks
            time.sleep(1)
            w.proc.kill()
            w.proc.wait(10)
            stuck.append('%s:\n%s' % (name, w.stderr_tail(6000)))
    assert not stuck, 'members did not stop:\n' + '\n'.join(stuck)


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def items_by_cycle(path):
    """{cycle: Counter(item)} and {cycle: Counter(node)}."""
    items, nodes = collections.defaultdict(collections.Counter), \
        collections.defaultdict(collections.Counter)
    for r in records(path):
        if r[0] == 'item':
            items[r[2]][r[3]] += 1
            nodes[r[2]][r[1]] += 1
    return items, nodes


def observer(etcd_url, cluster):
    return hacluster.get_coordinator(etcd_url, cluster, 'test-observer',
                                     lease_ttl=3, renew_deadline=2,
                                     renew_interval=0.5)


def cycle_done(obs, cycle_id):
    current = _ledger.Ledger(obs, 'poll').current()
    return current if current and current['cycle_id'] == cycle_id and \
        current['status'] == 'done' else None


def test_each_item_once_per_cycle_and_leader_tasks_on_one_node(
        etcd, rabbitmq, cluster_name, workers, tmp_path):
    record = str(tmp_path / 'record')
    members = start_members(workers, etcd.url, rabbitmq.transport_url,
                            cluster_name, record, ['a', 'b', 'c'])
    started = time.time()
    time.sleep(7.0)
    stop_members(members)
    elapsed = time.time() - started
    lines = records(record)
    listed = [r for r in lines if r[0] == 'list']
    items, nodes = items_by_cycle(record)
    complete = [r[2] for r in listed if sum(items[r[2]].values()) >= 30]
    assert len(complete) >= 2, (listed, {c: sum(v.values())
                                         for c, v in items.items()})
    for cycle in complete:
        # each of the 30 items handled exactly once: 30 handler calls per
        # cycle, not 30 x 3
        assert sorted(items[cycle]) == ['item-%03d' % i for i in range(30)]
        assert set(items[cycle].values()) == {1}
        # spread over the members
        assert len(nodes[cycle]) >= 2, nodes[cycle]
    # each cycle listed on one node only (the leader)
    assert len({r[2] for r in listed}) == len(listed)
    # the leader-only task ran on one node, about once per second: not x3
    stats = [r for r in lines if r[0] == 'stats']
    assert len({r[1] for r in stats}) == 1
    assert len(stats) <= elapsed / 1.0 + 1
    # the every-node task ran on all three
    assert {r[1] for r in lines if r[0] == 'local'} == {'a', 'b', 'c'}


def test_a_member_killed_mid_cycle_loses_no_item(etcd, rabbitmq,
                                                 cluster_name, workers,
                                                 tmp_path):
    record = str(tmp_path / 'record')
    members = start_members(
        workers, etcd.url, rabbitmq.transport_url, cluster_name, record,
        ['a', 'b', 'c'], '--items', '60', '--item-sleep', '0.1',
        '--poll-spacing', '60', '--item-timeout', '30')
    with observer(etcd.url, cluster_name) as obs:
        leader = obs.get_leader()['node']
        victim = next(n for n in members if n != leader)
        wait_for(lambda: items_by_cycle(record)[1], 10, 'the first items')
        cycle = next(r[2] for r in records(record) if r[0] == 'list')
        members[victim].proc.kill()
        killed = time.monotonic()
        # its items are handed to the others once it is known dead
        # (lease_ttl 3 s), then ~20 items x 0.1 s at most
        wait_for(lambda: cycle_done(obs, cycle), 15, 'the cycle to finish')
        done = cycle_done(obs, cycle)
        took = time.monotonic() - killed
    stop_members(members)
    items, nodes = items_by_cycle(record)
    assert sorted(items[cycle]) == ['item-%03d' % i for i in range(60)]
    assert done['done'] == 60 and done['failed'] == 0
    assert done['redispatched'] > 0
    assert took < 3 + 2 + 20 * 0.1 + 2
    # only items of the killed member can have been handled twice
    twice = [i for i, n in items[cycle].items() if n > 1]
    assert len(twice) <= members_items_upper_bound(60)


def members_items_upper_bound(total):
    # one member's share, generously (a hash ring is not exactly even)
    return total


def test_the_leader_killed_mid_cycle_loses_no_item(etcd, rabbitmq,
                                                   cluster_name, workers,
                                                   tmp_path):
    record = str(tmp_path / 'record')
    members = start_members(
        workers, etcd.url, rabbitmq.transport_url, cluster_name, record,
        ['a', 'b', 'c'], '--items', '60', '--item-sleep', '0.1',
        '--poll-spacing', '60', '--item-timeout', '30')
    with observer(etcd.url, cluster_name) as obs:
        leader = obs.get_leader()['node']
        wait_for(lambda: items_by_cycle(record)[1], 10, 'the first items')
        cycle = next(r[2] for r in records(record) if r[0] == 'list')
        members[leader].proc.kill()
        # a new leader adopts the unfinished cycle and completes it
        wait_for(lambda: cycle_done(obs, cycle), 20, 'the cycle to finish')
        done = cycle_done(obs, cycle)
        assert done['node'] == leader            # the cycle it started ...
        assert done['adopted_by'] != obs.get_members()[leader]['member_id'] \
            if leader in obs.get_members() else True
        assert done.get('adopted_by')            # ... finished by another
    stop_members(members)
    items, _ = items_by_cycle(record)
    assert sorted(items[cycle]) == ['item-%03d' % i for i in range(60)]
    assert done['done'] == 60


def test_a_rabbitmq_restart_mid_cycle_loses_no_item(etcd, cluster_name,
                                                    workers, tmp_path):
    record = str(tmp_path / 'record')
    with servers.RabbitMQServer() as broker:
        members = start_members(
            workers, etcd.url, broker.transport_url, cluster_name, record,
            ['a', 'b'], '--items', '40', '--item-sleep', '0.05',
            '--poll-spacing', '120', '--item-timeout', '4')
        with observer(etcd.url, cluster_name) as obs:
            wait_for(lambda: any(r[0] == 'list' for r in records(record)),
                     10, 'the cycle to start')
            cycle = next(r[2] for r in records(record) if r[0] == 'list')
            broker.restart()
            wait_for(lambda: cycle_done(obs, cycle), 60,
                     'the cycle to finish after the broker came back')
            done = cycle_done(obs, cycle)
        stop_members(members)
    items, _ = items_by_cycle(record)
    assert sorted(items[cycle]) == ['item-%03d' % i for i in range(40)]
    assert done['done'] == 40 and done['failed'] == 0


def test_one_task_stops_and_starts_at_run_time_and_spacing_comes_from_config(
        etcd, rabbitmq, cluster_name, workers, tmp_path):
    record = str(tmp_path / 'record')
    members = start_members(
        workers, etcd.url, rabbitmq.transport_url, cluster_name, record,
        ['solo'], '--local-spacing', '0.5', '--stats-spacing', '0.5',
        '--config-spacing', 'poll:7')
    w = members['solo']
    assert w.wait_line('READY').split()[2] == '7.0'

    def count(kind, since):
        return sum(1 for r in records(record) if r[0] == kind and
                   float(r[2]) >= since)
    time.sleep(1.5)
    w.send('stop-task local')
    w.wait_line('DONE stop-task')
    stopped = time.time()
    time.sleep(1.6)
    assert count('local', stopped + 0.1) == 0      # stopped ...
    assert count('stats', stopped + 0.1) >= 2      # ... the others go on
    w.send('start-task local')
    w.wait_line('DONE start-task')
    restarted = time.time()
    time.sleep(1.6)
    assert count('local', restarted) >= 2
    # spacing honoured: local every 0.5 s
    times = [float(r[2]) for r in records(record) if r[0] == 'local' and
             float(r[2]) >= restarted]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and all(0.35 < g < 0.9 for g in gaps), gaps
    # paused for the whole cluster through etcd, then resumed
    w.send('pause stats')
    w.wait_line('DONE pause')
    time.sleep(0.3)
    paused = time.time()
    time.sleep(1.2)
    assert count('stats', paused) == 0
    w.send('resume stats')
    w.wait_line('DONE resume')
    resumed = time.time()
    time.sleep(1.5)
    assert count('stats', resumed) >= 1
    stop_members(members)


def test_fan_out_under_the_eventlet_backend(etcd, rabbitmq, cluster_name,
                                            workers, tmp_path):
    record = str(tmp_path / 'record')
    members = start_members(workers, etcd.url, rabbitmq.transport_url,
                            cluster_name, record, ['e1', 'e2'],
                            '--backend', 'eventlet')
    time.sleep(5.0)
    stop_members(members)
    items, nodes = items_by_cycle(record)
    complete = [c for c, v in items.items() if sum(v.values()) >= 30]
    assert complete
    for cycle in complete:
        assert set(items[cycle].values()) == {1} and len(items[cycle]) == 30
    assert len({r[1] for r in records(record) if r[0] == 'stats'}) == 1


def test_single_node_mode_runs_every_task_here(tmp_path):
    from hacluster.periodic import EVERY
    from hacluster.periodic import FANOUT
    from hacluster.periodic import LEADER
    from hacluster.periodic import periodic_task
    from hacluster.periodic import PeriodicRunner
    from oslo_service import backend
    if backend.get_backend_type() is None:
        backend.init_backend(backend.BackendType.THREADING)
    seen = collections.Counter()

    class T:
        @periodic_task(spacing=0.2, mode=LEADER, initial_delay=0)
        def lead(self, ctx):
            seen['lead'] += 1

        @periodic_task(spacing=0.2, mode=EVERY, initial_delay=0)
        def each(self, ctx):
            seen['each'] += 1

        @periodic_task(spacing=0.2, mode=FANOUT, initial_delay=0,
                       handler='_one')
        def fan(self, ctx):
            return ['x', 'y', 'z']

        def _one(self, ctx, item_id, payload):
            seen[item_id] += 1

    with hacluster.get_coordinator('file://%s' % tmp_path, 'b1', 'n1') as c:
        runner = PeriodicRunner(c)
        runner.add_all(T())
        runner.start()
        time.sleep(0.7)
        # pausing works here too: this node is the whole cluster
        runner.pause_task('each')
        wait_for(lambda: runner.stats('each')['paused'], 3, 'the pause')
        time.sleep(0.3)
        paused_at = seen['each']
        time.sleep(0.5)
        assert seen['each'] == paused_at
        runner.resume_task('each')
        wait_for(lambda: seen['each'] > paused_at, 3, 'ticks again')
        runner.stop()
    assert seen['lead'] >= 2 and seen['each'] >= 2
    assert seen['x'] == seen['y'] == seen['z'] >= 2


# -- RabbitMQ queues of departed members --------------------------------------

def server_queues(rabbitmq, cluster):
    """{queue name: consumers} of the per-server fan-out queues of
    ``cluster`` (``hacluster.<cluster>.<server>``; not the shared topic
    queue, not the self-expiring fan-out queues)."""
    from hacluster.periodic import rpc as _rpc
    prefix = _rpc.topic_for(cluster) + '.'
    out = rabbitmq.rabbitmqctl('list_queues', '-q', '--no-table-headers',
                               'name', 'consumers').stdout
    queues = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith(prefix):
            queues[parts[0]] = int(parts[1])
    return queues


def test_departed_members_leave_no_queues_behind(etcd, rabbitmq,
                                                 cluster_name, workers,
                                                 tmp_path):
    """Every incarnation listens on its own queue; killed ones must not
    accumulate (the leader deletes a queue no live member serves), and a
    clean stop deletes its own at once."""
    record = str(tmp_path / 'record')
    args = ('--items', '6', '--poll-spacing', '0.5')
    members = start_members(workers, etcd.url, rabbitmq.transport_url,
                            cluster_name, record, ['a', 'b', 'c'], *args)
    with observer(etcd.url, cluster_name) as obs:
        wait_for(lambda: len(server_queues(rabbitmq, cluster_name)) == 3,
                 20, 'three server queues')
        leader = obs.get_leader()['node']
        victim = next(n for n in members if n != leader)
        # Three incarnations of the victim killed one after another.
        for _ in range(3):
            members[victim].proc.kill()
            members[victim].proc.wait(10)
            members.update(start_members(
                workers, etcd.url, rabbitmq.transport_url, cluster_name,
                record, [victim], *args))
        wait_for(lambda: len(server_queues(rabbitmq, cluster_name)) == 3,
                 30, 'the killed incarnations\' queues to be deleted')
        queues = server_queues(rabbitmq, cluster_name)
        assert set(queues.values()) == {1}, queues
        # every registered queue is a live one
        kvs, _ = obs.client.get_prefix(obs.layout.fanout_queues)
        assert len(kvs) == 3
        # a clean stop removes its own queue and record at once
        stop_members({victim: members.pop(victim)})
        queues = server_queues(rabbitmq, cluster_name)
        assert len(queues) == 2, queues
        kvs, _ = obs.client.get_prefix(obs.layout.fanout_queues)
        assert len(kvs) == 2
        # a member that dies and stays dead: its queue goes once its
        # departure is seen (lease_ttl 3 s), not at the next minute's sweep
        leader = obs.get_leader()['node']
        gone = next(n for n in members if n != leader)
        members.pop(gone).proc.kill()
        wait_for(lambda: len(server_queues(rabbitmq, cluster_name)) == 1,
                 15, 'the dead member\'s queue to be deleted')
        # and the others still finish cycles
        cycle = _ledger.Ledger(obs, 'poll').current()['cycle_id']
        wait_for(lambda: (_ledger.Ledger(obs, 'poll').current() or {})
                 .get('cycle_id') != cycle and cycle_done(
                     obs, _ledger.Ledger(obs, 'poll').current()['cycle_id']),
                 20, 'a later cycle to finish')
    stop_members(members)


def test_a_queue_with_a_consumer_is_never_deleted(rabbitmq, cluster_name):
    """The guard against deleting the queue of a member that is alive but
    looks gone (frozen with its connection up, or its record deleted)."""
    import amqp
    from hacluster.periodic import queues as _queues
    from hacluster.periodic import rpc as _rpc
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    conf([], project='hacluster', default_config_files=[])
    transport = _rpc.get_transport(conf, rabbitmq.transport_url)
    try:
        broker = _queues.Broker(transport)
        name = _queues.server_queue(cluster_name, 'frozen')
        url = transport._driver._url.hosts[0]
        conn = amqp.Connection(host='%s:%d' % (url.hostname, url.port),
                               userid=url.username, password=url.password)
        conn.connect()
        channel = conn.channel()
        channel.queue_declare(name, auto_delete=False)
        tag = channel.basic_consume(name, callback=lambda m: None)
        assert broker.delete_unused([name, name + '-absent']) == \
            ([name + '-absent'], [name])
        channel.basic_cancel(tag)
        assert broker.delete_unused([name]) == ([name], [])
        conn.close()
        assert name not in server_queues(rabbitmq, cluster_name)
        # another driver has no such queues: nothing to do
        fake = _rpc.get_transport(conf, 'fake:/')
        assert _queues.Broker(fake).delete_unused([name]) == ([], [])
    finally:
        transport.cleanup()
