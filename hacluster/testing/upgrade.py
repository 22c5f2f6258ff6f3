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

"""A rolling upgrade of a manila cluster, node by node, from N to N+1 to
the canary N+2: the steps and checks shared by the rolling-upgrade test
(tests/functional/test_upgrade.py) and ``tools/demo --upgrade``.

"N" is a real older commit of this repository (:data:`OLD_COMMIT`,
extracted with ``git archive`` and put first on a node's PYTHONPATH), "N+1"
the working tree, "N+2" the working tree with HACLUSTER_CANARY_PROTOCOL=1
(the next protocol: fan-out RPC 1.1, claim format 2, a new claimed
operation; see :mod:`hacluster.protocol`).

Steps, each followed by :meth:`Rolling.check` (no share left in creating,
every claim resolved, one leader, every node a member, leader-only polls
from the current leader, the old version's status command reads the
cluster):

1. all on N, shares created;
2. one node upgraded to N+1 under an N leader, then SIGKILLed in the middle
   of a create: the N leader recovers an N+1 claim;
3. an N+1 leader over N members (the N nodes restart behind it in the
   queue); an N node SIGKILLed mid-create: N+1 recovers an N claim; its
   fan-out cycles keep format 1 (the ledger where N looks for it);
4. the rest to N+1 (cycles move to format 2, the ledger out of the
   members' watch); then to the canary: a canary leader pins the fan-out
   RPC to 1.0 while an N+1 member remains, and to 1.1 once none does.

Blocks for minutes (manila-share restarts); raises AssertionError naming
the check that failed.
"""

import io
import json
import os
import subprocess
import tarfile

from hacluster import keys as _keys
from hacluster import protocol as _protocol
from hacluster.testing.process import wait_for

#: N: the end of the previous development round (fencing, structure), a
#: version older than the protocol contract (its records carry no compat).
OLD_COMMIT = '0b986d2'
CANARY = {'HACLUSTER_CANARY_PROTOCOL': '1'}
NODES = ('node1', 'node2', 'node3')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def extract_old_tree(dest, commit=OLD_COMMIT):
    """Extract the ``hacluster`` package of ``commit`` into ``dest``; return
    ``dest``. Needs this repository's history (a full clone).

    :raises RuntimeError: git could not produce it (the message says why).
    """
    try:
        blob = subprocess.run(
            ['git', '-C', ROOT, 'archive', '--format=tar', commit,
             'hacluster'], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            'a rolling upgrade needs commit %s of this repository (a full '
            'clone, not a shallow one): %s' % (
                commit, getattr(exc, 'stderr', b'').decode()[-500:] or exc))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter='data')
    return dest


