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

"""The main job: three real manila-share 23.0.1 processes, active-active.

Everything is private and started here, on free loopback ports: PostgreSQL
(manila's database, schema by ``manila-manage db sync``), RabbitMQ, etcd.
Three ``manila-share`` processes serve one backend (one manila ``host``)
with ``share_manager = hacluster.manila.manager.HAShareManager`` and
manila's DummyDriver with the hacluster mixin. Shares are created the way
manila's scheduler does it: database records, then the RPC cast to the
backend's shared queue.

The run: status; 6 shares created and spread over the nodes; backend stats
polled by the leader only; 3 more slow creates, and the *leader* SIGKILLed
in the middle of its create; the survivors elect a new leader and bring the
cut-short share to a final state (``error``); status again; a per-share
poll fanned out over the survivors; a survivor frozen (SIGSTOP) in the
middle of a create until its work was recovered, then resumed: it fences
itself instead of writing over the recovery (the share stays ``error``);
the killed node restarted under the same name without disturbing the
shares the others serve. Every claim is
checked at the end; prints ``DEMO OK`` (exit 0) or ``DEMO FAILED`` (exit 1).

    tools/demo            # bootstrap + this
    HACLUSTER_KEEP=1 tools/demo   # keep logs (the path is printed)
"""

import collections
import signal
import sys
import time

from hacluster.testing import manila_rig
from hacluster.testing import servers

LEASE_TTL = 3
INTERVAL = 2
SLOW_CREATE = 8

CHECKS = []


def check(ok, what):
    CHECKS.append((bool(ok), what))
    print('  [%s] %s' % ('ok' if ok else 'FAILED', what), flush=True)
    return ok


def say(text):
    print('\n== %s' % text, flush=True)


def show_status(cluster):
    rc, out, err = cluster.hacluster('status')
    print('\n$ hacluster status --config-file manila.conf\n' + out.rstrip())
    return rc, out


def summary(statuses, ids):
    return dict(collections.Counter(statuses[i]['status'] for i in ids))


def run(cluster):
    say('three manila-share processes (one backend %s, cluster %s)'
        % (cluster.backend_host, cluster.cluster))
    began = time.monotonic()
    cluster.start()
    print('  started in %.1f s: %s' % (time.monotonic() - began, ', '.join(
        '%s (pid %s)' % (n, node.pid) for n, node in cluster.nodes.items())))
    show_status(cluster)

    say('6 shares created through manila RPC (the shared queue spreads them)')
    ids = [s['instance_id'] for s in cluster.create_shares(6, 'first')]
    got = cluster.wait_statuses(ids, {'available', 'error'}, 90)
    served = collections.Counter(e['node'] for e in
                                 cluster.events('create_share.end'))
    print('  created per node: %s' % dict(sorted(served.items())))
    check(set(got.values()) == {'available'}, 'all 6 shares available')
    check(len(served) == 3, 'creates were served by all three nodes')

    say('backend stats polled by the leader only (%d s window)'
        % (4 * INTERVAL))
    leader = cluster.leader()
    since = time.time()
    time.sleep(4 * INTERVAL + 0.5)
    stats = collections.Counter(e['node'] for e in
                                cluster.events('stats', since=since))
    print('  get_share_stats calls per node: %s (leader %s; manila alone: '
          'every node, %d)' % (dict(stats), leader, 3 * 4))
    check(set(stats) == {leader}, 'only the leader polled backend stats')

    say('3 slow creates (%d s each); SIGKILL the leader in the middle of its '
        'create' % SLOW_CREATE)
    slow = [s['instance_id'] for s in cluster.create_shares(3, 'slow')]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        starts = {e['id']: e['node'] for e in
                  cluster.events('create_share.start') if e['id'] in slow}
        if len(starts) == 3:
            break
        time.sleep(0.2)
    on_leader = [i for i, n in starts.items() if n == leader]
    victim = leader if on_leader else starts[slow[0]]
    cut = (on_leader or [slow[0]])[0]
    time.sleep(1)
    killed_at = time.time()
    cluster.kill(victim)
    started = [e['t'] for e in cluster.events('create_share.start')
               if e['id'] == cut][0]
    print('  killed %s (master and worker, SIGKILL) %.1f s into the create '
          'of share instance %s' % (victim, killed_at - started, cut))
    statuses = cluster.statuses()
    print('  right after: %s' % summary(statuses, slow))
    got = cluster.wait_statuses([cut], {'available', 'error'},
                                LEASE_TTL + 2 + INTERVAL + 30)
    repaired = cluster.updated_at(cut) - killed_at
    print('  share instance %s: %s, %.1f s after the kill' % (
        cut, got[cut], repaired))
    check(got[cut] == 'error', 'the cut-short create ended in error '
          '(manila alone: creating for good)')
    check(repaired <= LEASE_TTL + 2 + INTERVAL,
          'repaired within lease_ttl + 2 s + one poll (%.1f s <= %d s)'
          % (repaired, LEASE_TTL + 2 + INTERVAL))
    rest = [i for i in slow if i != cut]
    got = cluster.wait_statuses(rest, {'available', 'error'}, 60)
    check(all(got[i] == 'available' for i in rest if starts[i] != victim),
          'the creates on the survivors finished: %s' % summary(
              cluster.statuses(), rest))
    new_leader = cluster.leader()
    check(new_leader not in (None, victim),
          'a survivor leads now (%s)' % new_leader)
    show_status(cluster)

    say('per-share poll fanned out over the survivors')
    waiting = ids[:4]
    for instance_id in waiting:
        cluster.client('set-status', instance_id, 'creating_from_snapshot')
    since = time.time()
    # the driver keeps them pending; watch 4 cycles
    time.sleep(4 * INTERVAL + 0.5)
    polls = cluster.events('get_share_status', since=since)
    per_share = collections.Counter(e['id'] for e in polls)
    pollers = collections.Counter(e['node'] for e in polls)
    print('  polls per node: %s; per share: %s' % (
        dict(pollers), sorted(per_share.values())))
    check(set(per_share) == set(waiting) and len(pollers) == 2,
          'each waiting share polled, by both survivors')
    check(max(per_share.values()) <= 5,
          'each share once per cycle (no node repeats another\'s poll)')
    for instance_id in waiting:
        cluster.client('set-status', instance_id, 'available')

    frozen(cluster, ids + slow)

    say('rolling restart: %s comes back under the same name' % victim)
    ensured = len(cluster.events('ensure_share'))
    cluster.start([victim])
    time.sleep(2)
    now = cluster.statuses()
    everything = ids + slow
    print('  statuses: %s' % summary(now, everything))
    check(not any(now[i]['status'] == 'ensuring' for i in everything) and
          len(cluster.events('ensure_share')) == ensured,
          'the restart did not re-ensure (or touch) the others\' shares')
    everything = [i for i in now if i in set(everything) | FROZEN]
    check(not any(now[i]['status'] == 'creating' for i in everything),
          'no share is left in creating')
    rc, out = show_status(cluster)
    check(rc == 0 and 'claims (0)' in out and 'members (3)' in out,
          'three members again, no claim left open, health OK')


