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

"""The fault suite's workloads: a lock-set workload under a pause/kill
nemesis against a store that checks fencing tokens (and its control run,
against the same store ignoring them), the leader SIGKILLed 20 times, and
the leader frozen past its lease.

Who led when is not taken from what the processes say but from etcd's own
history: a watch from the start of the run replays every change to the
leader queue and every guarded write in revision order, and a write that
landed while its writer was not the head of the queue counts as a stale
write accepted.
"""

import functools
import json
import os
import signal
import socketserver
import statistics
import threading
import time

import hacluster
from hacluster import etcd as _etcd
from hacluster.testing.process import LineWorker
from hacluster.testing.process import wait_for

from faults import Row

HERE = os.path.dirname(os.path.abspath(__file__))
LOCKSET_WORKER = os.path.join(HERE, '_lockset_worker.py')
ELECT_WORKER = os.path.join(HERE, '..', 'tests', 'functional',
                            'lockworker.py')
TTL, DEADLINE, INTERVAL = 3, 2.0, 0.5
HOLD = 0.2            # seconds a lock-set worker holds between read/write


# set-up steps: their failure is no measurement
_wait = functools.partial(wait_for, every=0.01, error=TimeoutError)


def _observer(url, cluster):
    return hacluster.get_coordinator(url, cluster, node='observer',
                                     lease_ttl=TTL, renew_deadline=DEADLINE,
                                     renew_interval=INTERVAL).start()


# -- the fencing-token store --------------------------------------------------

class TokenStore:
    """One integer register behind a line protocol on 127.0.0.1:

    * ``READ node token`` -> the value; the token is remembered;
    * ``WRITE node token value`` -> ``OK``, or ``STALE`` when a higher
      token was seen before (only with ``check_tokens``).

    Every acknowledged write was meant to add one, so ``acks - value`` is
    the number of acknowledged writes lost. Thread-safe.
    """

    def __init__(self, check_tokens):
        self.check_tokens = check_tokens
        self.value = 0
        self.acks = 0
        self.refused = 0
        self.stale_accepted = 0
        self.max_token = 0
        self.events = []        # (monotonic, node, kind, token)
        self.lock = threading.Lock()
        store = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    reply = store._serve(line.decode().split())
                    self.wfile.write((reply + '\n').encode())

        self._server = socketserver.ThreadingTCPServer(('127.0.0.1', 0),
                                                       Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever,
                         daemon=True).start()

    def _serve(self, words):
        now = time.monotonic()
        with self.lock:
            if words[0] == 'READ':
                token = int(words[2])
                self.max_token = max(self.max_token, token)
                self.events.append((now, words[1], 'read', token))
                return str(self.value)
            node, token, value = words[1], int(words[2]), int(words[3])
            stale = token < self.max_token
            if stale and self.check_tokens:
                self.refused += 1
                self.events.append((now, node, 'refused', token))
                return 'STALE'
            if stale:
                self.stale_accepted += 1
            self.value = value
            self.acks += 1
            self.events.append((now, node, 'stale write' if stale
                                else 'write', token))
            return 'OK'

    def open_holder(self, fresh):
        """The node that read last and has not written yet, if its read is
        at most ``fresh`` seconds old (a nemesis striking then hits the
        window between read and write)."""
        with self.lock:
            last = {}
            for t, node, kind, token in self.events:
                last[node] = (t, kind, token)
        now = time.monotonic()
        for node, (t, kind, token) in last.items():
            if kind == 'read' and now - t <= fresh:
                return node, token
        return None

    def written_since(self, node, token):
        """True once another node wrote with a token above ``token``."""
        with self.lock:
            return any(n != node and kind == 'write' and tok > token
                       for _, n, kind, tok in self.events)

    def attempted_after(self, node, since):
        with self.lock:
            return any(n == node and t > since and kind != 'read'
                       for t, n, kind, _ in self.events)

    def close(self):
        self._server.shutdown()
        self._server.server_close()


# -- lock-set workload ------------------------------------------------------

NEMESIS = ('pause', 'kill', 'pause', 'pause', 'kill', 'pause')