class Rolling:
    """A manila cluster being upgraded: which node runs which version, and
    the checks made after every step (AssertionError when one fails)."""

    def __init__(self, cluster, old_tree, report=None):
        self.cluster = cluster
        self.old_env = {'PYTHONPATH': old_tree}
        self.versions = {}
        #: ``report(step, status)`` after each step's checks passed
        self.report = report or (lambda step, status: None)

    def run_as(self, name, version):
        node = self.cluster.nodes[name]
        env = {}
        if version == 'N':
            env = dict(self.old_env)
        elif version == 'N+2':
            env = dict(CANARY)
        node.env = env
        self.versions[name] = version

    def restart(self, name, version):
        """Stop ``name`` cleanly, start it as ``version``, wait until it
        serves."""
        node = self.cluster.nodes[name]
        if node.running:
            # N predates the clean stop of issue 17 (it may overrun
            # graceful_shutdown_timeout and be ended by oslo.service's
            # alarm): only the versions that have it are held to it
            self.cluster.stop(name, check=self.versions.get(name) != 'N')
        self.run_as(name, version)
        node.start()
        node.wait_ready()

    def status(self, env=None):
        rc, out, err = self.cluster.hacluster('status', '-f', 'json',
                                              env=env)
        assert rc in (0, 1, 2), (rc, out, err)
        return json.loads(out)

    def pins(self):
        """``{task: {node: rpc_pin}}`` from the fan-out tasks' published
        stats (read with a bare etcd client: an observer coordinator would
        be a member)."""
        from hacluster import etcd as _etcd
        from hacluster import keys as _keys
        from hacluster import url as _url
        client = _etcd.Client(_url.parse(self.cluster.backend_url))
        layout = _keys.Layout(self.cluster.cluster)
        kvs, _ = client.get_prefix(layout.tasks)
        out = {}
        for kv in kvs:
            name, what, node = layout.parse_task_key(kv.key)
            if what == 'stats' and kv.json().get('mode') == 'fanout':
                out.setdefault(name, {})[node] = kv.json().get('rpc_pin')
        return out

    def leader_pins(self):
        """The pins of the leader's fan-out tasks that ran a cycle."""
        leader = self.leader()
        return {pin for nodes in self.pins().values()
                for pin in [nodes.get(leader)] if pin is not None}

    def leader(self):
        return (self.status().get('leader') or {}).get('node')

    def wait_leader(self, pred, what):
        return wait_for(lambda: pred(self.leader()), 60, what)

    def slow_create(self, owner, name):
        """A 30 s create, waited for until it runs on ``owner``: creates
        go to any node (one RPC topic per backend), so try until one lands
        there."""
        for _ in range(12):
            [share] = self.cluster.create_shares(1, name='slow30-' + name)
            sid = share['instance_id']
            start = wait_for(lambda: [
                e for e in self.cluster.events('create_share.start')
                if e['id'] == sid], 30, 'the create to start')
            if start[0]['node'] == owner:
                return sid
            # not there: let it finish and try again
        raise AssertionError('no create landed on %s' % owner)

    def cycles_in(self, fmt, by=None, what=''):
        """Wait until a fan-out cycle started from now on is done, and
        check that every such cycle (of any fan-out task) is in cycle
        format ``fmt`` (1: its ledger in the old place, 2: outside the
        members' watch; its id must say the same) and led by ``by`` if
        given. (Tasks with a long spacing may show an older cycle.)"""
        import time
        since = time.time()

        def recent():
            cycles = [t.get('last_cycle') or {} for t in
                      self.status()['tasks'] if t.get('mode') == 'fanout']
            return [c for c in cycles if c.get('status') == 'done' and
                    (c.get('started_at') or 0) >= since]
        cycles = wait_for(recent, 60, '%s: a new fan-out cycle' % what)
        for c in cycles:
            assert c.get('format', 1) == fmt and \
                _keys.Layout.ledger_apart(c['cycle_id']) == (fmt == 2), \
                '%s: a cycle not in format %d: %s' % (what, fmt, c)
            assert by is None or c.get('node') == by, (what, by, c)
        self.report('fan-out cycles in format %d (%s)' % (fmt, what), None)

    def check(self, step):
        """After each step: nothing stuck, every claim resolved, one leader,
        and the old version's status command still reads the cluster."""
        def settled():
            sts = self.cluster.statuses()
            return all(s['status'] not in ('creating', 'deleting')
                       or 'slow30' in (s.get('name') or '')
                       for s in sts.values()) and sts
        wait_for(settled, 60, '%s: no share left in creating' % step)
        wait_for(lambda: not self.status()['claims'], 60,
                 '%s: every claim resolved' % step)
        st = self.status()
        assert st['leader'] and st['leader']['node'] in self.versions, st
        members = {m['node']: m for m in st['members']}
        assert set(members) == set(self.cluster.nodes), members
        # leader-only polls come from the current leader (not from a
        # previous term's, of whichever version)

        def polls_from_leader():
            now = self.status()
            lead = (now.get('leader') or {}).get('node')
            tasks = [t for t in now['tasks'] if t.get('mode') == 'leader'
                     and (t.get('spacing') or 99) <= 10]
            return lead and tasks and all(t['last_run_on'] == lead
                                          for t in tasks)
        wait_for(polls_from_leader, 60,
                 '%s: leader-only polls from the current leader' % step)
        old = self.status(env=self.old_env)
        assert {m['node'] for m in old['members']} == set(members)
        assert old['leader']['node'] == st['leader']['node']
        self.report(step, st)
        return st


