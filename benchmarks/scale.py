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

"""Scale benchmark: how cost grows, each figure as a ratio to its ideal.

Four axes, on one private etcd and one private RabbitMQ started here:

1. members -- 3, 10, 30 plain node processes (one process, one
   coordinator each: session lease, member record, the cluster watch,
   campaigning for leader; default timings 10/7/2 s). Failover after
   SIGKILL of the leader, as seen by the new leader's own
   on_started_leading (ideal: lease_ttl; bound lease_ttl + 2 s), and the
   idle etcd requests per member per second (ideal: one keep-alive per
   renew_interval, flat; bound 1/s).
2. fan-out items -- 300, 3,000, 30,000 items of 50 ms backend latency over
   10 and 30 member processes (coordinator + PeriodicRunner + RPC server
   each, one worker per member). Cycle time / (items x latency /
   members) (bound 1.15), etcd requests per item (bound 0.05) and RPC
   messages per item (ideal: one per batch of 50 per member).
3. held locks + open claims -- 1,000, 10,000, 100,000 of each, held by
   3 members: ``hacluster status`` wall time (bound 1 s at 10,000, 5 s at
   100,000) and etcd requests per call (ideal: 1 + members).
4. lock contention -- 2, 10, 50 waiters on one name (threads over up to
   10 processes): hand-off p50/p99 (ideal flat; p50 <= 10 ms) and FIFO.

etcd requests are counted by the etcd server itself: the sum of
``grpc_server_msg_received_total`` over every gRPC method (GET /metrics;
one per unary request, one per message on a stream, so a watch counts
once when created, a keep-alive once per renewal), minus the requests this
benchmark's own plain client sent (``hacluster.etcd.Client.requests``).

    benchmarks/run scale [--quick] [--axis AXIS[,AXIS...]]

``--quick``: the smallest sizes only. ``--axis``: run only these axes
(``members``, ``fanout``, ``status``, ``contention``; default all of them,
in that order), e.g. ``--axis members,status`` to measure one fix without
the fan-out's minutes (RabbitMQ is started only for ``fanout``). An axis
not run is ``null`` in the JSON and has no plot.

Prints the figures per axis, writes benchmarks/scale-*.png (each figure
as a ratio to its ideal, with the ideal line and the bound) and ends with
one JSON object: every figure, ``max_members``, ``max_items``, ``plots``.
"""

import atexit
import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def _snapshot_code():
    """Copy hacluster/ as it is now into a temporary directory and run
    everything (this process, the member processes, the hacluster
    command) from the copy, through sys.path and PYTHONPATH: other work
    editing the tree during a ten-minute run must not change the code
    half-way (a cluster of mixed versions). Returns the copy's content
    digest, and the commit and the files with uncommitted changes then."""
    src = os.path.join(os.path.dirname(HERE), 'hacluster')
    dest = tempfile.mkdtemp(prefix='hacluster-scale-code-')
    atexit.register(shutil.rmtree, dest, True)
    shutil.copytree(src, os.path.join(dest, 'hacluster'),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    sys.path.insert(0, dest)
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [dest] + [p for p in os.environ.get('PYTHONPATH', '').split(
            os.pathsep) if p])
    digest = hashlib.sha1()
    for root, dirs, files in sorted(os.walk(os.path.join(dest,
                                                         'hacluster'))):
        dirs.sort()
        for name in sorted(files):
            with open(os.path.join(root, name), 'rb') as f:
                digest.update(name.encode() + f.read())
    code = {'digest': digest.hexdigest()[:12]}
    try:
        root = os.path.dirname(HERE)
        code['commit'] = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=root,
            capture_output=True, text=True, timeout=30).stdout.strip()
        # the copy holds these files' uncommitted changes too
        code['uncommitted'] = sorted(subprocess.run(
            ['git', 'status', '--porcelain', 'hacluster'], cwd=root,
            capture_output=True, text=True, timeout=30).stdout.split()[1::2])
    except (OSError, subprocess.SubprocessError):
        pass
    return code


CODE = _snapshot_code()
#: What went wrong in the worker processes, per axis (see trouble()).
TROUBLE = {}

import hacluster
from hacluster.election import head_of
from hacluster import etcd as _etcd
from hacluster import keys as _keys
from hacluster.periodic import ledger as _ledger
from hacluster import status as _status
from hacluster.testing.process import LineWorker
from hacluster.testing.process import wait_for as _wait_for
from hacluster.testing import servers
from hacluster import url as _url

AXES = ('members', 'fanout', 'status', 'contention')


def _axes_arg(argv):
    """The axes named by ``--axis a,b`` (or ``--axis=a,b``), all if none.
    :raises SystemExit: an unknown axis (named)."""
    chosen = None
    for i, arg in enumerate(argv):
        if arg == '--axis' and i + 1 < len(argv):
            chosen = argv[i + 1]
        elif arg.startswith('--axis='):
            chosen = arg.split('=', 1)[1]
    if chosen is None:
        return AXES
    names = [a.strip() for a in chosen.split(',') if a.strip()]
    unknown = [a for a in names if a not in AXES]
    if unknown or not names:
        raise SystemExit('scale: unknown axis %s (axes: %s)' % (
            ', '.join(unknown) or repr(chosen), ', '.join(AXES)))
    return tuple(a for a in AXES if a in names)