def _lockset_run(env, check_tokens):
    etcd = env.etcd()
    cluster = env.cluster_name('lockset')
    store = TokenStore(check_tokens)
    nodes = ['w1', 'w2', 'w3']
    workers = {}
    t0 = time.monotonic()
    bars, marks = [], []

    def start(node):
        w = LineWorker(LOCKSET_WORKER, etcd.url, cluster, node, store.port,
                       HOLD)
        w.wait_line('READY', timeout=30)
        workers[node] = w

    try:
        for node in nodes:
            start(node)
        _wait(lambda: store.acks >= 5, 30, 'the workers to write')
        pauses = kills = 0
        for action in NEMESIS:
            # some ordinary writes between two faults
            acks = store.acks
            _wait(lambda: store.acks >= acks + 5, 30, 'five more writes')
            node, token = _wait(lambda: store.open_holder(HOLD / 2), 10,
                                'a worker between read and write')
            w = workers[node]
            at = time.monotonic()
            if action == 'pause':
                os.kill(w.proc.pid, signal.SIGSTOP)
                pauses += 1
                # Frozen until its lease is gone and another worker has
                # taken the lock and written: then its pending write is
                # stale for sure.
                _wait(lambda: store.written_since(node, token), 30,
                      'another worker to take over the lock')
                resumed = time.monotonic()
                os.kill(w.proc.pid, signal.SIGCONT)
                bars.append((node, at - t0, resumed - t0, 'paused'))
                _wait(lambda: store.attempted_after(node, resumed), 15,
                      'the resumed worker to try its write')
            else:
                w.proc.kill()
                w.proc.wait(10)
                kills += 1
                marks.append((node, at - t0, 'kill'))
                start(node)
        acks_before = store.acks
        _wait(lambda: store.acks >= acks_before + 3, 30,
              'writes to go on after the nemesis')
    finally:
        for w in workers.values():
            w.close()
        store.close()
    lost = store.acks - store.value
    # bars of holding (read -> write/refusal) and marks of refusals
    opened = {}
    for t, node, kind, token in store.events:
        if kind == 'read':
            opened[node] = t
        elif node in opened:
            bars.append((node, opened.pop(node) - t0, t - t0, 'holds'))
        if kind in ('refused', 'stale write'):
            marks.append((node, t - t0, kind))
    figures = {'acked_writes': store.acks, 'final_value': store.value,
               'lost': lost, 'stale_refused': store.refused,
               'stale_accepted': store.stale_accepted, 'pauses': pauses,
               'kills': kills, 'workers': len(nodes), 'hold_s': HOLD}
    timeline = {'title': 'lock-set workload under a pause/kill nemesis, '
                'store checking fencing tokens' if check_tokens else
                'control: the same store ignoring tokens',
                'lanes': nodes, 'bars': bars, 'marks': marks}
    return figures, timeline


def lockset(env):
    figures, timeline = _lockset_run(env, check_tokens=True)
    lost = figures['lost']
    row = Row('lock-set workload, pause/kill nemesis, store checks tokens',
              '%d writes acked, %d lost; %d stale writes refused (%d pauses, '
              '%d kills)' % (figures['acked_writes'], lost,
                             figures['stale_refused'], figures['pauses'],
                             figures['kills']),
              'lost 0; every pause made a stale write, refused',
              lost == 0 and figures['stale_accepted'] == 0 and
              figures['stale_refused'] >= figures['pauses'],
              figures, lost=lost, timeline=timeline)
    cfig, _ = _lockset_run(env, check_tokens=False)
    control = Row('control: the same nemesis, store ignores tokens',
                  '%d writes acked, %d lost (%d stale writes accepted)'
                  % (cfig['acked_writes'], cfig['lost'],
                     cfig['stale_accepted']),
                  'lost > 0 (the nemesis really makes stale writes)',
                  cfig['lost'] > 0, cfig, lost=cfig['lost'], control=True)
    return [row, control]


# -- leadership, from etcd's history ------------------------------------------

