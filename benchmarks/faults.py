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

"""Fault suite: what an operator's worst week does to a cluster, measured.

Every scenario runs against real servers started here on free loopback
ports (etcd with 1 and 3 members, RabbitMQ, etcd with JWT auth) and real
member processes, injects one fault, and reports what it measured against
its bound. Workloads that acknowledge writes count the acknowledged writes
that were lost; the control run (the same nemesis against a store that
ignores fencing tokens) must lose some, or the nemesis proved nothing.

    benchmarks/run faults [NAME ...]       (default: every scenario)

Prints one table (fault, what was measured, bound, held), writes
``benchmarks/faults-timeline.png`` (who leads, who holds the lock, pauses,
kills and the store's refusals of stale tokens), and ends with one JSON
object: ``rows`` (every figure), ``lost`` (per workload), ``control``,
``held`` (all rows held) and ``plots``. Exit status 1 if a row did not
hold.
"""

import json
import os
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from hacluster.testing import servers  # noqa: E402

PLOT = os.path.join(HERE, 'faults-timeline.png')


class Row:
    """One line of the report.

    :param fault: what was done ("leader SIGKILL x20").
    :param measured: what was seen, readable ("failover 3.9/4.1/4.4 s").
    :param bound: what must hold, readable ("<= 5 s; 0 overlaps").
    :param held: True if the bound held.
    :param figures: every number behind ``measured`` (JSON-able).
    :param lost: acknowledged writes lost, for a workload that has them.
    :param control: True for a control run (expected to lose writes).
    :param timeline: optional data for the PNG, see :func:`plot`.
    """

    def __init__(self, fault, measured, bound, held, figures=None,
                 lost=None, control=False, timeline=None):
        self.fault = fault
        self.measured = measured
        self.bound = bound
        self.held = bool(held)
        self.figures = figures or {}
        self.lost = lost
        self.control = control
        self.timeline = timeline

    def as_json(self):
        out = {'fault': self.fault, 'measured': self.measured,
               'bound': self.bound, 'held': self.held,
               'figures': self.figures}
        if self.lost is not None:
            out['lost'] = self.lost
        if self.control:
            out['control'] = True
        return out