QUICK = '--quick' in sys.argv[1:]
RUN_AXES = _axes_arg(sys.argv[1:])
MEMBER_SIZES = [3] if QUICK else [3, 10, 30]
KILLS = 1 if QUICK else 3
IDLE_WINDOW = 8.0 if QUICK else 16.0
FANOUT_MEMBERS = [10] if QUICK else [10, 30]
FANOUT_ITEMS = [300] if QUICK else [300, 3000, 30000]
FANOUT_IDLE_WINDOW = 3.0 if QUICK else 4.0
SLEEP = 0.05
BATCH = 50                      # periodic_task's default batch_size
STATUS_SIZES = [1000] if QUICK else [1000, 10000, 100000]
WAITERS = [2] if QUICK else [2, 10, 50]
HANDOFF_SAMPLES = 40 if QUICK else 100

TTL, DEADLINE, INTERVAL = 10, 7.0, 2.0      # the shipped defaults
NODE = os.path.join(HERE, '_scale_node.py')
FANOUT_MEMBER = os.path.join(HERE, '_scale_fanout_member.py')
WAITER = os.path.join(HERE, '_scale_waiter.py')
HACLUSTER = os.path.join(os.path.dirname(sys.executable), 'hacluster')


def log(text=''):
    print(text, flush=True)


wait_for = functools.partial(_wait_for, every=0.02, error=TimeoutError)


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1,
                   int(math.ceil(p / 100.0 * len(values))) - 1))
    return values[k]


class Worker(LineWorker):
    """A LineWorker whose lines can be taken one after the other by
    prefix (a line taken is not returned again)."""

    def __init__(self, script, *args):
        super().__init__(script, *args)
        self._taken = set()

    def take(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, line in enumerate(self.lines):
                    if i not in self._taken and line.startswith(prefix):
                        self._taken.add(i)
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        'no %r line from %s (rc=%s); last lines %r; stderr: '
                        '%s' % (prefix, self.proc.args[3:6],
                                self.proc.poll(), self.lines[-5:],
                                self.stderr_tail()))
                self._cond.wait(min(left, 0.5))

    def ask(self, command, prefix, timeout=60):
        self.send(command)
        return self.take(prefix, timeout)


def trouble(worker):
    """What went wrong in a worker, from its log (stderr): lease renewals
    that failed, sessions lost, fan-out batches dropped because their
    assignments could not be checked (sent again at their deadline), done
    markers that had to be written again, and tracebacks."""
    text = worker.stderr_tail(1 << 30)
    return {'renewal_failures': text.count('lease renewal failed'),
            'sessions_lost': len(re.findall(r'session \d+ lost', text)),
            'batches_dropped': text.count('cannot check assignments'),
            'marker_write_retries': text.count('done markers could not') +
            text.count('cannot write'),
            'cycles_left_unfinished': text.count('unfinished for the next'),
            'cycles_adopted': text.count('adopting unfinished cycle'),
            'tracebacks': text.count('Traceback')}


#: Log lines worth showing when something went wrong.
_NOTABLE = re.compile(r'session \d+ lost|stopped leading|unfinished for the '
                      r'next|adopting unfinished|re-dispatching|Error:')


def notable(workers, since=0.0, n=12):
    """The first ``n`` notable log lines of ``workers`` (with their times,
    sorted) logged after ``since`` (time.time())."""
    lines = []
    for w in workers:
        for line in w.stderr_tail(1 << 30).splitlines():
            if _NOTABLE.search(line):
                try:
                    at = time.mktime(time.strptime(line[:19],
                                                   '%Y-%m-%d %H:%M:%S'))
                except ValueError:
                    at = since
                if at >= int(since):
                    lines.append(line[:240])
    return sorted(lines)[:n]


def _sum_trouble(counts):
    total = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def stop_workers(workers, tally=None):
    """Ask every worker to exit (all at once), then reap them; a worker
    still running after 30 s is SIGKILLed (by its PID). Adds what went
    wrong in them (:func:`trouble`) to ``tally``."""
    for w in workers:
        try:
            w.send('exit')
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 30
    for w in workers:
        try:
            w.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if tally is not None:
            for k, v in trouble(w).items():
                tally[k] = tally.get(k, 0) + v
        w.close()


class Metrics:
    """etcd's own request counters (GET /metrics): messages received per
    gRPC method."""

    _LINE = re.compile(r'^grpc_server_msg_received_total\{[^}]*'
                       r'grpc_method="([^"]+)"[^}]*\}\s+([0-9.e+]+)$')

    def __init__(self, endpoint):
        self.url = 'http://%s/metrics' % endpoint

    def snapshot(self):
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            text = resp.read().decode()
        counts = {}
        for line in text.splitlines():
            m = self._LINE.match(line)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + \
                    int(float(m.group(2)))
        return counts

    @staticmethod
    def delta(before, after):
        return {k: after.get(k, 0) - before.get(k, 0)
                for k in set(after) | set(before)
                if after.get(k, 0) != before.get(k, 0)}


def compact(client):
    """Compact etcd's history (between phases; physical=false)."""
    resp = client.call('/kv/range', {'key': _etcd.b64('/'),
                                     'count_only': True})
    rev = int(resp['header']['revision'])
    client.call('/kv/compaction', {'revision': rev})
    return rev


def leader_node(client, layout):
    kvs, _ = client.get_prefix(layout.leader)
    head = head_of(kvs)
    return head.json().get('node') if head else None


# -- 1. members ---------------------------------------------------------------