class History:
    """Every change under a cluster's keys from now on, from etcd's watch,
    in revision order, with the time each arrived here."""

    def __init__(self, client, layout):
        self.layout = layout
        self.events = []
        self._lock = threading.Lock()
        _, revision = client.get_prefix(layout.root, keys_only=True)
        self._watch = _etcd.Watch(client, layout.root, self._on_events,
                                  name='faults-history')
        self._watch.start(revision + 1)

    def _on_events(self, events):
        now = time.monotonic()
        with self._lock:
            self.events.extend((now, kind, kv) for kind, kv in events)

    def close(self):
        self._watch.stop()

    def audit(self, data_key):
        """``(stale, writes, reigns)``: guarded writes to ``data_key``
        whose writer did not head the leader queue at that revision, all
        such writes, and ``[(node, start, end)]`` reigns in arrival time
        (end None while it lasts)."""
        with self._lock:
            events = list(self.events)
        queue = {}          # key -> (create_revision, node)
        stale = writes = 0
        reigns = []
        head = None

        def current_head():
            if not queue:
                return None
            return min(queue.values())[1]

        for t, kind, kv in events:
            if kv.key.startswith(self.layout.leader):
                if kind == 'PUT':
                    node = json.loads(kv.value).get('node')
                    queue.setdefault(kv.key, (kv.create_revision, node))
                else:
                    queue.pop(kv.key, None)
                new = current_head()
                if new != head:
                    if reigns and reigns[-1][2] is None:
                        reigns[-1][2] = t
                    if new is not None:
                        reigns.append([new, t, None])
                    head = new
            elif kv.key == data_key and kind == 'PUT':
                writes += 1
                if kv.value.decode() != current_head():
                    stale += 1
        return stale, writes, reigns


class Candidates:
    """Three lockworker.py 'elect' processes: campaign, and while leading
    write ``leader-write`` guarded by their term every 50 ms."""

    def __init__(self, url, cluster, events_path):
        self._args = (url, cluster)
        self._events = events_path
        self.procs = {}
        for node in ('c1', 'c2', 'c3'):
            self.start(node)
        for node in self.procs:
            self.procs[node].wait_line('MEMBER', timeout=30)

    def start(self, node):
        self.procs[node] = LineWorker(ELECT_WORKER, *self._args, node,
                                      'elect', self._events)

    def close(self):
        for w in self.procs.values():
            w.close()


def _leader_changes(obs):
    changes = []
    cond = threading.Condition()

    def on_new(record):
        with cond:
            changes.append((time.monotonic(), record and record['node']))
            cond.notify_all()
    obs.on_new_leader(on_new)
    return changes


def _next_leader(changes, after, other_than, timeout):
    """The first leader change after ``after`` to a node other than
    ``other_than``: ``(time, node)``."""
    def found():
        for t, node in list(changes):
            if t >= after and node is not None and node != other_than:
                return t, node
        return None
    return _wait(found, timeout, 'a new leader')


def _stats(values):
    return {'min': round(min(values), 3),
            'median': round(statistics.median(values), 3),
            'max': round(max(values), 3)}


def leader_kill(env, rounds=20):
    etcd = env.etcd()
    cluster = env.cluster_name('kill')
    obs = _observer(etcd.url, cluster)
    history = History(obs.client, obs.layout)
    changes = _leader_changes(obs)
    cands = Candidates(etcd.url, cluster, env.path(cluster + '.events'))
    t0 = time.monotonic()
    failovers, kills = [], []
    try:
        _wait(lambda: obs.get_leader(), 30, 'a first leader')
        for _ in range(rounds):
            leader = _wait(lambda: obs.get_leader(), 30, 'a leader')['node']
            killed = time.monotonic()
            cands.procs[leader].proc.kill()
            cands.procs[leader].proc.wait(10)
            kills.append((leader, killed - t0))
            t, node = _next_leader(changes, killed, leader, TTL + 15)
            failovers.append(t - killed)
            cands.start(leader)
            # each process leads once (until it is killed): let the new
            # leader write before it is killed in turn
            new = cands.procs[node]
            _wait(lambda: any(line.startswith('WRITE ok')
                              for line in new.lines), 15,
                  'the new leader to write')
            # and lead a second (the schedule of the nemesis)
            _wait(lambda: time.monotonic() > t + 1.0, 5, 'a second')
    finally:
        cands.close()
        time.sleep(0.2)     # let the last events arrive (display only)
        history.close()
        obs.stop()
    stale, writes, reigns = history.audit(obs.layout.data_key('leader-write'))
    bound = TTL + 2.0
    figures = {'rounds': rounds, 'failover_s': _stats(failovers),
               'bound_s': bound, 'guarded_writes': writes,
               'stale_writes_accepted': stale, 'reigns': len(reigns)}
    timeline = {'title': 'leader SIGKILL x%d: whose key heads the leader '
                'queue (from etcd history)' % rounds,
                'lanes': ['c1', 'c2', 'c3'],
                'bars': _split_at_kills(reigns, kills, t0),
                'marks': [(n, t, 'kill') for n, t in kills]}
    return [Row('leader SIGKILL x%d' % rounds,
                'failover %.2f/%.2f/%.2f s; %d guarded writes, %d by a '
                'non-leader' % (min(failovers), statistics.median(failovers),
                                max(failovers), writes, stale),
                'failover <= %.0f s (lease_ttl + 2 s); 0 by a non-leader'
                % bound,
                max(failovers) <= bound and stale == 0 and writes > 0,
                figures, lost=stale, timeline=timeline)]