FROZEN = set()


def frozen(cluster, others):
    say('a node frozen (SIGSTOP) mid-create past its lease, then resumed')
    shares = [s['instance_id'] for s in cluster.create_shares(2, 'frozen')]
    FROZEN.update(shares)
    deadline = time.monotonic() + 30
    starts = {}
    while len(starts) < 2 and time.monotonic() < deadline:
        starts = {e['id']: e for e in cluster.events('create_share.start')
                  if e['id'] in shares}
        time.sleep(0.2)
    share = shares[0]
    victim = starts[share]['node']
    sampler = manila_rig.StatusSampler(cluster, share)
    time.sleep(1)
    frozen_at = time.time()
    cluster.signal(victim, signal.SIGSTOP)
    print('  froze %s (master and worker, SIGSTOP) %.1f s into the create of '
          'share instance %s' % (victim, frozen_at - starts[share]['t'],
                                 share))
    deadline = time.monotonic() + LEASE_TTL + 2 + INTERVAL + 30
    while cluster.db_status(share) != 'error' and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    recovered = time.time() - frozen_at
    print('  a survivor recovered it: error %.1f s into the freeze; %s is '
          'resumed now, in the middle of its create' % (recovered, victim))
    cluster.signal(victim, signal.SIGCONT)
    log = cluster.nodes[victim].log_since_start
    deadline = time.monotonic() + 30
    while 'FENCED' not in log() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = [ln for ln in log().splitlines() if 'FENCED' in ln]
    print('  %s log: %s' % (victim, line[0].strip() if line else
                            '(no fencing line)'))
    check(bool(line), 'the resumed node fenced itself instead of finishing '
          'over the recovery ([hacluster] fencing = exit)')
    # the survivor's own frozen-act create and a few polls more
    cluster.wait_statuses([shares[1]], {'available', 'error'}, 60)
    time.sleep(2 * INTERVAL)
    seen = sampler.stop()
    print('  status of %s, every change seen: %s' % (share,
                                                     ' -> '.join(seen)))
    check(seen == ['creating', 'error'], 'the share settled once, in error, '
          'and never flipped (manila alone: available over the recovery)')
    deadline = time.monotonic() + 90
    while log().count(manila_rig.READY_MARK) < 2 and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    check(log().count(manila_rig.READY_MARK) >= 2,
          '%s serves again (a new worker, which recovered what its previous '
          'incarnation left)' % victim)
    show_status(cluster)


def main():
    servers.stop_on_sigterm()
    began = time.monotonic()
    say('private PostgreSQL, RabbitMQ and etcd on free loopback ports')
    pg = rabbit = etcd = cluster = None
    try:
        pg = servers.PostgresServer().start()
        etcd = servers.EtcdServer(name='demo-etcd')
        etcd.start()
        rabbit = servers.RabbitMQServer()
        rabbit.start()
        manila_rig.make_template(pg)
        print('  PostgreSQL 127.0.0.1:%d, RabbitMQ 127.0.0.1:%d, etcd %s '
              '(%.1f s, schema included)' % (pg.port, rabbit.port, etcd.url,
                                             time.monotonic() - began))
        cluster = manila_rig.ManilaCluster(
            pg, rabbit.transport_url, backend_url=etcd.url,
            periodic_interval=INTERVAL,
            delays={'create_share': SLOW_CREATE})
        # (every create takes SLOW_CREATE s; the first six run in
        # parallel, two per node)
        run(cluster)
    except Exception as exc:
        import traceback
        traceback.print_exc()
        check(False, 'the demo ran to its end (%s: %s)' % (
            type(exc).__name__, exc))
    finally:
        if cluster is not None:
            if not all(ok for ok, _ in CHECKS):
                for name in cluster.nodes:
                    print('\n---- %s log tail ----\n%s' % (
                        name, cluster.log_tail(name, 40)))
            keep = cluster.workdir
            cluster.close()
            import os
            if os.environ.get('HACLUSTER_KEEP'):
                print('\nlogs kept in %s' % keep)
        for server in (rabbit, etcd, pg):
            if server is not None:
                server.close()
    ok = CHECKS and all(ok for ok, _ in CHECKS)
    print('\n%d checks, %d failed, %.0f s' % (
        len(CHECKS), sum(1 for ok, _ in CHECKS if not ok),
        time.monotonic() - began))
    print('DEMO OK' if ok else 'DEMO FAILED')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