def members_axis(etcd, metrics, client):
    cluster = 'scale-m-' + uuid.uuid4().hex[:6]
    layout = _keys.Layout(cluster)
    nodes = {}
    seq = iter(range(10 ** 6))
    rows = []

    def spawn(n):
        new = []
        for _ in range(n):
            name = 'n%03d' % next(seq)
            nodes[name] = Worker(NODE, etcd.url, cluster, name)
            new.append(nodes[name])
        for w in new:
            w.take('READY', 120)

    def queued():
        kvs, _ = client.get_prefix(layout.leader, keys_only=True)
        mkvs, _ = client.get_prefix(layout.members, keys_only=True)
        return len(kvs) == len(nodes) and len(mkvs) == len(nodes)

    try:
        for size in MEMBER_SIZES:
            t = time.monotonic()
            spawn(size - len(nodes))
            wait_for(queued, 60, '%d candidates in the leader queue' % size)
            started_s = time.monotonic() - t
            # -- idle load: a window with nothing happening
            m0, c0, t0 = metrics.snapshot(), client.requests, \
                time.monotonic()
            time.sleep(IDLE_WINDOW)             # the measurement window
            m1, c1, t1 = metrics.snapshot(), client.requests, \
                time.monotonic()
            d = Metrics.delta(m0, m1)
            total = sum(d.values()) - (c1 - c0)
            if 'Range' in d:
                d['Range'] -= c1 - c0
            idle = total / float(size) / (t1 - t0)
            per_method = {k: round(v / float(size) / (t1 - t0), 3)
                          for k, v in sorted(d.items()) if v}
            # -- failover after SIGKILL of the leader
            samples, seen = [], []
            for _ in range(KILLS):
                old = wait_for(lambda: leader_node(client, layout), TTL + 15,
                               'a leader')
                victim = nodes.pop(old)
                killed = time.monotonic()
                victim.proc.kill()

                def leading():
                    for w in nodes.values():
                        for line in list(w.lines):
                            if line.startswith('LEADING') and \
                                    float(line.split()[1]) > killed:
                                return float(line.split()[1])
                    return None
                took = wait_for(leading, TTL + 15,
                                'a new leader after SIGKILL') - killed
                samples.append(took)
                new = wait_for(lambda: (lambda n: n if n not in (None, old)
                                        else None)(leader_node(client,
                                                               layout)),
                               10, 'the new leader in etcd')
                seen.append(new)
                for k, v in trouble(victim).items():
                    tally = TROUBLE.setdefault('members', {})
                    tally[k] = tally.get(k, 0) + v
                victim.close()
                spawn(1)            # back to `size` members
                wait_for(queued, 60, 'the replacement queued')
            med = statistics.median(samples)
            row = {
                'members': size,
                'start_s': round(started_s, 1),
                'idle_requests_per_member_s': round(idle, 3),
                'idle_ratio_to_keepalive': round(idle * INTERVAL, 3),
                'idle_per_method_per_member_s': per_method,
                'failover_s': [round(s, 3) for s in samples],
                'failover_median_s': round(med, 3),
                'failover_max_s': round(max(samples), 3),
                'failover_ratio_to_ttl': round(med / TTL, 3),
                'failover_max_ratio_to_ttl': round(max(samples) / TTL, 3),
            }
            rows.append(row)
            log('  %2d members (started in %.1f s): idle %.3f etcd '
                'requests/member/s = %.2fx one keep-alive per renew_interval '
                '(bound 1/s) %s' % (size, started_s, idle, idle * INTERVAL,
                                    per_method))
            log('             SIGKILL of the leader -> new leader leading in '
                '%s s: median %.2f s = %.2fx lease_ttl (max %.2f s; bound '
                '%d s)' % ('/'.join('%.2f' % s for s in samples), med,
                           med / TTL, max(samples), TTL + 2))
    finally:
        stop_workers(list(nodes.values()), TROUBLE.setdefault('members', {}))
    return rows


# -- 2. fan-out ---------------------------------------------------------------