def _split_at_kills(reigns, kills, t0):
    """Reigns as bars: 'leads' until the leader was killed, then 'dead,
    lease running' until its key expired and the next one took over."""
    bars = []
    for node, start, end in reigns:
        start -= t0
        end = (end or time.monotonic()) - t0
        cut = [k for n, k in kills if n == node and start <= k <= end]
        if cut:
            bars.append((node, start, cut[0], 'leads'))
            bars.append((node, cut[0], end, 'dead, lease running'))
        else:
            bars.append((node, start, end, 'leads'))
    return bars


def leader_freeze(env, rounds=3):
    etcd = env.etcd()
    cluster = env.cluster_name('freeze')
    obs = _observer(etcd.url, cluster)
    history = History(obs.client, obs.layout)
    changes = _leader_changes(obs)
    cands = Candidates(etcd.url, cluster, env.path(cluster + '.events'))
    t0 = time.monotonic()
    failovers, stepdowns, marks, bars = [], [], [], []
    try:
        for _ in range(rounds):
            leader = _wait(lambda: obs.get_leader(), 30, 'a leader')['node']
            w = cands.procs[leader]
            seen = len(w.lines)
            frozen = time.monotonic()
            os.kill(w.proc.pid, signal.SIGSTOP)
            t, _node = _next_leader(changes, frozen, leader, TTL + 15)
            failovers.append(t - frozen)
            # frozen a while past its lease, then resumed
            _wait(lambda: time.monotonic() > t + 1.0, 5, 'a second')
            resumed = time.monotonic()
            os.kill(w.proc.pid, signal.SIGCONT)
            bars.append((leader, frozen - t0, resumed - t0, 'paused'))

            def stepped_down():
                return any(line.startswith('STOPPED')
                           for line in w.lines[seen:]) or \
                    w.proc.poll() is not None
            _wait(stepped_down, 15, 'the resumed leader to step down')
            stepdowns.append(time.monotonic() - resumed)
            marks.append((leader, time.monotonic() - t0, 'fenced'))
    finally:
        cands.close()
        time.sleep(0.2)
        history.close()
        obs.stop()
    stale, writes, reigns = history.audit(obs.layout.data_key('leader-write'))
    bound = TTL + 2.0
    figures = {'rounds': rounds, 'failover_s': _stats(failovers),
               'stepdown_after_resume_s': _stats(stepdowns),
               'bound_s': bound, 'guarded_writes': writes,
               'stale_writes_accepted': stale}
    bars += [(n, s - t0, (e or time.monotonic()) - t0, 'leads')
             for n, s, e in reigns]
    timeline = {'title': 'leader SIGSTOP past its lease x%d: whose key heads '
                'the leader queue (from etcd history); the resumed one steps '
                'down' % rounds,
                'lanes': ['c1', 'c2', 'c3'], 'bars': bars, 'marks': marks}
    return [Row('leader SIGSTOP past its lease x%d' % rounds,
                'failover %.2f/%.2f/%.2f s; resumed leader stepped down in '
                '%.2f s; %d of %d guarded writes by a non-leader'
                % (min(failovers), statistics.median(failovers),
                   max(failovers), max(stepdowns), stale, writes),
                'failover <= %.0f s; 0 by a non-leader' % bound,
                max(failovers) <= bound and stale == 0 and writes > 0,
                figures, lost=stale, timeline=timeline)]


SCENARIOS = [('lockset', lockset), ('leader-kill', leader_kill),
             ('leader-freeze', leader_freeze)]