class Env:
    """The servers the scenarios share, started on first use and closed at
    the end. ``etcd()`` and ``rabbitmq()`` are shared by every scenario
    (use a fresh cluster name each time); ``fresh_etcd()`` and
    ``etcd_cluster()`` are new for the caller, who may kill them, and are
    closed at the end too."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix='hacluster-faults-')
        self._etcd = None
        self._rabbitmq = None
        self._owned = []
        self._n = 0

    def cluster_name(self, what):
        self._n += 1
        return 'faults-%s-%d-%d' % (what, os.getpid() % 10000, self._n)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def etcd(self):
        if self._etcd is None:
            self._etcd = servers.EtcdServer(name='etcd-faults').__enter__()
        return self._etcd

    def rabbitmq(self):
        if self._rabbitmq is None:
            self._rabbitmq = servers.RabbitMQServer().__enter__()
        return self._rabbitmq

    def fresh_etcd(self, **kwargs):
        server = servers.EtcdServer(name='etcd-fresh', **kwargs)
        self._owned.append(server)
        return server.__enter__()

    def etcd_cluster(self, size=3):
        cluster = servers.EtcdCluster(size=size)
        self._owned.append(cluster)
        return cluster.__enter__()

    def close(self):
        for thing in reversed(self._owned + [self._etcd, self._rabbitmq]):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    traceback.print_exc()


def table(rows):
    heads = ('fault', 'measured', 'bound', 'held')
    cells = [(r.fault, r.measured, r.bound,
              'held' if r.held else 'NOT HELD') for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells))
              for i, h in enumerate(heads)]
    line = '  '.join('%-*s' % (w, h) for w, h in zip(widths, heads))
    out = [line, '  '.join('-' * w for w in widths)]
    for c in cells:
        out.append('  '.join('%-*s' % (w, v) for w, v in zip(widths, c)))
    return '\n'.join(out)


def plot(timelines, path):
    """Draw each timeline as one panel: a lane per process, bars for
    intervals (kind -> colour) and markers for instants.

    A timeline is ``{'title': str, 'lanes': [name...], 'bars':
    [(lane, start, end, kind)], 'marks': [(lane, t, kind)]}`` with times in
    seconds from the start of its run. Returns the path, or None without
    matplotlib.
    """
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('(matplotlib is not installed: no timeline drawn)')
        return None
    colours = {'leads': '#2b8cbe', 'holds': '#31a354', 'paused': '#636363',
               'down': '#fdae6b', 'dead, lease running': '#fdae6b',
               'no leader': '#fee0d2'}
    thin = {'paused'}       # drawn over the other bars of their lane
    markers = {'kill': ('x', 'black'), 'refused': ('v', '#de2d26'),
               'freeze': ('|', 'black'), 'resume': ('|', '#636363'),
               'fenced': ('s', '#756bb1'), 'stale write': ('v', '#de2d26')}
    fig, axes = plt.subplots(len(timelines), 1,
                             figsize=(12, 2.2 + 1.6 * len(timelines)),
                             squeeze=False)
    for ax, tl in zip(axes[:, 0], timelines):
        lanes = tl['lanes']
        y = {name: i for i, name in enumerate(lanes)}
        seen = set()
        bars = sorted(tl.get('bars', ()), key=lambda b: b[3] in thin)
        for lane, start, end, kind in bars:
            label = kind if kind not in seen else None
            seen.add(kind)
            ax.barh(y[lane], max(end - start, 0.02), left=start,
                    height=0.2 if kind in thin else 0.6,
                    color=colours.get(kind, '#969696'), label=label)
        for lane, t, kind in tl.get('marks', ()):
            marker, colour = markers.get(kind, ('o', 'black'))
            label = kind if kind not in seen else None
            seen.add(kind)
            ax.plot([t], [y[lane]], marker=marker, color=colour,
                    linestyle='none', markersize=8, label=label)
        ax.set_yticks(range(len(lanes)))
        ax.set_yticklabels(lanes)
        ax.set_title(tl['title'], fontsize=10)
        ax.set_xlabel('seconds')
        ax.legend(loc='upper right', fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def scenarios():
    """``[(name, fn)]`` of every scenario, in the order they run. (The
    scenario modules import :class:`Row` from here: imported late.)"""
    import _faults_infra
    import _faults_workload
    return _faults_workload.SCENARIOS + _faults_infra.SCENARIOS


def main(argv):
    every = scenarios()
    names = argv or [name for name, _ in every]
    known = dict(every)
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit('unknown scenario(s) %s; known: %s'
                 % (', '.join(unknown), ', '.join(known)))
    env = Env()
    rows = []
    started = time.monotonic()
    try:
        for name in names:
            t0 = time.monotonic()
            print('== %s' % name, flush=True)
            try:
                got = known[name](env)
            except Exception as exc:
                traceback.print_exc()
                got = [Row(name, 'failed to run: %s: %s'
                           % (type(exc).__name__, exc), '-', False)]
            for row in got:
                row.figures.setdefault('seconds', round(
                    time.monotonic() - t0, 1))
                print('   %s: %s (%s)' % (
                    'held' if row.held else 'NOT HELD', row.measured,
                    row.bound), flush=True)
            rows.extend(got)
    finally:
        env.close()
    print()
    print(table(rows))
    timelines = [r.timeline for r in rows if r.timeline]
    plots = []
    if timelines:
        drawn = plot(timelines, PLOT)
        if drawn:
            plots.append(os.path.relpath(drawn, os.path.dirname(HERE)))
            print('\ntimeline: %s' % plots[-1])
    held = all(r.held for r in rows)
    print('\n%d of %d rows held in %.0f s' % (
        sum(r.held for r in rows), len(rows), time.monotonic() - started))
    result = {
        'benchmark': 'faults',
        'rows': [r.as_json() for r in rows],
        'lost': {r.fault: r.lost for r in rows
                 if r.lost is not None and not r.control},
        'control': {r.fault: {'lost': r.lost} for r in rows if r.control},
        'held': held,
        'plots': plots,
    }
    print(json.dumps(result, sort_keys=True))
    return 0 if held else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