def fanout_axis(etcd, metrics, client, amqp):
    cluster = 'scale-f-' + uuid.uuid4().hex[:6]
    layout = _keys.Layout(cluster)
    # longer than the busiest member's queue takes (the deadline runs from
    # the send): no re-dispatch while all goes well
    item_timeout = 1.5 * max(FANOUT_ITEMS) * SLEEP / min(FANOUT_MEMBERS) + 30
    workers = {}
    seq = iter(range(10 ** 6))
    rows = []

    def serving():
        kvs, _ = client.get_prefix(layout.members)
        return sum(1 for kv in kvs if kv.json().get('fanout_server')) == \
            len(workers)

    def reports():
        for w in workers.values():
            w.send('report')
        return {n: w.take('REPORT', 60).split()[1:]
                for n, w in workers.items()}

    try:
        for size in FANOUT_MEMBERS:
            t = time.monotonic()
            new = []
            while len(workers) < size:
                name = 'f%03d' % next(seq)
                workers[name] = Worker(FANOUT_MEMBER, etcd.url, amqp,
                                       cluster, name, SLEEP, item_timeout)
                new.append(workers[name])
            for w in new:
                w.take('READY', 300)
            wait_for(serving, 60, '%d fan-out servers' % size)
            log('  %d fan-out members serving (started in %.1f s)'
                % (size, time.monotonic() - t))
            for items in FANOUT_ITEMS:
                for w in workers.values():
                    w.send('items %d' % items)
                for w in workers.values():
                    w.take('OK', 30)
                leader = wait_for(lambda: leader_node(client, layout), 30,
                                  'a leader')
                cycle_key = layout.task_cycle('poll')

                def idle_ledger():
                    kv = client.get(cycle_key)
                    return kv is None or \
                        not _ledger.Ledger.in_progress(kv.json())
                try:
                    # a cycle an earlier failure left running must end first
                    wait_for(idle_ledger, 600, 'the previous cycle to end',
                             every=0.5)
                except TimeoutError as exc:
                    rows.append({'members': size, 'items': items,
                                 'error': str(exc), 'cycle_s': None})
                    log('  %2d members x %6d items: SKIPPED: %s'
                        % (size, items, exc))
                    continue
                # idle baseline of these members (keep-alives, campaign)
                m0, c0, t0 = metrics.snapshot(), client.requests, \
                    time.monotonic()
                time.sleep(FANOUT_IDLE_WINDOW)   # the measurement window
                m1, c1, t1 = metrics.snapshot(), client.requests, \
                    time.monotonic()
                idle_rate = (sum(Metrics.delta(m0, m1).values()) -
                             (c1 - c0)) / (t1 - t0)
                before = reports()
                trouble0 = _sum_trouble(trouble(w) for w in workers.values())
                m0, c0, t0 = metrics.snapshot(), client.requests, \
                    time.monotonic()
                sent_wall = time.time()
                ideal = items * SLEEP / size
                line = workers[leader].ask('run %d' % size, ('CYCLE',
                                                             'NOTLEADER'),
                                           timeout=4 * ideal + 180)
                if line.startswith('NOTLEADER'):
                    raise RuntimeError('%s was not leading' % leader)
                cycle_s = float(line.split()[1])
                kv = client.get(cycle_key)
                record = kv.json() if kv else {'started_at': 0}
                if record['started_at'] < sent_wall:
                    rows.append({'members': size, 'items': items,
                                 'error': 'the cycle never started (the '
                                 'leader lost its term first?)',
                                 'cycle_s': None, 'log': notable(
                                     workers.values(), sent_wall)})
                    log('  %2d members x %6d items: FAILED: %s %s' % (
                        size, items, rows[-1]['error'], rows[-1]['log']))
                    continue
                adopted = None
                if record['status'] != 'done':
                    # The leader lost its term mid-cycle and left the cycle
                    # to the next leader, which adopts it: wait for that.
                    def finished(cid=record['cycle_id']):
                        r = client.get(cycle_key).json()
                        return r if r['cycle_id'] == cid and \
                            r['status'] == 'done' else None
                    try:
                        record = wait_for(finished, 4 * ideal + 180,
                                          'the next leader to finish the '
                                          'cycle', every=0.2)
                    except TimeoutError as exc:
                        # a finding, not a reason to lose the other axes
                        row = {'members': size, 'items': items,
                               'ideal_s': round(ideal, 3),
                               'error': str(exc), 'cycle_s': None,
                               'worker_trouble': {
                                   k: v - trouble0.get(k, 0) for k, v in
                                   _sum_trouble(trouble(w) for w in
                                                workers.values()).items()
                                   if v - trouble0.get(k, 0)},
                               'log': notable(workers.values(), sent_wall),
                               'ledger': client.get(cycle_key).json()}
                        rows.append(row)
                        log('  %2d members x %6d items: FAILED: %s; %s'
                            % (size, items, exc, row['worker_trouble']))
                        for ln in row['log']:
                            log('      ' + ln)
                        continue
                    cycle_s = time.monotonic() - t0
                    adopted = record.get('adopted_by_node') or '?'
                m1, c1, t1 = metrics.snapshot(), client.requests, \
                    time.monotonic()
                after = reports()
                went_wrong = {k: v - trouble0.get(k, 0) for k, v in
                              _sum_trouble(trouble(w) for w in
                                           workers.values()).items()
                              if v - trouble0.get(k, 0)}
                d = Metrics.delta(m0, m1)
                total = sum(d.values()) - (c1 - c0)
                if 'Range' in d:
                    d['Range'] -= c1 - c0
                net = total - idle_rate * (t1 - t0)
                loads = sorted(record.get('per_node', {}).values())
                rpc = sum(int(after[n][2]) - int(before[n][2])
                          for n in workers)
                rpc_min = sum(math.ceil(n / float(BATCH)) for n in loads)
                handled = sum(int(after[n][1]) - int(before[n][1])
                              for n in workers)
                member_requests = sum(int(after[n][0]) - int(before[n][0])
                                      for n in workers)
                firsts = [float(after[n][3]) for n in workers
                          if float(after[n][3])]
                lasts = [float(after[n][4]) for n in workers
                         if float(after[n][4])]
                wall = record['finished_at'] - record['started_at']
                row = {
                    'members': size, 'items': items,
                    'ideal_s': round(ideal, 3),
                    'cycle_s': round(cycle_s, 3),
                    'cycle_ratio': round(cycle_s / ideal, 3),
                    'busiest_member_items': max(loads) if loads else None,
                    'cycle_ratio_to_busiest': round(
                        cycle_s / (max(loads) * SLEEP), 3) if loads else None,
                    'ledger_wall_s': round(wall, 3),
                    'before_ledger_s': round(cycle_s - wall, 3),
                    'first_item_after_s': round(
                        min(firsts) - record['started_at'], 3)
                    if firsts else None,
                    'last_member_first_item_after_s': round(
                        max(firsts) - record['started_at'], 3)
                    if firsts else None,
                    'tail_after_last_item_s': round(
                        record['finished_at'] - max(lasts), 3)
                    if lasts else None,
                    'etcd_requests': total,
                    'etcd_requests_per_item': round(total / float(items), 4),
                    'etcd_requests_per_item_net_of_idle': round(
                        net / float(items), 4),
                    'etcd_requests_by_method': d,
                    'idle_requests_per_s': round(idle_rate, 2),
                    'member_client_requests': member_requests,
                    'rpc_messages': rpc,
                    'rpc_messages_per_item': round(rpc / float(items), 4),
                    'rpc_min_per_item': round(rpc_min / float(items), 4),
                    'rpc_ratio_to_min': round(rpc / float(rpc_min), 3)
                    if rpc_min else None,
                    'handled': handled, 'done': record.get('done'),
                    'failed': record.get('failed'),
                    'redispatched': record.get('redispatched'),
                    'nodes_used': len(loads),
                    'adopted_by': adopted,
                    'worker_trouble': went_wrong,
                    'log': notable(workers.values(), sent_wall)
                    if went_wrong or adopted else [],
                }
                rows.append(row)
                log('  %2d members x %6d items: cycle %.2f s vs ideal %.2f s '
                    '= %.3fx (busiest member %s items: %.3fx its own); first '
                    'item %.2f s after the ledger start (on the last member '
                    '%.2f s), tail %.2f s, %.2f s outside the ledger' % (
                        size, items, cycle_s, ideal, row['cycle_ratio'],
                        row['busiest_member_items'],
                        row['cycle_ratio_to_busiest'],
                        row['first_item_after_s'] or -1,
                        row['last_member_first_item_after_s'] or -1,
                        row['tail_after_last_item_s'] or -1,
                        row['before_ledger_s']))
                log('                         etcd %d requests = %.4f/item '
                    '(%.4f net of the members\' idle %.1f/s; bound 0.05) %s'
                    % (total, row['etcd_requests_per_item'],
                       row['etcd_requests_per_item_net_of_idle'], idle_rate,
                       d))
                log('                         RPC %d messages = %.4f/item '
                    '(minimum %.4f: %.2fx); handled %d, done %s, failed %s, '
                    're-dispatched %s, on %d members' % (
                        rpc, row['rpc_messages_per_item'],
                        row['rpc_min_per_item'], row['rpc_ratio_to_min'] or 0,
                        handled, record.get('done'), record.get('failed'),
                        record.get('redispatched'), len(loads)))
                if adopted or went_wrong:
                    log('                         went wrong: %s%s' % (
                        went_wrong, '; the leader lost its term, %s adopted '
                        'the cycle' % adopted if adopted else ''))
                    for ln in row['log']:
                        log('                           ' + ln)
    finally:
        stop_workers(list(workers.values()),
                     TROUBLE.setdefault('fanout', {}))
    return rows


