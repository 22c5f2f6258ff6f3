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

"""Three real manila-share 23.0.1 processes: manila's own ShareManager
(the baseline: what operators can run today) against hacluster's
HAShareManager, in the same run, on the same PostgreSQL, RabbitMQ and etcd,
with the same driver (manila's DummyDriver + the hacluster mixin, which
only records what it is asked).

Both clusters run side by side (hosts ``plaingroup`` and ``hagroup``: one
RabbitMQ queue and one database each) and the create figures alternate
between them, round by round, so that the load other processes put on the
machine falls on both alike; each figure is a ratio of the same run.

Figures, each for both managers:

1. one create at a time (3 each, alternating): where its time goes;
2. N creates (default 30 and 300; driver create 0.2 s) cast in one burst
   through the backend's shared queue: wall time from the first cast to
   the last share available (median of the rounds), the spread over the
   nodes, CPU per create (the manila-share workers, etcd, PostgreSQL,
   RabbitMQ, the client that casts) and where each create's time went;
3. the etcd requests of one create (those its RPC thread sends, by
   purpose) and, etcd's own count, all requests and watch events per
   create with the idle rate taken out; PostgreSQL's commits and rows
   written per create (each side's own database); idle CPU and etcd
   requests per second;
4. backend stats polls per ``periodic_interval`` (2 s) over 20 s;
5. per-share status polls per cycle for 12 shares waiting on the driver
   (``creating_from_snapshot``) over 20 s;
6. SIGKILL of a node 1 s into a 10 s create: the share's status 20 s later,
   and when it reached a final state.

Where the time goes is measured in the manila-share processes by
benchmarks/_manila_trace.py (loaded through ``sitecustomize``: nothing in
manila or hacluster changes): per create, the time its RPC thread spent in
hacluster's claim (open, finish, end), cluster locks, the fenced database
layer, manila's database API, the driver, other etcd requests, and
manila's own code -- in wall time and in the thread's own CPU time; "rpc"
is from the share's row being written (right before the cast) to the
handler starting. The first creates of each cluster (a warm-up: manila's
queries compiled) are not measured.

    benchmarks/run manila [N ...] [--rounds R]     (default: 30 300)

About 4.5 minutes with the defaults on 2 cores; prints the figures as
tables and, as its last line, one JSON object with every figure.
"""

import collections
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

from hacluster.testing import manila_rig
from hacluster.testing import process
from hacluster.testing import servers

ARGS = sys.argv[1:]
ROUNDS = None
if '--rounds' in ARGS:
    at = ARGS.index('--rounds')
    ROUNDS = int(ARGS[at + 1])
    del ARGS[at:at + 2]
SIZES = [int(a) for a in ARGS] or [30, 300]
DELAY = 0.2
INTERVAL = 2
WINDOW = 20
QUIET = 3
GOAL = 1.10
FINAL = ('available', 'error')
HZ = os.sysconf('SC_CLK_TCK')
DB_COUNTERS = ('commits', 'inserted', 'updated', 'deleted')
SIDES = (('plain', 'manila ShareManager', manila_rig.PLAIN_MANAGER),
         ('ha', 'HAShareManager', manila_rig.HA_MANAGER))


def rounds_for(n):
    """Rounds per size (``--rounds``): by default 3 where a round is
    short, 1 at more than 100 creates (a round of 300 takes ~40 s)."""
    if ROUNDS:
        return ROUNDS
    return 3 if n <= 100 else 1


# -- measuring ---------------------------------------------------------------

def cpu_of(pids):
    """``{pid: CPU seconds so far}`` of the live ones of ``pids``."""
    out = {}
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid) as f:
                fields = f.read().rpartition(')')[2].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / HZ
        except (OSError, IndexError, ValueError):
            pass
    return out


def cpu_seconds(pids):
    return sum(cpu_of(pids).values())


def cpu_since(before, pids):
    """CPU seconds used since ``before`` (a :func:`cpu_of`) by ``pids``
    (those started since count whole; those gone since, not at all)."""
    now = cpu_of(set(pids) | set(before))
    return sum(seconds - before.get(pid, 0) for pid, seconds in now.items())


def children_cpu_seconds():
    """CPU of this process's reaped children (the client processes)."""
    times = os.times()
    return times.children_user + times.children_system


def tree(server):
    return [server.pid] + list(process._descendants(server.pid))


