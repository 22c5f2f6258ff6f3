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

"""The main job: a local multi-node hacluster cluster doing real work, with a
failure injected.

    tools/demo            (sets everything up, then runs this)

What it does:

1. starts a private etcd on a free loopback port;
2. starts 3 node processes in one cluster; each loops: take the lock
   ``share-42``, read a counter stored in etcd, write counter+1 *guarded by
   the lock's fencing token*, release;
3. SIGSTOPs whichever node holds the lock (a stuck VM, a long GC pause), past
   its lease; another node takes over with a higher fencing token;
4. SIGCONTs the paused node: it finds out on its own that it lost the lock,
   and its late write is refused, so the counter is never corrupted;
   meanwhile the nodes run periodic tasks: a leader-only "backend stats"
   poll, and a fan-out "share status" poll of 60 shares that the leader
   spreads over the members through a private RabbitMQ (each finished cycle
   is printed from the cycle ledger in etcd);
5. every node also creates "shares" under claims (status creating ->
   available after 1 s of backend work); every node registers a recovery
   handler that, like manila, turns a dead node's share stuck in creating
   into error;
6. every node also runs for leader of the cluster: the demo shows the
   members and the leader, SIGKILLs the leader, shows another node taking
   over (within the lease) with a higher term, and restarts the killed node
   under its own name (it takes its registration back at once); the creates
   the killed node had in flight are recovered by a survivor, once each;
7. stops the nodes and checks that the counter equals the number of
   increments the nodes report as committed: nothing lost, nothing doubled;
   and that leadership terms never overlapped.

Exit status 0 when every check holds.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

LEASE = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)
LOCK = 'share-42'
SHARES = 60


def node_main(url, cluster, node, amqp_url):
    """One node: increment the shared counter under the lock, forever; run
    the periodic tasks."""
    import logging

    from oslo_service import backend
    backend.init_backend(backend.BackendType.THREADING)

    import hacluster
    from hacluster.periodic import FANOUT
    from hacluster.periodic import LEADER
    from hacluster.periodic import periodic_task
    from hacluster.periodic import PeriodicRunner
    logging.basicConfig(level=logging.WARNING,
                        format='           [' + node + ' log] %(message)s')

    emit_lock = threading.Lock()

    def emit(event, **fields):
        # One write per line, under a lock: events come from several
        # threads at once (a resumed node reports its lost lock, its lost
        # leadership and its lost session together), and interleaved lines
        # would be dropped as unreadable.
        fields.update(node=node, event=event, t=time.time())
        line = json.dumps(fields) + '\n'
        with emit_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    coord = hacluster.get_coordinator(
        url, cluster, node=node,
        config={'share_driver': 'dummy', 'share_backend_name': 'demo',
                'password': 'not part of the fingerprint'}, **LEASE)
    coord.on_session_lost(lambda reason: emit('session-lost', reason=reason))
    coord.on_session_started(lambda member: emit('session-started',
                                                 member=member))
    coord.start()
    coord.run_for_leader(lambda term: emit('leading', term=term),
                         lambda term: emit('stopped-leading', term=term))

    class Tasks:
        @periodic_task(spacing=1.0, mode=LEADER, initial_delay=0.5)
        def backend_stats(self, ctx):
            emit('backend-stats', term=ctx.term)

        @periodic_task(spacing=2.0, mode=FANOUT, initial_delay=1.0,
                       handler='_share_status', item_timeout=5)
        def share_status(self, ctx):
            return {'share-%02d' % i: None for i in range(SHARES)}

        def _share_status(self, ctx, share_id, payload):
            time.sleep(0.01)           # the backend call

    runner = PeriodicRunner(coord, transport_url=amqp_url)
    runner.add_all(Tasks())
    runner.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())

    def status_key(share_id):
        return coord.layout.data_key('share-status:' + share_id)

    def recover_share(claim):
        # What a manila handler does: a share a dead node left in creating
        # goes to error (an operator or the user retries it).
        kv = coord.client.get(status_key(claim.resource_id))
        if kv is not None and kv.value == b'creating':
            coord.client.put(status_key(claim.resource_id), 'error')
        emit('recovered', share=claim.resource_id, of=claim.node,
             claim=claim.claim_id)

    coord.register_recovery('share', recover_share)

    def create_shares(worker):
        n = 0
        while not stop.is_set():
            n += 1
            # unique per incarnation: a restarted node starts counting anew
            share_id = '%s-%s-%s%d' % (node, coord.member_id[-4:], worker,
                                       n)
            with coord.claim('share', share_id, 'create'):
                coord.client.put(status_key(share_id), 'creating')
                stop.wait(1.0)                 # the backend creates it
                coord.client.put(status_key(share_id), 'available')
            stop.wait(0.2)
    creators = [threading.Thread(target=create_shares, args=(w,),
                                 daemon=True) for w in 'ab']
    for creator in creators:
        creator.start()
    committed = refused = 0
    while not stop.is_set():
        lock = coord.get_lock(LOCK, on_lost=lambda lk, why: emit(
            'lock-lost', token=lk.fencing_token, reason=why))
        try:
            if not lock.acquire(blocking=1.0):
                continue
        except hacluster.HAClusterError as exc:
            emit('error', error=str(exc))
            time.sleep(0.2)
            continue
        emit('acquired', token=lock.fencing_token)
        try:
            raw, _ = coord.get_data('counter')
            value = int(raw or 0)
            time.sleep(0.15)         # the "work" between read and write
            lock.guarded_put('counter', str(value + 1))
            committed += 1
            emit('committed', token=lock.fencing_token, value=value + 1)
        except hacluster.StaleFencingToken as exc:
            refused += 1
            emit('write-refused', token=lock.fencing_token, error=str(exc))
        finally:
            if lock.held or lock.lost:
                lock.release()
        time.sleep(0.05)
    for creator in creators:
        creator.join(5)
    runner.stop()
    coord.stop()
    emit('stopped', committed=committed, refused=refused)


class Node:
    def __init__(self, url, cluster, name, log, amqp_url):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, '-W', 'ignore', __file__, 'node', url, cluster,
             name, amqp_url], stdout=subprocess.PIPE, text=True)
        self.events = []
        self._log = log
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            self._log(event)


class CycleWatcher:
    """Prints every finished fan-out cycle, read from the ledger."""

    def __init__(self, observer, t0):
        from hacluster.periodic import ledger
        self.ledger = ledger.Ledger(observer, 'share_status')
        self.t0 = t0
        self.cycles = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        seen = set()
        while not self._stop.wait(0.1):
            try:
                rec = self.ledger.current()
            except Exception:
                continue
            if not rec or rec.get('status') != 'done' or \
                    rec['cycle_id'] in seen:
                continue
            seen.add(rec['cycle_id'])
            self.cycles.append(rec)
            print('  %6.2fs  share_status cycle by %-7s %d shares: %s%s' % (
                rec['finished_at'] - self.t0, rec['node'], rec['done'],
                ', '.join('%s %d' % kv for kv in
                          sorted(rec.get('per_node', {}).items())),
                ' (finished by %s, the new leader)' % rec['adopted_by_node']
                if rec.get('adopted_by') else ''), flush=True)

    def stop(self):
        self._stop.set()
        self._thread.join(2)


def show_members(observer):
    members = observer.get_members()
    leader = observer.get_leader()
    print('   %-9s %-18s %-7s %-8s %-17s %s' % (
        'node', 'member id', 'pid', 'version', 'config', 'role'))
    for node in sorted(members):
        m = members[node]
        role = ''
        if leader and leader['member_id'] == m['member_id']:
            role = 'LEADER (term %d)' % leader['term']
        print('   %-9s %-18s %-7s %-8s %-17s %s' % (
            node, m['member_id'], m['pid'], m['version'],
            m['config_fingerprint'] or '-', role))


def hacluster_cli(*args):
    """Run the operator command as an operator would; its output."""
    exe = os.path.join(os.path.dirname(sys.executable), 'hacluster')
    out = subprocess.run([exe] + list(args), capture_output=True, text=True,
                         timeout=60)
    return '\n'.join('   ' + line for line in
                     (out.stdout + out.stderr).rstrip().splitlines())


def head_key(observer):
    kvs, _ = observer.client.get_prefix(observer.layout.lock_prefix(LOCK),
                                        sort_create=True, keys_only=True)
    return kvs[0].key if kvs else None


def current_holder(observer):
    """The node at the head of the lock's queue, read from etcd."""
    kvs, _ = observer.client.get_prefix(observer.layout.lock_prefix(LOCK),
                                        sort_create=True)
    return kvs[0].json().get('node') if kvs else None