# -- 3. status ----------------------------------------------------------------

def _bulk(client, ops, threads=4, per_txn=128):
    chunks = [ops[i:i + per_txn] for i in range(0, len(ops), per_txn)]
    errors = []

    def run(k):
        try:
            for chunk in chunks[k::threads]:
                client.txn(success=chunk)
        except Exception as exc:     # reported below
            errors.append(exc)
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def fill(client, coords, layout, n):
    """``n`` held locks and ``n`` open claims over ``coords``: one of each
    per member through the API (the seeds), the rest written in the very
    format the API wrote the seeds in (same keys but the name, same
    values but the resource id and claim id; lock entries on the member's
    session lease), by batched transactions -- the API would take minutes
    to write 200,000 keys one by one, and status reads what is stored,
    not how it got there."""
    seeds = []
    for i, c in enumerate(coords):
        lk = c.get_lock('seed-%d' % i)
        lk.acquire()
        cl = c.claim('share', 'seed-%d' % i, 'create')
        cl.__enter__()
        seeds.append((lk, cl))
    lkvs, _ = client.get_prefix(layout.locks)
    ckvs, _ = client.get_prefix(layout.claims)
    assert len(lkvs) == len(coords) and len(ckvs) == len(coords)
    ops = []
    for i in range(n - len(coords)):
        src = lkvs[i % len(lkvs)]
        name = 'share-%06d' % i
        seed_name = layout.lock_name_from_key(src.key)
        key = src.key.replace(layout.lock_prefix(seed_name),
                              layout.lock_prefix(name), 1)
        ops.append(_etcd.put_op(key, src.value, src.lease))
        src = ckvs[i % len(ckvs)]
        rec = src.json()
        new_id = uuid.uuid4().hex
        key = src.key.replace(_keys.quote_segment(rec['resource_id']) + '/',
                              _keys.quote_segment(name) + '/', 1) \
            .replace(rec['claim_id'], new_id)
        rec.update(resource_id=name, claim_id=new_id)
        ops.append(_etcd.put_op(key, json.dumps(rec)))
    _bulk(client, ops)
    assert client.count_prefix(layout.locks) == n
    assert client.count_prefix(layout.claims) == n
    return seeds