_METRIC = re.compile(r'grpc_server_handled_total\{grpc_code="OK",'
                     r'grpc_method="(\w+)",grpc_service="etcdserverpb\.\w+"'
                     r'.*\} (\S+)$')
_EVENTS = 'etcd_debugging_mvcc_events_total'


def etcd_counts(etcd):
    """etcd's own counters: requests by gRPC method, watch events sent."""
    out = collections.Counter()
    text = urllib.request.urlopen(etcd.client_url + '/metrics',
                                  timeout=10).read().decode()
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match:
            out[match.group(1)] += float(match.group(2))
        elif line.startswith(_EVENTS + ' '):
            out['watch events'] += float(line.split()[1])
    return out


class Side:
    """One cluster of three manila-share nodes, traced."""

    def __init__(self, key, label, manager, pg, rabbit, etcd, site, workdir):
        self.key = key
        self.label = label
        self.trace = os.path.join(workdir, 'trace-%s.jsonl' % key)
        pythonpath = os.pathsep.join(
            p for p in (site, os.environ.get('PYTHONPATH')) if p)
        self.cluster = manila_rig.ManilaCluster(
            pg, rabbit.transport_url,
            backend_url=etcd.url if manager == manila_rig.HA_MANAGER
            else None,
            periodic_interval=INTERVAL, manager=manager, host=key + 'group',
            delays={'create_share': DELAY},
            extra_env={'PYTHONPATH': pythonpath,
                       'HACLUSTER_TRACE': self.trace})
        self._engine = None

    def engine(self):
        if self._engine is None:
            import sqlalchemy
            self._engine = sqlalchemy.create_engine(
                self.cluster.pg.url(self.cluster.database), pool_size=1)
        return self._engine

    def rows(self, ids):
        """``{id: (created_at, updated_at, status)}`` (Unix times), read
        from PostgreSQL directly (a client process would take the CPU the
        nodes are measured on)."""
        import sqlalchemy
        utc = datetime.timezone.utc
        with self.engine().connect() as conn:
            found = conn.execute(sqlalchemy.text(
                'SELECT id, created_at, updated_at, status '
                'FROM share_instances')).fetchall()
        return {r[0]: (r[1].replace(tzinfo=utc).timestamp(),
                       (r[2] or r[1]).replace(tzinfo=utc).timestamp(), r[3])
                for r in found if r[0] in ids}

    def db_counts(self):
        """PostgreSQL's counters of this side's database (transactions,
        rows inserted/updated/deleted), after the nodes' pending
        statistics had time to be flushed (at most once a second);
        includes what the client writes (the share rows)."""
        import sqlalchemy
        time.sleep(1.5)
        with self.engine().connect() as conn:
            conn.execute(sqlalchemy.text('SELECT pg_stat_clear_snapshot()'))
            row = conn.execute(sqlalchemy.text(
                'SELECT xact_commit, tup_inserted, tup_updated, '
                'tup_deleted FROM pg_stat_database '
                'WHERE datname = current_database()')).fetchone()
        return dict(zip(DB_COUNTERS, row))

    def set_status(self, ids, status):
        import sqlalchemy
        with self.engine().begin() as conn:
            conn.execute(sqlalchemy.text(
                'UPDATE share_instances SET status = :s WHERE id IN :ids'
            ).bindparams(sqlalchemy.bindparam('ids', expanding=True)),
                {'s': status, 'ids': list(ids)})

    def wait(self, ids, timeout=900):
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(ids)
            if len(rows) == len(ids) and all(r[2] in FINAL
                                             for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError('%s: after %d s: %s' % (
                    self.label, timeout, collections.Counter(
                        r[2] for r in rows.values())))
            time.sleep(0.1)

    def records(self, ids, timeout=30):
        """The trace records of the creates of ``ids`` (each is written
        when its handler returns, after the claim's end)."""
        deadline = time.monotonic() + timeout
        while True:
            found = {}
            try:
                with open(self.trace) as f:
                    for line in f:
                        rec = json.loads(line)
                        if rec['id'] in ids and rec['final']:
                            found[rec['id']] = rec
            except FileNotFoundError:
                pass
            if len(found) == len(ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def workers(self):
        return {pid: name for name, node in self.cluster.nodes.items()
                for pid in node.worker_pids()}

    def close(self):
        if self._engine is not None:
            self._engine.dispose()
        self.cluster.close()


def breakdown(records, rows):
    """Mean milliseconds per create: each part of its RPC thread's time,
    plus ``to_final`` (handler start to the final status write, what the
    user waits for after ``rpc``) and ``after_final`` (the rest of the
    handler: the claim's end, manila's notifications)."""
    out = collections.defaultdict(float)
    for rec in records.values():
        out['rpc'] += rec['start'] - rows[rec['id']][0]
        for part, seconds in rec['s'].items():
            out[part] += seconds
        out['to_final'] += rec['final'] - rec['start']
        out['after_final'] += rec['end'] - rec['final']
    n = max(1, len(records))
    return {k: round(v / n * 1000, 1) for k, v in out.items()}


def thread_cpu(records):
    """Mean CPU milliseconds per create of its RPC thread, by part (the
    thread's own CPU time: what the part costs, not what it waited)."""
    out = collections.defaultdict(float)
    for rec in records.values():
        for part, seconds in rec['cpu'].items():
            out[part] += seconds
            out['total'] += seconds
    n = max(1, len(records))
    return {k: round(v / n * 1000, 2) for k, v in out.items()}


def calls(records):
    """Mean milliseconds per create in each database and etcd call."""
    out = collections.defaultdict(float)
    for rec in records.values():
        for name, (_count, seconds) in rec['calls'].items():
            out[name] += seconds
    n = max(1, len(records))
    return {k: round(v / n * 1000, 1) for k, v in sorted(
        out.items(), key=lambda kv: -kv[1])}


def etcd_per_op(records):
    counts = collections.Counter()
    for rec in records.values():
        counts.update(rec['etcd'])
    n = max(1, len(records))
    return {k: round(v / n, 2) for k, v in sorted(counts.items())}


class Bench:
    def __init__(self, pg, rabbit, etcd, sides):
        self.pg, self.rabbit, self.etcd = pg, rabbit, etcd
        self.sides = sides
        self.idle = {}

    def measure_idle(self, seconds=10):
        """CPU of each side's workers and of etcd, and etcd's requests per
        second, with nothing to do (etcd's are the HA side's: manila alone
        does not use it)."""
        pids = {key: list(side.workers()) for key, side in self.sides.items()}
        before = {key: cpu_seconds(p) for key, p in pids.items()}
        etcd_before = cpu_seconds(tree(self.etcd))
        counts_before = etcd_counts(self.etcd)
        began = time.monotonic()
        time.sleep(seconds)
        took = time.monotonic() - began
        counts = etcd_counts(self.etcd)
        self.idle = {
            'workers_cores': {key: round((cpu_seconds(p) - before[key]) /
                                         took, 3) for key, p in pids.items()},
            'etcd_cores': round((cpu_seconds(tree(self.etcd)) -
                                 etcd_before) / took, 3),
            'etcd_per_s': {k: round((counts[k] - counts_before[k]) / took, 2)
                           for k in sorted(counts)
                           if counts[k] != counts_before[k]},
        }
        return self.idle

    def burst(self, side, n):
        workers = side.workers()
        groups = {'workers': lambda: list(workers),
                  'etcd': lambda: tree(self.etcd),
                  'postgres': lambda: tree(self.pg),
                  'rabbitmq': lambda: tree(self.rabbit)}
        cpu0 = {k: cpu_of(pids()) for k, pids in groups.items()}
        client0 = children_cpu_seconds()
        counts0 = etcd_counts(self.etcd)
        db0 = side.db_counts()
        began = time.time()
        ids = {s['instance_id'] for s in side.cluster.create_shares(n)}
        client = children_cpu_seconds() - client0
        rows = side.wait(ids)
        records = side.records(ids)
        took = time.time() - began
        counts = etcd_counts(self.etcd)
        db = side.db_counts()
        cpu = {k: round(cpu_since(cpu0[k], pids()) / n * 1000, 1)
               for k, pids in groups.items()}
        cpu['client'] = round(client / n * 1000, 1)
        cpu['total'] = round(sum(cpu.values()), 1)
        first = min(r[0] for r in rows.values())
        last = max(r[1] for r in rows.values())
        idle = self.idle.get('etcd_per_s', {})
        server = {k: round((counts[k] - counts0[k] - idle.get(k, 0) * took)
                           / n, 2)
                  for k in sorted(counts) if counts[k] != counts0[k]}
        return {
            'wall_s': round(last - first, 2),
            'with_client_start_s': round(last - began, 2),
            'cast_span_s': round(max(r[0] for r in rows.values()) - first, 2),
            'available': sum(1 for r in rows.values()
                             if r[2] == 'available'),
            'spread': dict(sorted(collections.Counter(
                workers.get(rec['pid'], '?')
                for rec in records.values()).items())),
            'cpu_ms_per_create': cpu,
            'breakdown_ms': breakdown(records, rows),
            'thread_cpu_ms': thread_cpu(records),
            'calls_ms': calls(records),
            'etcd_per_create': etcd_per_op(records),
            'etcd_server_per_create': server if side.key == 'ha' else {},
            # (the benchmark's own status polls end in a rollback: not
            # counted)
            'db_per_create': {k: round((db[k] - db0[k]) / n, 2)
                              for k in DB_COUNTERS},
        }

    def quiet(self, count=QUIET):
        """One create at a time, alternating: where one create's time goes
        when nothing else runs."""
        got = {key: [] for key in self.sides}
        for i in range(count):
            for key, side in self.sides.items():
                ids = {s['instance_id'] for s in
                       side.cluster.create_shares(1, 'quiet')}
                rows = side.wait(ids)
                recs = side.records(ids)
                got[key].append((rows, recs))
        out = {}
        for key, runs in got.items():
            rows = {k: v for r, _ in runs for k, v in r.items()}
            recs = {k: v for _, r in runs for k, v in r.items()}
            out[key] = {
                'latency_ms': round(statistics.median(
                    (r[1] - r[0]) * 1000 for r in rows.values()), 1),
                'breakdown_ms': breakdown(recs, rows),
                'thread_cpu_ms': thread_cpu(recs),
                'calls_ms': calls(recs),
                'etcd_per_create': etcd_per_op(recs),
            }
        return out


# -- the other figures (both clusters at once) -------------------------------

def polls(sides):
    out = {key: {} for key in sides}
    since = time.time()
    time.sleep(WINDOW)
    for key, side in sides.items():
        stats = collections.Counter(e['node'] for e in side.cluster.events(
            'stats', since=since))
        out[key]['stats_polls_per_interval'] = round(
            sum(stats.values()) / (WINDOW / INTERVAL), 2)
        out[key]['stats_by_node'] = dict(sorted(stats.items()))
    waiting = {}
    for key, side in sides.items():
        ids = {s['instance_id'] for s in side.cluster.create_shares(12,
                                                                    'poll')}
        side.wait(ids)
        side.set_status(ids, 'creating_from_snapshot')
        waiting[key] = ids
    since = time.time()
    time.sleep(WINDOW)
    for key, side in sides.items():
        got = [e for e in side.cluster.events('get_share_status',
                                              since=since)
               if e['id'] in waiting[key]]
        out[key]['share_polls_per_share_per_interval'] = round(
            len(got) / len(waiting[key]) / (WINDOW / INTERVAL), 2)
        out[key]['share_polls_by_node'] = dict(sorted(collections.Counter(
            e['node'] for e in got).items()))
        side.set_status(waiting[key], 'available')
    return out


def sigkill_mid_create(sides):
    cut = {}
    for key, side in sides.items():
        [share] = side.cluster.create_shares(1, 'slow10')
        cut[key] = share['instance_id']
    node = {}
    deadline = time.monotonic() + 60
    while len(node) < len(sides) and time.monotonic() < deadline:
        for key, side in sides.items():
            for e in side.cluster.events('create_share.start'):
                if e['id'] == cut[key]:
                    node[key] = e['node']
        time.sleep(0.05)
    time.sleep(1)
    killed = time.time()
    for key, side in sides.items():
        side.cluster.kill(node[key])
    time.sleep(20)
    out = {}
    for key, side in sides.items():
        created, updated, status = side.rows({cut[key]})[cut[key]]
        out[key] = {'killed_create_status_after_20s': status,
                    'killed_create_final_after_s': (
                        round(updated - killed, 2)
                        if status != 'creating' else None)}
    return out


# -- report ------------------------------------------------------------------

def _ms(value):
    return '%.1f' % value if value else '0'


def report(result):
    plain, ha = result['plain'], result['hacluster']
    rows = [('figure', SIDES[0][1], SIDES[1][1], 'ratio')]
    for n in SIZES:
        p, h = plain['creates'][str(n)], ha['creates'][str(n)]
        rows.append(('%d creates: wall, first cast to last available '
                     '(median of %d)' % (n, len(p['rounds'])),
                     '%.2f s (%s)' % (p['wall_s'], '/'.join(
                         str(v) for v in p['rounds'][0]['spread'].values())),
                     '%.2f s (%s)' % (h['wall_s'], '/'.join(
                         str(v) for v in h['rounds'][0]['spread'].values())),
                     '%.2f' % result['ratios']['create_wall_%d' % n]))
        rows.append(('%d creates: CPU per create (nodes, servers, client)'
                     % n, '%.0f ms' % p['cpu_ms_per_create']['total'],
                     '%.0f ms' % h['cpu_ms_per_create']['total'],
                     '%.2f' % (h['cpu_ms_per_create']['total'] /
                               p['cpu_ms_per_create']['total'])))
    rows.append(('one create alone: cast to available',
                 '%.0f ms' % plain['quiet']['latency_ms'],
                 '%.0f ms' % ha['quiet']['latency_ms'],
                 '%.2f' % (ha['quiet']['latency_ms'] /
                           plain['quiet']['latency_ms'])))
    for key in ('stats_polls_per_interval',
                'share_polls_per_share_per_interval'):
        rows.append((key, plain[key], ha[key],
                     '%.2f' % result['ratios'][key]))
    rows.append(('node SIGKILLed 1 s into a 10 s create',
                 '%s after 20 s' % plain['killed_create_status_after_20s'],
                 '%s %.2f s after the kill' % (
                     ha['killed_create_status_after_20s'],
                     ha['killed_create_final_after_s'] or 0), ''))
    _table(rows)

    # where a create's time goes
    cols = [('alone', 'quiet', None)] + [
        ('%d' % n, 'creates', str(n)) for n in SIZES]
    head = ['ms per create (mean)']
    for title, _, _ in cols:
        head += ['%s %s' % (SIDES[0][0], title), '%s %s' % ('ha', title)]
    table = [tuple(head)]
    import _manila_trace
    for part in ('rpc',) + _manila_trace.CATEGORIES + ('to_final',
                                                       'after_final'):
        line = [part]
        for _, where, n in cols:
            for side in (plain, ha):
                got = side[where] if n is None else side[where][n]
                line.append(_ms(got['breakdown_ms'].get(part, 0)))
        table.append(tuple(line))
    for part in _manila_trace.CATEGORIES + ('total',):
        line = ['thread CPU %s' % part]
        for _, where, n in cols:
            for side in (plain, ha):
                got = side[where] if n is None else side[where][n]
                line.append(_ms(got['thread_cpu_ms'].get(part, 0)))
        table.append(tuple(line))
    for group in ('workers', 'etcd', 'postgres', 'rabbitmq', 'client',
                  'total'):
        line = ['process CPU %s' % group, '', '']
        for n in SIZES:
            for side in (plain, ha):
                line.append(_ms(side['creates'][str(n)]
                                ['cpu_ms_per_create'][group]))
        table.append(tuple(line))
    print()
    _table(table)
    print()
    print('etcd requests per create (HAShareManager; its RPC thread, by '
          'purpose): %s' % ha['etcd_per_create'])
    print('etcd\'s own count per create, idle rate (%s/s) taken out: %s'
          % (result['idle']['etcd_per_s'], ha['etcd_server_per_create']))
    for n in SIZES:
        print('PostgreSQL per create, %d creates (this side\'s database, '
              'the client\'s rows included): manila %s, hacluster %s'
              % (n, plain['creates'][str(n)]['db_per_create'],
                 ha['creates'][str(n)]['db_per_create']))
    print('idle CPU: workers %s cores, etcd %s cores'
          % (result['idle']['workers_cores'], result['idle']['etcd_cores']))
    for key, side in (('plain', plain), ('ha', ha)):
        print('one create alone, %s, ms in each call: %s'
              % (key, side['quiet']['calls_ms']))


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print('| ' + ' | '.join(str(c).ljust(w)
                                for c, w in zip(row, widths)) + ' |')
        if j == 0:
            print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')


def main():
    began = time.monotonic()
    import _manila_trace        # (benchmarks/, this file's directory)
    workdir = tempfile.mkdtemp(prefix='hacluster-bench-manila-')
    site = _manila_trace.sitecustomize_dir()
    try:
        with servers.PostgresServer() as pg, servers.EtcdServer(
                name='bench-manila') as etcd, \
                servers.RabbitMQServer() as rabbit:
            manila_rig.make_template(pg)
            print('private PostgreSQL 127.0.0.1:%d, RabbitMQ 127.0.0.1:%d, '
                  'etcd %s' % (pg.port, rabbit.port, etcd.endpoint),
                  flush=True)
            sides = {key: Side(key, label, manager, pg, rabbit, etcd, site,
                               workdir) for key, label, manager in SIDES}
            try:
                result = run(Bench(pg, rabbit, etcd, sides))
            finally:
                for side in sides.values():
                    side.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(site, ignore_errors=True)
    result['duration_s'] = round(time.monotonic() - began, 1)
    report(result)
    print('\nratios (hacluster / manila): %s (goal: create walls <= %.2f)'
          % (result['ratios'], GOAL))
    print(json.dumps(result))


def run(bench):
    sides = bench.sides
    for side in sides.values():
        for node in side.cluster.nodes.values():
            node.start()
    for side in sides.values():
        side.cluster.start()
    time.sleep(5)               # past the HA nodes' first periodic cycle
    for side in sides.values():
        # manila's first creates compile its queries (SQLAlchemy's cache):
        # not what a create costs
        side.wait({s['instance_id'] for s in side.cluster.create_shares(
            6, 'warmup')})
    bench.measure_idle()
    print('idle: %s' % bench.idle, flush=True)
    out = {key: {'creates': {}} for key in sides}
    quiet = bench.quiet()
    for key in sides:
        out[key]['quiet'] = quiet[key]
    print('one create at a time: %s' % {k: v['latency_ms']
                                        for k, v in quiet.items()},
          flush=True)
    for n in SIZES:
        runs = {key: [] for key in sides}
        for i in range(rounds_for(n)):
            # alternate who goes first: drift in the machine's load falls
            # on both
            order = list(sides) if i % 2 == 0 else list(sides)[::-1]
            for key in order:
                runs[key].append(bench.burst(sides[key], n))
                print('%d creates, round %d, %s: wall %.2f s, CPU %s ms per '
                      'create' % (n, i + 1, sides[key].label,
                                  runs[key][-1]['wall_s'],
                                  runs[key][-1]['cpu_ms_per_create']),
                      flush=True)
        for key, got in runs.items():
            out[key]['creates'][str(n)] = _combine(got)
    for key, figures in polls(sides).items():
        out[key].update(figures)
    for key, figures in sigkill_mid_create(sides).items():
        out[key].update(figures)
    plain, ha = out['plain'], out['ha']
    ha['etcd_per_create'] = ha['creates'][str(SIZES[0])]['etcd_per_create']
    ha['etcd_server_per_create'] = ha['creates'][str(SIZES[-1])][
        'etcd_server_per_create']
    ratios = {}
    for n in SIZES:
        ratios['create_wall_%d' % n] = round(
            ha['creates'][str(n)]['wall_s'] /
            plain['creates'][str(n)]['wall_s'], 2)
        ratios['create_wall_%d_rounds' % n] = [
            round(h['wall_s'] / p['wall_s'], 2) for p, h in zip(
                plain['creates'][str(n)]['rounds'],
                ha['creates'][str(n)]['rounds'])]
    ratios['stats_polls_per_interval'] = round(
        ha['stats_polls_per_interval'] / plain['stats_polls_per_interval'],
        2)
    ratios['share_polls_per_share_per_interval'] = round(
        ha['share_polls_per_share_per_interval'] /
        plain['share_polls_per_share_per_interval'], 2)
    return {'plain': plain, 'hacluster': ha, 'ratios': ratios,
            'idle': bench.idle, 'sizes': SIZES, 'driver_create_s': DELAY,
            'goal': GOAL}


def _combine(rounds):
    """A size's figures: the median wall, the other figures of the median
    round, every round kept."""
    ordered = sorted(rounds, key=lambda r: r['wall_s'])
    median = ordered[(len(ordered) - 1) // 2]
    return dict(median, wall_s=round(statistics.median(
        r['wall_s'] for r in rounds), 2), rounds=rounds)


if __name__ == '__main__':
    main()