def _recovered(cluster, sid):
    return cluster.db_status(sid) == 'error'


def run(cluster, old_tree, report=None):
    """Start ``cluster`` (a :class:`~hacluster.testing.manila_rig.
    ManilaCluster` of :data:`NODES`, not started) on N and upgrade it as
    the module doc says. ``report(step, status)`` is called after each
    step's checks (status None for a note)."""
    rolling = Rolling(cluster, old_tree, report)
    for name in NODES:
        rolling.run_as(name, 'N')
    cluster.start()
    cluster.create_shares(3, name='before')
    st = rolling.check('all on N')
    assert all(m.get('compat') is None for m in st['members'])
    n_leader = st['leader']['node']
    term = st['leader']['term']

    # 2. one node on N+1 under an N leader; it dies mid-create: the N
    # leader recovers a claim an N+1 node wrote
    first = next(n for n in NODES if n != n_leader)
    rolling.restart(first, 'N+1')
    assert rolling.leader() == n_leader
    sid = rolling.slow_create(first, 'n1-owner')
    cluster.kill(first)
    wait_for(lambda: _recovered(cluster, sid), 30,
             'the N leader to recover the N+1 claim')
    rolling.restart(first, 'N+1')
    st = rolling.check('N leader over an N+1 member')
    assert st['leader']['term'] >= term

    # 3. an N+1 leader over N members: the N nodes restart (as N) behind
    # the N+1 node in the queue
    other = next(n for n in NODES if n not in (first, n_leader))
    for name in (n_leader, other):      # the queue's order
        rolling.restart(name, 'N')
    rolling.wait_leader(lambda node: node == first, 'the N+1 node to lead')
    victim = next(n for n in NODES if n != first)
    sid = rolling.slow_create(victim, 'n-owner')
    cluster.kill(victim)
    wait_for(lambda: _recovered(cluster, sid), 30,
             'the N+1 leader to recover an N claim')
    rolling.restart(victim, 'N+1')     # the recovered node comes back new
    rolling.check('N+1 leader over N members')
    # an N member is live: the N+1 leader keeps the ledger where N looks
    rolling.cycles_in(1, by=first, what='an N+1 leader over an N member')

    # 4. the rest to N+1, then everyone to the canary, one at a time
    for name in NODES:
        if rolling.versions[name] == 'N':
            rolling.restart(name, 'N+1')
    st = rolling.check('all on N+1')
    assert all(m['compat']['fanout_rpc'] == ['1.0'] for m in st['members'])
    # no N member left: the ledger moves out of the members' watch
    rolling.cycles_in(2, what='all on N+1')
    # the leader first: the canaries queue behind the N+1 nodes
    order = sorted(NODES, key=lambda n: n != st['leader']['node'])
    for i, name in enumerate(order[:2]):
        rolling.restart(name, 'N+2')
        st = rolling.check('%d of 3 on the canary' % (i + 1))
        assert sum(m['compat']['protocol'] == _protocol.PROTOCOL + 1
                   for m in st['members']) == i + 1
    # a canary leader over an N+1 member: the last N+1 node (leading)
    # restarts and queues behind the canaries
    last = order[2]
    assert rolling.leader() == last
    rolling.restart(last, 'N+1')
    rolling.wait_leader(lambda node: rolling.versions.get(node) == 'N+2',
                        'a canary to lead')
    rolling.check('a canary leading an N+1 member')
    wait_for(lambda: rolling.leader_pins() == {'1.0'}, 30,
             'the canary leader to pin fan-out RPC to 1.0')
    rolling.report('pins under a canary leader: %s' % sorted(
        rolling.leader_pins()), None)
    # the last node becomes a canary: the pin moves up
    rolling.restart(last, 'N+2')
    rolling.check('all on the canary')
    wait_for(lambda: rolling.leader_pins() == {'1.1'}, 30,
             'the pin to move to 1.1')
    rolling.report('pins with every node a canary: %s' % sorted(
        rolling.leader_pins()), None)