def status_axis(etcd, metrics, client):
    rows = []
    t = time.monotonic()
    subprocess.run([HACLUSTER, '--version'], capture_output=True, timeout=60)
    startup = time.monotonic() - t
    for n in STATUS_SIZES:
        cluster = 'scale-s-' + uuid.uuid4().hex[:6]
        layout = _keys.Layout(cluster)
        coords = [hacluster.get_coordinator(etcd.url, cluster,
                                            node='m%d' % i).start()
                  for i in range(3)]
        try:
            coords[0].campaign()
            wait_for(lambda: leader_node(client, layout), 30, 'a leader')
            t = time.monotonic()
            seeds = fill(client, coords, layout, n)
            fill_s = time.monotonic() - t
            t = time.monotonic()
            _status.collect(client, cluster)    # in this process
            collect_s = time.monotonic() - t
            runs = {}
            for fmt in ('table', 'json'):
                for _ in range(3 if n <= 10000 else 2):
                    m0, c0 = metrics.snapshot(), client.requests
                    own0 = sum(c.client.requests for c in coords)
                    t = time.monotonic()
                    out = subprocess.run(
                        [HACLUSTER, 'status', '-f', fmt, '--backend-url',
                         etcd.url, '--cluster', cluster],
                        capture_output=True, text=True, timeout=600)
                    wall = time.monotonic() - t
                    m1, c1 = metrics.snapshot(), client.requests
                    own1 = sum(c.client.requests for c in coords)
                    d = Metrics.delta(m0, m1)
                    req = sum(d.values()) - (c1 - c0) - (own1 - own0)
                    if out.returncode != 0:
                        runs.setdefault(fmt, []).append(
                            (wall, req, 'exit %d: %s' % (
                                out.returncode, out.stderr.strip()[-300:])))
                        continue
                    if fmt == 'json':
                        parsed = json.loads(out.stdout)
                        assert len(parsed['locks']) == n, len(parsed['locks'])
                        assert len(parsed['claims']) == n
                    else:
                        assert 'locks held (%d)' % n in out.stdout
                    runs.setdefault(fmt, []).append((wall, req, None))
            for lk, cl in seeds:
                cl.__exit__(None, None, None)
                lk.release()
        finally:
            client.delete_prefix(layout.locks)
            client.delete_prefix(layout.claims)
            for c in coords:
                c.stop()
            client.delete_prefix(layout.root)
            compact(client)
        goal = 1.0 if n <= 10000 else 5.0
        row = {'locks': n, 'claims': n, 'fill_s': round(fill_s, 1),
               'collect_in_process_s': round(collect_s, 3),
               'goal_s': goal, 'command_startup_s': round(startup, 3)}
        for fmt, rs in runs.items():
            ok = [r for r in rs if r[2] is None]
            errs = [r[2] for r in rs if r[2] is not None]
            walls = [r[0] for r in ok]
            row[fmt] = {
                'wall_s': [round(w, 3) for w in walls],
                'min_s': round(min(walls), 3) if walls else None,
                'median_s': round(statistics.median(walls), 3)
                if walls else None,
                'ratio_to_goal': round(statistics.median(walls) / goal, 3)
                if walls else None,
                'etcd_requests_per_call': statistics.median(
                    [r[1] for r in ok]) if ok else None,
                'requests_ratio_to_ideal': round(statistics.median(
                    [r[1] for r in ok]) / 4.0, 3) if ok else None,
                'errors': errs}
        rows.append(row)
        for fmt in ('table', 'json'):
            r = row.get(fmt, {})
            log('  %6d locks + %6d claims (written in %.1f s): hacluster '
                'status -f %-5s median %s s = %sx the %g s goal (runs %s), '
                '%s etcd requests per call (ideal 4: 1 snapshot + 3 member '
                'leases)%s' % (
                    n, n, fill_s, fmt, r.get('median_s'),
                    r.get('ratio_to_goal'), goal, r.get('wall_s'),
                    r.get('etcd_requests_per_call'),
                    '; FAILED: %s' % r['errors'] if r.get('errors') else ''))
    log('  (the command\'s own start-up, hacluster --version: %.2f s; '
        'status.collect in this process: %s s)' % (startup, ', '.join(
            '%.2f' % r['collect_in_process_s'] for r in rows)))
    return rows


# -- 4. contention ------------------------------------------------------------

def contention_axis(etcd, client):
    cluster = 'scale-c-' + uuid.uuid4().hex[:6]
    layout = _keys.Layout(cluster)
    name = 'share-contended'
    prefix = layout.lock_prefix(name)
    holder = hacluster.get_coordinator(etcd.url, cluster,
                                       node='holder').start()
    rows = []
    try:
        for w_count in WAITERS:
            procs = min(w_count, 10)
            per = [w_count // procs + (1 if i < w_count % procs else 0)
                   for i in range(procs)]
            workers = [Worker(WAITER, etcd.url, cluster,
                              'w%02d-%d' % (w_count, i), name, k)
                       for i, k in enumerate(per)]
            try:
                for w in workers:
                    w.take('READY', 120)
                rounds = max(2, math.ceil(HANDOFF_SAMPLES / float(w_count)))
                handoffs, fifo_ok, fifo_breaks = [], True, 0
                for _ in range(rounds):
                    lock = holder.get_lock(name)
                    assert lock.acquire(10)
                    for w in workers:
                        w.send('round')
                    wait_for(lambda: client.count_prefix(prefix) ==
                             w_count + 1, 60, '%d waiters queued' % w_count)
                    released = time.monotonic()
                    lock.release()
                    events = []
                    for w, k in zip(workers, per):
                        for _ in range(k):
                            _, tok, acq, rel = w.take('ACQ', 120).split()
                            events.append((float(acq), float(rel), int(tok)))
                    events.sort()
                    prev = released
                    for acq, rel, _ in events:
                        handoffs.append((acq - prev) * 1000.0)
                        prev = rel
                    tokens = [e[2] for e in events]
                    breaks = sum(1 for a, b in zip(tokens, tokens[1:])
                                 if b < a)
                    fifo_breaks += breaks
                    fifo_ok = fifo_ok and not breaks
            finally:
                stop_workers(workers, TROUBLE.setdefault('contention', {}))
            p50, p99 = statistics.median(handoffs), percentile(handoffs, 99)
            row = {'waiters': w_count, 'processes': procs,
                   'threads_per_process': per, 'samples': len(handoffs),
                   'handoff_p50_ms': round(p50, 2),
                   'handoff_p99_ms': round(p99, 2),
                   'handoff_max_ms': round(max(handoffs), 2),
                   'p50_ratio_to_10ms': round(p50 / 10.0, 3),
                   'p99_ratio_to_50ms': round(p99 / 50.0, 3),
                   'fifo_kept': fifo_ok, 'fifo_breaks': fifo_breaks}
            rows.append(row)
            log('  %2d waiters (%d processes): hand-off p50 %.1f ms (%.2fx '
                '10 ms), p99 %.1f ms (%.2fx 50 ms), max %.1f ms over %d '
                'hand-offs; FIFO %s' % (
                    w_count, procs, p50, p50 / 10.0, p99, p99 / 50.0,
                    max(handoffs), len(handoffs),
                    'kept' if fifo_ok else 'BROKEN (%d)' % fifo_breaks))
    finally:
        holder.stop()
    for r in rows:
        r['p50_ratio_to_smallest'] = round(
            r['handoff_p50_ms'] / rows[0]['handoff_p50_ms'], 3)
    return rows