def main():
    import hacluster
    from hacluster.testing import servers

    t0 = time.time()
    verbose = threading.Event()
    last = {}
    state = {'victim': None, 'paused_at': None, 'takeover': False,
             'quiet_leadership': True, 'dead': None}

    def log(event):
        last[event['node']] = event
        routine = event['event'] in ('acquired', 'committed',
                                     'backend-stats') or (
            event['event'] == 'recovered' and event['of'] != state['dead'])
        routine = routine or (
            state['quiet_leadership'] and event['event'] in (
                'leading', 'stopped-leading'))
        # Around the failure: every event of the paused node, and the
        # others' work for the first second after the pause.
        near = verbose.is_set() and event['node'] == state['victim']
        if verbose.is_set() and state['paused_at'] and not \
                state['takeover'] and event['event'] == 'acquired' and \
                event['node'] != state['victim']:
            near = state['takeover'] = True     # the first takeover
        if not routine or near:
            extra = {k: v for k, v in event.items()
                     if k not in ('node', 'event', 't')}
            print('  %6.2fs  %-7s %-16s %s' % (
                event['t'] - t0, event['node'], event['event'],
                ' '.join('%s=%s' % kv for kv in sorted(extra.items()))),
                flush=True)

    print('== hacluster demo: 3 nodes, one lock, a fenced counter in etcd, '
          'one leader, periodic tasks fanned out over RabbitMQ')
    with servers.EtcdServer(name='demo') as etcd, \
            servers.RabbitMQServer() as rabbit:
        cluster = 'demo-' + uuid.uuid4().hex[:6]
        print('private etcd at %s (pid %d), RabbitMQ on port %d; cluster %s;'
              ' lease %ss, renew deadline %ss'
              % (etcd.endpoint, etcd.pid, rabbit.port, cluster,
                 LEASE['lease_ttl'], LEASE['renew_deadline']))
        amqp = rabbit.transport_url
        nodes = [Node(etcd.url, cluster, 'node-%d' % i, log, amqp)
                 for i in (1, 2, 3)]
        observer = hacluster.get_coordinator(etcd.url, cluster,
                                             node='observer', **LEASE).start()
        cycles = CycleWatcher(observer, t0)
        print('\n-- 4 s of normal work (each node takes the lock in turn)')
        time.sleep(4)
        counts = {n.name: sum(1 for e in n.events if e['event'] ==
                              'committed') for n in nodes}
        print('   increments so far: %s' % counts)

        print('\n-- pausing the current holder (SIGSTOP) past its lease')
        verbose.set()
        victim = None
        deadline = time.time() + 10
        while victim is None and time.time() < deadline:
            # Freeze a holder right after it got the lock: at the start of
            # its read-then-write, so the write it resumes with is late.
            first = head_key(observer)
            while head_key(observer) in (first, None) and \
                    time.time() < deadline:
                time.sleep(0.005)
            key = head_key(observer)
            holder = current_holder(observer)
            node = next((n for n in nodes if n.name == holder), None)
            if node is None:
                continue
            os.kill(node.proc.pid, signal.SIGSTOP)
            if head_key(observer) == key:
                victim = node
            else:
                os.kill(node.proc.pid, signal.SIGCONT)
        state['victim'] = victim.name
        old = last.get(victim.name, {}).get('token')
        os.kill(victim.proc.pid, signal.SIGSTOP)
        paused_at = state['paused_at'] = time.time()
        print('  %6.2fs  %s paused while holding %s (token %s)'
              % (paused_at - t0, victim.name, LOCK, old))
        time.sleep(LEASE['lease_ttl'] + 1.5)
        os.kill(victim.proc.pid, signal.SIGCONT)
        print('  %6.2fs  %s resumed (SIGCONT)' % (
            time.time() - t0, victim.name))
        time.sleep(2.0)
        verbose.clear()
        print('\n-- members and leader, as any node sees them')
        show_members(observer)
        print('\n-- what an operator sees: hacluster status --backend-url '
              '%s --cluster %s' % (etcd.url, cluster))
        print(hacluster_cli('status', '--backend-url', etcd.url,
                            '--cluster', cluster))
        print('\n-- killing the leader (SIGKILL)')
        state['quiet_leadership'] = False
        leader = observer.get_leader()
        dead = next(n for n in nodes if n.name == leader['node'])
        state['dead'] = dead.name
        # Kill it with work in flight: a share create of its open (a
        # create lasts 1 s; this waits a moment at most).
        until = time.time() + 3
        while not observer.list_claims(dead.name) and time.time() < until:
            time.sleep(0.02)
        os.kill(dead.proc.pid, signal.SIGKILL)
        killed_at = time.time()
        in_flight = [c for c in observer.list_claims(dead.name)]
        print('  %6.2fs  %s killed while leading (term %d), with %d share '
              'create(s) in flight: %s' % (
                  killed_at - t0, dead.name, leader['term'], len(in_flight),
                  ', '.join(c.resource_id for c in in_flight)))
        new = None
        while time.time() < killed_at + LEASE['lease_ttl'] + 5:
            rec = observer.get_leader()
            if rec and rec['node'] != dead.name:
                new = rec
                break
            time.sleep(0.05)
        failover = time.time() - killed_at
        if new:
            print('  %6.2fs  %s leads now (term %d), %.2fs after the kill '
                  '(lease %ss)' % (time.time() - t0, new['node'],
                                   new['term'], failover,
                                   LEASE['lease_ttl']))
        dead.proc.wait(5)
        print('\n-- restarting %s under its own name' % dead.name)
        restarted = Node(etcd.url, cluster, dead.name, log, amqp)
        nodes.append(restarted)
        time.sleep(1.0)
        show_members(observer)
        state['quiet_leadership'] = True
        print('\n-- hacluster check (for monitoring): %s' % hacluster_cli(
            'check', '--backend-url', etcd.url, '--cluster', cluster).strip())
        print('\n-- 2 s more of normal work, then stopping the nodes')
        time.sleep(2.0)
        for n in nodes:
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in nodes:
            n.proc.wait(20)
        time.sleep(0.2)
        value = int(observer.get_data('counter')[0] or 0)
        leftover = observer.list_claims()
        kvs, _ = observer.client.get_prefix(observer.layout.data)
        statuses = {}
        from urllib.parse import unquote
        for kv in kvs:
            name = unquote(kv.key[len(observer.layout.data):])
            if name.startswith('share-status:'):
                statuses[name.split(':', 1)[1]] = kv.value.decode()
        cycles.stop()
        observer.stop()

    # -- checks -----------------------------------------------------------
    print('\n== results')
    ok = True

    def check(cond, text):
        nonlocal ok
        ok = ok and cond
        print('  [%s] %s' % ('ok' if cond else 'FAILED', text))

    # A SIGKILLed node reports nothing at exit: count its commits from its
    # events instead.
    committed = {}
    for n in nodes:
        stopped = next((e['committed'] for e in n.events
                        if e['event'] == 'stopped'), None)
        if stopped is None and n is dead:
            stopped = sum(1 for e in n.events if e['event'] == 'committed')
        committed[n.name] = committed.get(n.name, 0) + (stopped or 0) \
            if stopped is not None else None
    print('  increments committed per node: %s' % committed)
    check(None not in committed.values(),
          'every node stopped cleanly (but the one killed)')
    total = sum(v or 0 for v in committed.values())
    check(value == total, 'counter in etcd (%d) == increments committed (%d):'
          ' nothing lost, nothing doubled' % (value, total))
    check(all(v for v in committed.values()),
          'every node did work (%s)' % committed)
    acquired = sorted((e['t'], e['token']) for n in nodes for e in n.events
                      if e['event'] == 'acquired')
    tokens = [tok for _, tok in acquired]
    check(tokens == sorted(tokens),
          'fencing tokens rise with every new holder (%d grants)'
          % len(tokens))
    takeover = [(e['t'], e) for n in nodes if n is not victim
                for e in n.events if e['event'] == 'acquired'
                and e['t'] > paused_at]
    if takeover:
        t, e = min(takeover, key=lambda x: x[0])
        check(e['token'] > (old or 0),
              '%s took over %.2fs after the pause with token %s > %s'
              % (e['node'], t - paused_at, e['token'], old))
    else:
        check(False, 'another node took over during the pause')
    vev = [e['event'] for e in victim.events if e['t'] > paused_at]
    check('lock-lost' in vev,
          '%s learned on its own that it lost the lock' % victim.name)
    check('write-refused' in vev,
          'its late write was refused (stale fencing token)')
    check('session-started' in vev and 'committed' in vev[vev.index(
        'session-started'):],
        '%s rejoined with a new session and went back to work'
        % victim.name)
    check(new is not None and new['term'] > leader['term'] and
          failover <= LEASE['lease_ttl'] + 2,
          'after the leader was killed, %s took over in %.2fs with term %s '
          '> %d' % (new and new['node'], failover, new and new['term'],
                    leader['term']))
    terms = []
    for n in nodes:
        open_terms = {}
        for e in n.events:
            if e['event'] == 'leading':
                open_terms[e['term']] = e['t']
            elif e['event'] == 'stopped-leading' and e['term'] in open_terms:
                terms.append((open_terms.pop(e['term']), e['t'], e['term']))
        for term, start in open_terms.items():   # killed while leading
            terms.append((start, killed_at if n is dead else float('inf'),
                          term))
    # A frozen process acts on nothing: the paused node's term ended, in
    # effect, when it was frozen (it reported the end as soon as it ran).
    terms = [(start, min(end, paused_at) if start < paused_at < end and
              any(e['event'] == 'stopped-leading' and e['term'] == term
                  for e in victim.events) else end, term)
             for start, end, term in terms]
    terms.sort()
    overlap = all(a[1] <= b[0] for a, b in zip(terms, terms[1:])) and \
        [t for _, _, t in terms] == sorted(t for _, _, t in terms)
    check(overlap, 'leadership terms never overlapped (%d terms)%s' % (
        len(terms), '' if overlap else ': ' + '; '.join(
            'term %d %.2f-%.2fs' % (t, a - t0, b - t0) for a, b, t in terms)))
    check(any(e['event'] == 'session-started' for e in restarted.events),
          '%s restarted under its own name and rejoined' % dead.name)
    recovered = [e for n in nodes for e in n.events
                 if e['event'] == 'recovered' and e['of'] == dead.name]
    by_claim = {}
    for e in recovered:
        by_claim[e['claim']] = by_claim.get(e['claim'], 0) + 1
    check(in_flight and {c.claim_id for c in in_flight} <= set(by_claim) and
          set(by_claim.values()) <= {1},
          'the %d create(s) %s had in flight were recovered once each, by '
          'the new leader or by the node\'s own next incarnation, whichever '
          'came first (%s)' % (len(in_flight), dead.name, ', '.join(
              '%s by %s' % (e['share'], e['node']) for e in recovered)))
    stuck = sorted(k for k, v in statuses.items() if v == 'creating')
    counts = {}
    for v in statuses.values():
        counts[v] = counts.get(v, 0) + 1
    check(not stuck and not leftover,
          'no share left in creating, no claim left open (%d shares: %s)'
          % (len(statuses), ', '.join('%d %s' % (n, k)
                                      for k, n in sorted(counts.items()))))
    fine = [c for c in cycles.cycles if c['done'] == SHARES and
            not c.get('failed') and sum(c['per_node'].values()) == SHARES]
    check(len(fine) == len(cycles.cycles) >= 4,
          '%d share_status cycles, all %d shares polled in every one, '
          'none failed' % (len(cycles.cycles), SHARES))
    check(all(len(c['per_node']) >= 2 for c in cycles.cycles),
          'every cycle was spread over the members')
    check(any(c['finished_at'] > killed_at and c['node'] != dead.name
              for c in cycles.cycles),
          'the polls went on under the new leader')
    stats_nodes = {}
    for n in nodes:
        for e in n.events:
            if e['event'] == 'backend-stats':
                stats_nodes.setdefault(round(e['t']), set()).add(n.name)
    check(stats_nodes and max(len(v) for v in stats_nodes.values()) == 1,
          'backend stats polled by one node (the leader) at a time: %d '
          'polls, not %d' % (sum(len(v) for v in stats_nodes.values()),
                             3 * len(stats_nodes)))
    print('\n%s' % ('DEMO OK' if ok else 'DEMO FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'node':
        node_main(*sys.argv[2:6])
    else:
        sys.exit(main())