# -- plots --------------------------------------------------------------------

def _axes(ax, title, xlabel, xs, bound=None, bound_label=None):
    import textwrap

    ax.axhline(1.0, color='green', lw=1.5, label='ideal')
    if bound is not None:
        ax.axhline(bound, color='red', ls='--', lw=1, label=bound_label)
    ax.set_xscale('log')
    xs = sorted(set(xs))
    ax.set_xticks(xs)
    ax.set_xticklabels(['{:,}'.format(x) for x in xs])
    ax.minorticks_off()
    if len(xs) == 1:
        ax.set_xlim(xs[0] / 2.0, xs[0] * 2.0)
    title = '\n'.join(textwrap.wrap(title, 48))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel('ratio to ideal', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _annotate(ax, xs, ys, texts):
    for x, y, t in zip(xs, ys, texts):
        ax.annotate(t, (x, y), textcoords='offset points', xytext=(3, 4),
                    fontsize=6)


def plot(results, note):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    files = []

    def save(fig, name):
        fig.suptitle(note, fontsize=7, y=0.01, va='bottom')
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = os.path.join(HERE, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(os.path.relpath(path, os.path.dirname(HERE)))

    if results.get('members'):
        m = results['members']
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        xs = [r['members'] for r in m]
        ys = [r['failover_ratio_to_ttl'] for r in m]
        a.plot(xs, ys, 'o-', label='median failover / lease_ttl')
        a.plot(xs, [r['failover_max_ratio_to_ttl'] for r in m], 'x:',
               label='max / lease_ttl')
        _annotate(a, xs, ys, ['%.2f s' % r['failover_median_s'] for r in m])
        _axes(a, 'SIGKILL of the leader -> new leader leading (ideal: '
              'lease_ttl %d s)' % TTL, 'members (processes)', xs,
              (TTL + 2.0) / TTL,
              'bound: lease_ttl + 2 s')
        ys = [r['idle_ratio_to_keepalive'] for r in m]
        b.plot(xs, ys, 'o-',
               label='idle requests per member / keep-alive rate')
        _annotate(b, xs, ys, ['%.2f/s' % r['idle_requests_per_member_s']
                              for r in m])
        _axes(b, 'idle etcd requests per member per s (ideal: 1 keep-alive '
              'per renew_interval = %.1f/s, flat)' % (1 / INTERVAL),
              'members (processes)', xs, 1.0 * INTERVAL, 'bound: 1/s')
        for ax in (a, b):
            ax.legend(fontsize=7)
        save(fig, 'scale-members.png')

    if results.get('fanout'):
        f = results['fanout']
        fig, axs = plt.subplots(1, 3, figsize=(14, 4))
        for r in f:
            if r.get('error'):
                axs[0].annotate('%d x %d: failed' % (r['members'], r['items']),
                                (r['items'], 1.15), color='red', fontsize=7)
        for size in sorted({r['members'] for r in f}):
            rs = [r for r in f if r['members'] == size and not r.get('error')]
            xs = [r['items'] for r in rs]
            ys = [r['cycle_ratio'] for r in rs]
            axs[0].plot(xs, ys, 'o-', label='%d members' % size)
            _annotate(axs[0], xs, ys, ['%.1f s' % r['cycle_s'] for r in rs])
            ys = [r['etcd_requests_per_item'] / 0.05 for r in rs]
            axs[1].plot(xs, ys, 'o-', label='%d members, all requests' % size)
            _annotate(axs[1], xs, ys, ['%.3f' % r['etcd_requests_per_item']
                                       for r in rs])
            axs[1].plot(xs, [r['etcd_requests_per_item_net_of_idle'] / 0.05
                             for r in rs], 'x:',
                        label='%d members, net of idle' % size)
            ys = [r['rpc_ratio_to_min'] for r in rs]
            axs[2].plot(xs, ys, 'o-', label='%d members' % size)
            _annotate(axs[2], xs, ys, ['%.3f' % r['rpc_messages_per_item']
                                       for r in rs])
        fx = [r['items'] for r in f]
        _axes(axs[0], 'cycle time / (items x 50 ms / members)', 'items', fx,
              1.15, 'bound 1.15')
        _axes(axs[1], 'etcd requests per item / 0.05 (the goal as ideal)',
              'items', fx)
        _axes(axs[2], 'RPC messages per item / minimum (1 per %d items per '
              'member)' % BATCH, 'items', fx)
        for ax in axs:
            ax.legend(fontsize=7)
        save(fig, 'scale-fanout.png')

    if results.get('status'):
        s = results['status']
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        xs = [r['locks'] for r in s]
        for fmt in ('table', 'json'):
            ys = [(r.get(fmt) or {}).get('ratio_to_goal') for r in s]
            a.plot(xs, [y if y is not None else float('nan')
                        for y in ys], 'o-',
                   label='hacluster status -f %s' % fmt)
            _annotate(a, xs, [y or 0 for y in ys],
                      ['%s s' % (r.get(fmt) or {}).get('median_s') for r in s])
            ys = [(r.get(fmt) or {}).get('requests_ratio_to_ideal') for r in s]
            b.plot(xs, [y if y is not None else float('nan')
                        for y in ys], 'o-', label='-f %s' % fmt)
        _axes(a, 'hacluster status wall time / goal (1 s up to 10,000; 5 s at '
              '100,000)', 'held locks (and as many open claims)', xs)
        _axes(b, 'etcd requests per call / 4 (1 snapshot + 1 lease per '
              'member)',
              'held locks (and as many open claims)', xs)
        for ax in (a, b):
            ax.legend(fontsize=7)
        save(fig, 'scale-status.png')

    if results.get('contention'):
        c = results['contention']
        fig, a = plt.subplots(1, 1, figsize=(6, 4))
        xs = [r['waiters'] for r in c]
        ys = [r['p50_ratio_to_10ms'] for r in c]
        a.plot(xs, ys, 'o-', label='p50 / 10 ms')
        _annotate(a, xs, ys, ['%.1f ms%s' % (
            r['handoff_p50_ms'], '' if r['fifo_kept'] else ' FIFO broken')
            for r in c])
        ys = [r['p99_ratio_to_50ms'] for r in c]
        a.plot(xs, ys, 's-', label='p99 / 50 ms')
        _annotate(a, xs, ys, ['%.1f ms' % r['handoff_p99_ms'] for r in c])
        _axes(a, 'lock hand-off to the next waiter (ideal: flat, within the '
              'goal)', 'waiters on one name', xs)
        a.legend(fontsize=7)
        save(fig, 'scale-contention.png')
    return files


@contextlib.contextmanager
def _rabbit_if(wanted):
    """A private RabbitMQ for the fan-out axis (6-9 s to start), None when
    that axis is not run."""
    if not wanted:
        yield None
        return
    with servers.RabbitMQServer() as rabbit:
        yield rabbit


def main():
    started = time.monotonic()
    load0 = os.getloadavg()
    results = {'quick': QUICK, 'axes': list(RUN_AXES)}
    results.update({axis: None for axis in AXES})
    with servers.EtcdServer(name='bench-scale') as etcd, \
            _rabbit_if('fanout' in RUN_AXES) as rabbit:
        metrics = Metrics(etcd.endpoint)
        # a generous timeout: this client reads 200,000 keys at once
        client = _etcd.Client(_url.parse(etcd.url), timeout=60)
        log('private etcd %s, RabbitMQ %s; %s sizes; axes %s; load average '
            '%.2f on %d cores (other work on this machine shares them)'
            % (etcd.endpoint, rabbit.port if rabbit else 'not started',
               'smallest' if QUICK else 'all', ', '.join(RUN_AXES),
               load0[0], os.cpu_count()))
        log('etcd requests: the server\'s grpc_server_msg_received_total '
            '(all methods), minus this benchmark\'s own client')
        log('code: hacluster/ copied at start (digest %s): commit %s%s'
            % (CODE['digest'], CODE.get('commit'),
               ' + uncommitted changes to %s' % ', '.join(
                   CODE['uncommitted']) if CODE.get('uncommitted') else ''))
        if 'members' in RUN_AXES:
            log('\n1. members: one process each, one coordinator (session, '
                'member record, watch) campaigning for leader; timings '
                '%d/%g/%g s' % (TTL, DEADLINE, INTERVAL))
            results['members'] = members_axis(etcd, metrics, client)
            compact(client)
        if 'fanout' in RUN_AXES:
            log('\n2. fan-out: one process per member (coordinator, '
                'periodic runner, RPC server, one worker); items of %d ms'
                % (SLEEP * 1e3))
            results['fanout'] = fanout_axis(etcd, metrics, client,
                                            rabbit.transport_url)
            compact(client)
        if 'status' in RUN_AXES:
            log('\n3. status: locks held and claims open by 3 members')
            results['status'] = status_axis(etcd, metrics, client)
        if 'contention' in RUN_AXES:
            log('\n4. lock contention: waiters on one name')
            results['contention'] = contention_axis(etcd, client)
    load1 = os.getloadavg()
    run_s = time.monotonic() - started
    note = ('%s run, %.0f s, 2 cores shared with other work (load average '
            '%.1f at start, %.1f at end): absolute numbers are noisy'
            % ('quick' if QUICK else 'full', run_s, load0[0], load1[0]))
    results['plots'] = plot(results, note)
    results.update(
        max_members=max(
            (MEMBER_SIZES if 'members' in RUN_AXES else []) +
            (FANOUT_MEMBERS if 'fanout' in RUN_AXES else []), default=None),
        max_items=max(FANOUT_ITEMS) if 'fanout' in RUN_AXES else None,
        member=('plain node: one process, one coordinator campaigning for '
                'leader; fan-out member: one process, coordinator + periodic '
                'runner + RPC server, one worker'),
        etcd_requests_source='etcd /metrics grpc_server_msg_received_total '
                             'minus the benchmark client\'s own',
        worker_trouble=TROUBLE, code=CODE,
        run_s=round(run_s, 1), load_average=[round(load0[0], 2),
                                             round(load1[0], 2)],
        cores=os.cpu_count())
    log('\nplots: %s' % ', '.join(results['plots']))
    log('run time %.0f s (load average %.2f -> %.2f)'
        % (run_s, load0[0], load1[0]))
    print(json.dumps(results))


if __name__ == '__main__':
    main()
