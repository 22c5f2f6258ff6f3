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

"""Prometheus metrics of one node: what its coordinator sees and does.

This module owns every metric name (:data:`METRICS`): prefix
``hacluster_``, labels ``cluster`` and ``node`` on every sample (plus
``task``, ``mode``, ``member``... where a metric has them), counters end
in ``_total``, durations are in seconds and end in ``_seconds``.

Most values are read at scrape time from what the coordinator keeps anyway
(the session's counters, the lock registry, the claim book, the recovery
manager, the periodic tasks' stats): nothing is counted twice, and nothing
costs anything between scrapes. The three histograms need observations:
lock waits and holds (:mod:`hacluster.locks`) and lease renewal latency
(:mod:`hacluster.session`) are observed through hooks that are ``None``
until the coordinator's :attr:`~hacluster.coordinator.Coordinator.metrics`
is first used (one attribute test per acquire, release or renewal while
metrics are off); fan-out cycle durations are kept by the tasks' stats
(one observation per cycle).

Export, per coordinator (never prometheus_client's global registry: several
coordinators in one process each have their own)::

    server = hacluster.metrics.serve(coord, '127.0.0.1', 9464)  # /metrics
    writer = coord.metrics.start_textfile('/var/lib/node_exporter/'
                                          'hacluster.prom', interval=15)

or from ``[hacluster] metrics_port`` / ``metrics_textfile``
(:func:`start_from_conf`, which the HA share manager calls). The
coordinator's ``stop()`` stops them (the text file is written one last
time, with ``hacluster_member_up 0``).

prometheus_client is imported when a scrape or a file first needs it,
never at import; without it the same text format is written by this
module. The HTTP endpoint and the file writer are threads of their own
(native threads, or green threads under eventlet); a scrape reads local
state only -- it never waits for etcd.
"""

import bisect
import collections
import importlib
import logging
import os
import socket
import threading

from hacluster import exceptions

LOG = logging.getLogger(__name__)

PREFIX = 'hacluster_'

#: Every metric: exported name -> (type, extra labels, help). The type is
#: Prometheus's (counter names end in ``_total`` as exported).
METRICS = collections.OrderedDict([
    # membership and leadership
    ('hacluster_member_up', ('gauge', (), (
        '1 while this node is a member: its coordinator runs and its '
        'session is within its renew deadline'))),
    ('hacluster_member_info', ('gauge', ('member_id', 'version'), (
        'This process incarnation (always 1)'))),
    ('hacluster_members', ('gauge', (), (
        'Live members of the cluster, as this node\'s watch sees them'))),
    ('hacluster_is_leader', ('gauge', (), '1 while this node leads')),
    ('hacluster_leader_term', ('gauge', (), (
        'Term (fencing token) of the leader this node sees; 0: none'))),
    ('hacluster_leader_changes_total', ('counter', (), (
        'Changes of leader seen by this node'))),
    # session
    ('hacluster_sessions_started_total', ('counter', (), (
        'Sessions (leases) this process started: 1, plus one per lost '
        'session'))),
    ('hacluster_session_renewals_total', ('counter', (), (
        'Successful lease renewals'))),
    ('hacluster_session_renewal_failures_total', ('counter', (), (
        'Failed lease renewals (etcd did not answer in time)'))),
    ('hacluster_session_losses_total', ('counter', (), (
        'Sessions lost (no successful renewal within renew_deadline, or '
        'the lease gone from etcd)'))),
    ('hacluster_session_renewal_seconds', ('histogram', (), (
        'Latency of successful lease renewals'))),
    ('hacluster_session_since_renewal_seconds', ('gauge', (), (
        'Seconds since the last successful renewal was sent (absent with '
        'no live session)'))),
    ('hacluster_session_time_left_seconds', ('gauge', (), (
        'Seconds left before the renew deadline (0 with no live '
        'session)'))),
    # locks
    ('hacluster_locks_held', ('gauge', (), (
        'Cluster locks this process holds now'))),
    ('hacluster_lock_wait_seconds', ('histogram', (), (
        'Time from acquire() to holding, of the cluster locks acquired'))),
    ('hacluster_lock_hold_seconds', ('histogram', (), (
        'Time cluster locks were held, observed at release'))),
    ('hacluster_lock_acquire_timeouts_total', ('counter', (), (
        'Acquisitions that gave up: not acquired in time, or taken by '
        'someone else for a try without waiting'))),
    ('hacluster_locks_lost_total', ('counter', (), (
        'Locks lost while held (session lost, key deleted by someone '
        'else)'))),
    # claims and recovery
    ('hacluster_claims_open', ('gauge', (), (
        'Claims (operations in flight) of this process open now'))),
    ('hacluster_claims_opened_total', ('counter', (), (
        'Claims this process opened'))),
    ('hacluster_claims_late_total', ('counter', (), (
        'Operations of this process that finished after another node had '
        'recovered their claim (their results were not written)'))),
    ('hacluster_claims_recovered_total', ('counter', (), (
        'Claims of dead nodes (or of earlier incarnations of this one) '
        'recovered here'))),
    ('hacluster_claims_recovery_failures_total', ('counter', (), (
        'Recoveries that failed here (the claim is kept and retried)'))),
    ('hacluster_recoveries_running', ('gauge', (), (
        'Recovery handlers running here now'))),
    # periodic tasks
    ('hacluster_task_runs_total', ('counter', ('task', 'mode'), (
        'Runs of a periodic task on this node'))),
    ('hacluster_task_skips_total', ('counter', ('task', 'mode'), (
        'Ticks skipped because a cycle of the task was still running (here '
        'or on a previous leader)'))),
    ('hacluster_task_failures_total', ('counter', ('task', 'mode'), (
        'Runs of a periodic task that raised'))),
    ('hacluster_task_last_duration_seconds', ('gauge', ('task', 'mode'), (
        'Duration of the task\'s last run on this node'))),
    ('hacluster_task_last_run_timestamp_seconds', ('gauge', (
        'task', 'mode'), 'Wall-clock time of the task\'s last run here')),
    ('hacluster_task_paused', ('gauge', ('task', 'mode'), (
        '1 while the task is paused for the cluster'))),
    # fan-out
    ('hacluster_fanout_cycles_total', ('counter', ('task',), (
        'Fan-out cycles this node ran (or adopted) as leader'))),
    ('hacluster_fanout_cycle_seconds', ('histogram', ('task',), (
        'Duration of the fan-out cycles this node ran as leader, from '
        'listing (or adoption) to the last item done'))),
    ('hacluster_fanout_cycle_items', ('gauge', ('task', 'member'), (
        'Items of the last fan-out cycle this node led, by the member that '
        'handled them'))),
    ('hacluster_fanout_items_handled_total', ('counter', ('task',), (
        'Fan-out items this member handled'))),
    ('hacluster_fanout_item_failures_total', ('counter', ('task',), (
        'Fan-out items whose handler raised here, or that this node gave '
        'up on as leader'))),
    ('hacluster_fanout_items_redispatched_total', ('counter', ('task',), (
        'Fan-out items this node re-dispatched as leader (owner left, or '
        'deadline passed)'))),
])

#: Histogram bucket bounds, in seconds.
LOCK_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0, 30.0, 60.0, 300.0)
LOCK_HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
                     300.0, 900.0, 3600.0)
RENEWAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0)
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                 300.0, 600.0, 1800.0)

#: The text exposition format written (prometheus_client's, and ours).
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


class Histogram:
    """Buckets, sum and count of observed values (seconds), without
    prometheus_client. :meth:`observe` is a bisect and two additions under
    a lock of its own; thread-safe."""

    __slots__ = ('bounds', '_counts', '_sum', '_lock')

    def __init__(self, bounds):
        self.bounds = tuple(sorted(float(b) for b in bounds))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value):
        # bisect_left: a value equal to a bound counts in that bound's
        # bucket (Prometheus's ``le``)
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self):
        """``([(upper bound, cumulative count)...], sum, count)``, the last
        bound ``+Inf``."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out, acc = [], 0
        for bound, n in zip(self.bounds + (float('inf'),), counts):
            acc += n
            out.append((bound, acc))
        return out, total, acc


class Family:
    """One metric and its samples: ``name`` (as exported; a counter's
    without ``_total``, as Prometheus's data model has it), ``kind``,
    ``documentation``, ``samples`` (``(sample name, labels, value)``)."""

    def __init__(self, exported, kind, documentation):
        self.exported = exported
        self.name = exported[:-len('_total')] if kind == 'counter' \
            else exported
        self.kind = kind
        self.documentation = documentation
        self.samples = []


class _Families:
    """What one scrape collects: families in :data:`METRICS` order, the
    base labels on every sample."""

    def __init__(self, base):
        self._base = base
        self._families = collections.OrderedDict()

    def _family(self, name, labels):
        kind, extra, doc = METRICS[name]     # KeyError: not a known name
        if set(labels) != set(extra):
            raise ValueError('metric %s takes labels %s, got %s'
                             % (name, extra, sorted(labels)))
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = Family(name, kind, doc)
        return fam, dict(self._base, **labels)

    def gauge(self, name, value, **labels):
        if value is None:
            return
        fam, labels = self._family(name, labels)
        fam.samples.append((fam.name, labels, float(value)))

    def counter(self, name, value, **labels):
        fam, labels = self._family(name, labels)
        fam.samples.append((name, labels, float(value or 0)))

    def histogram(self, name, hist, **labels):
        if hist is None:
            return
        fam, labels = self._family(name, labels)
        buckets, total, count = hist.snapshot()
        for bound, acc in buckets:
            fam.samples.append((name + '_bucket', dict(
                labels, le=_number(bound)), float(acc)))
        fam.samples.append((name + '_count', labels, float(count)))
        fam.samples.append((name + '_sum', labels, float(total)))

    def families(self):
        return [f for f in self._families.values() if f.samples]


def _number(value):
    """A sample value or ``le`` as the text format writes it."""
    if value == float('inf'):
        return '+Inf'
    if value == float('-inf'):
        return '-Inf'
    if value != value:
        return 'NaN'
    return repr(float(value))


def _escape_label(value):
    return str(value).replace('\\', r'\\').replace('\n', r'\n').replace(
        '"', r'\"')


def render_text(families):
    """``families`` in the Prometheus text format (version 0.0.4), as
    bytes: what is served when prometheus_client is not installed."""
    lines = []
    for fam in families:
        exported = fam.name + '_total' if fam.kind == 'counter' \
            else fam.name
        doc = fam.documentation.replace('\\', r'\\').replace('\n', r'\n')
        lines.append('# HELP %s %s' % (exported, doc))
        lines.append('# TYPE %s %s' % (exported, fam.kind))
        for name, labels, value in fam.samples:
            text = ','.join('%s="%s"' % (k, _escape_label(v))
                            for k, v in sorted(labels.items()))
            lines.append('%s%s %s' % (name, '{%s}' % text if text else '',
                                      _number(value)))
    return ('\n'.join(lines) + '\n').encode('utf-8') if lines else b''


def _prometheus_client():
    """The prometheus_client module, or None when it is not installed."""
    try:
        import prometheus_client
    except ImportError:
        return None
    return prometheus_client


class _Collector:
    """A prometheus_client collector reading one :class:`Metrics` at
    scrape time."""

    def __init__(self, metrics):
        self._metrics = metrics

    def describe(self):
        # Nothing to describe up front: registering must not collect (and
        # the names are ours alone, in a registry of their own).
        return []

    def collect(self):
        from prometheus_client import core
        for fam in self._metrics.families():
            metric = core.Metric(fam.name, fam.documentation, fam.kind)
            for name, labels, value in fam.samples:
                metric.add_sample(name, labels, value)
            yield metric


class Metrics:
    """The metrics of one coordinator (``coordinator.metrics``). Built by
    the coordinator on first use; from then on the lock and session hooks
    observe. Thread-safe; reading never blocks on etcd.

    :param coord: the :class:`~hacluster.coordinator.Coordinator`.
    :param claims: its :class:`~hacluster.claims.ClaimBook`.
    :param recovery: its :class:`~hacluster.recovery.RecoveryManager`.
    :param leader_view: its :class:`~hacluster.election.LeaderView`.
    """

    def __init__(self, coord, claims, recovery, leader_view):
        self._coord = coord
        self._claims = claims
        self._recovery = recovery
        self._leader_view = leader_view
        self._lock = threading.Lock()
        self._registry = None
        self._exporters = []
        self.lock_wait = Histogram(LOCK_WAIT_BUCKETS)
        self.lock_hold = Histogram(LOCK_HOLD_BUCKETS)
        self.renewal = Histogram(RENEWAL_BUCKETS)
        #: acquisitions that gave up, since metrics were enabled
        self.lock_timeouts = 0
        registry = coord.lock_registry
        registry.observe_wait = self._observe_wait
        registry.observe_hold = self.lock_hold.observe
        coord.session.observe_renewal = self.renewal.observe

    def _observe_wait(self, acquired, waited):
        if acquired:
            self.lock_wait.observe(waited)
        else:
            self.lock_timeouts += 1

    # -- collecting ------------------------------------------------------

    def families(self):
        """Every metric's current samples, as :class:`Family` objects (in
        :data:`METRICS` order; those without samples left out). Local
        state only, no request."""
        from hacluster.periodic import stats as _stats
        from hacluster.version import __version__

        coord = self._coord
        session = coord.session
        out = _Families({'cluster': coord.cluster, 'node': coord.node})
        running = coord.running
        out.gauge('hacluster_member_up', int(running and session.valid()))
        out.gauge('hacluster_member_info', 1, member_id=coord.member_id,
                  version=__version__)
        out.gauge('hacluster_members', len(coord.live_members())
                  if running else 0)
        out.gauge('hacluster_is_leader', int(bool(coord.is_leader)))
        leader = self._leader_view.current() if running else None
        out.gauge('hacluster_leader_term', leader['term'] if leader else 0)
        out.counter('hacluster_leader_changes_total', coord.leader_changes)

        out.counter('hacluster_sessions_started_total', session.epoch)
        out.counter('hacluster_session_renewals_total', session.renewals)
        out.counter('hacluster_session_renewal_failures_total',
                    session.renew_failures)
        out.counter('hacluster_session_losses_total', session.losses)
        out.histogram('hacluster_session_renewal_seconds', self.renewal)
        out.gauge('hacluster_session_since_renewal_seconds',
                  session.since_renewal())
        out.gauge('hacluster_session_time_left_seconds', session.time_left())

        locks = coord.lock_registry
        prefix = coord.layout.locks
        out.gauge('hacluster_locks_held', sum(
            1 for key, lock in locks.items()
            if key.startswith(prefix) and lock.held))
        out.histogram('hacluster_lock_wait_seconds', self.lock_wait)
        out.histogram('hacluster_lock_hold_seconds', self.lock_hold)
        out.counter('hacluster_lock_acquire_timeouts_total',
                    self.lock_timeouts)
        out.counter('hacluster_locks_lost_total', locks.lost_count)

        out.gauge('hacluster_claims_open', self._claims.open_count)
        out.counter('hacluster_claims_opened_total', self._claims.opened)
        out.counter('hacluster_claims_late_total', self._claims.late_results)
        out.counter('hacluster_claims_recovered_total',
                    self._recovery.recovered)
        out.counter('hacluster_claims_recovery_failures_total',
                    self._recovery.failures)
        out.gauge('hacluster_recoveries_running',
                  self._recovery.recovering_count)

        for name, state in sorted(_stats.states_of(coord.member_id).items()):
            self._task(out, name, state)
        return out.families()

    @staticmethod
    def _task(out, name, state):
        mode = state.spec.mode
        counts = state.stats.snapshot()
        out.counter('hacluster_task_runs_total', counts.get('runs'),
                    task=name, mode=mode)
        out.counter('hacluster_task_skips_total', counts.get('skips'),
                    task=name, mode=mode)
        out.counter('hacluster_task_failures_total', counts.get('failures'),
                    task=name, mode=mode)
        out.gauge('hacluster_task_last_duration_seconds',
                  counts.get('last_duration'), task=name, mode=mode)
        out.gauge('hacluster_task_last_run_timestamp_seconds',
                  counts.get('last_run_at'), task=name, mode=mode)
        out.gauge('hacluster_task_paused', int(bool(state.paused)),
                  task=name, mode=mode)
        if mode != 'fanout':
            return
        out.counter('hacluster_fanout_cycles_total', counts.get('cycles'),
                    task=name)
        out.histogram('hacluster_fanout_cycle_seconds',
                      state.stats.cycle_seconds, task=name)
        for member, n in sorted(state.stats.last_cycle_items.items()):
            out.gauge('hacluster_fanout_cycle_items', n, task=name,
                      member=member)
        out.counter('hacluster_fanout_items_handled_total',
                    counts.get('items_handled'), task=name)
        out.counter('hacluster_fanout_item_failures_total',
                    counts.get('item_failures'), task=name)
        out.counter('hacluster_fanout_items_redispatched_total',
                    counts.get('redispatched'), task=name)

    @property
    def registry(self):
        """A prometheus_client ``CollectorRegistry`` of this coordinator's
        metrics alone (made on first use).

        :raises ConfigurationError: prometheus_client is not installed.
        """
        with self._lock:
            if self._registry is None:
                if _prometheus_client() is None:
                    raise exceptions.ConfigurationError(
                        'prometheus_client is not installed (pip install '
                        'prometheus-client)')
                from prometheus_client import registry as _registry
                reg = _registry.CollectorRegistry(auto_describe=False)
                reg.register(_Collector(self))
                self._registry = reg
            return self._registry

    def render(self):
        """The metrics in the Prometheus text format (bytes):
        prometheus_client's ``generate_latest`` when it is installed, else
        :func:`render_text`. Local state only, no request."""
        if _prometheus_client() is not None:
            from prometheus_client import exposition
            return exposition.generate_latest(self.registry)
        return render_text(self.families())

    # -- exporting -------------------------------------------------------

    def serve(self, host='127.0.0.1', port=0):
        """Serve ``/metrics`` over HTTP on ``host``:``port`` (0: a free
        port; see ``.port``) in a thread of its own, until :meth:`stop` or
        the coordinator's stop. Returns the :class:`MetricsServer`.

        :raises HAClusterError: the address cannot be listened on (in use,
            not an address of this machine); the message names it.
        """
        server = MetricsServer(self, host, port)
        with self._lock:
            self._exporters.append(server)
        return server

    def write_textfile(self, path):
        """Write the metrics to ``path`` atomically (a temporary file in
        the same directory, renamed over it): node_exporter's textfile
        collector never reads half a file.

        :raises OSError: the directory cannot be written.
        """
        data = self.render()
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, '.%s.%d.%d.tmp' % (
            os.path.basename(path), os.getpid(), threading.get_ident()))
        try:
            with open(tmp, 'wb') as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def start_textfile(self, path, interval=15.0):
        """Write the metrics to ``path`` now and every ``interval`` seconds
        (and once more at :meth:`stop`), in a thread of its own. Returns
        the :class:`TextfileWriter`.

        :raises OSError: the first write failed (the directory is missing
            or not writable); nothing is left running then.
        """
        writer = TextfileWriter(self, path, interval)
        with self._lock:
            self._exporters.append(writer)
        return writer

    def stop(self):
        """Stop every endpoint and file writer started here (a writer
        writes once more first). Blocks for at most a second or so each;
        idempotent."""
        with self._lock:
            exporters, self._exporters = self._exporters, []
        for exporter in exporters:
            try:
                exporter.stop()
            except Exception:
                LOG.exception('hacluster: stopping %r', exporter)


class MetricsServer:
    """An HTTP endpoint serving one :class:`Metrics` at ``/metrics`` (and
    ``/``). Started when built. Attributes ``host``, ``port`` (the one
    listened on), ``url``.

    :raises HAClusterError: the address cannot be listened on.
    """

    def __init__(self, metrics, host, port):
        # The module from sys.modules, never the ``server`` attribute of the
        # ``http`` package: importing eventlet.green.BaseHTTPServer (eventlet
        # .wsgi does; manila imports it) re-imports http.server with green
        # sockets and locks and leaves that copy as ``http.server``. In a
        # process that is not monkey-patched (manila-share, a test run) its
        # server then waited in eventlet's hub for ever: scrapes timed out
        # and stop() hung.
        http_server = importlib.import_module('http.server')

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split('?', 1)[0] not in ('/metrics', '/'):
                    self.send_error(404, 'only /metrics is served here')
                    return
                try:
                    body = metrics.render()
                except Exception:
                    LOG.exception('hacluster: collecting metrics')
                    self.send_error(500, 'collecting metrics failed')
                    return
                self.send_response(200)
                self.send_header('Content-Type', CONTENT_TYPE)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                # a scrape every 15 s must not fill manila's log
                LOG.debug('hacluster metrics: ' + fmt, *args)

        class Server(http_server.ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ':' in host \
                else socket.AF_INET

        try:
            self._server = Server((host, int(port)), Handler)
        except (OSError, OverflowError, ValueError) as exc:
            raise exceptions.HAClusterError(
                'cannot serve metrics on %s:%s: %s' % (
                    host, port, getattr(exc, 'strerror', None) or exc),
                cause=exc) from exc
        self.host = host
        self.port = self._server.server_address[1]
        self.url = 'http://%s:%d/metrics' % (
            '[%s]' % host if ':' in host else host, self.port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={'poll_interval': 0.5},
            daemon=True, name='hacluster-metrics-%d' % self.port)
        self._thread.start()
        LOG.info('hacluster: metrics of %s/%s served at %s',
                 metrics._coord.cluster, metrics._coord.node, self.url)

    def __repr__(self):
        return '<MetricsServer %s>' % self.url

    def stop(self):
        """Stop serving and close the socket. Blocks for up to half a
        second (the server's poll); idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


class TextfileWriter:
    """Writes one :class:`Metrics` to a file every ``interval`` seconds,
    for node_exporter's textfile collector (the file name must end in
    ``.prom``). The first write happens in the constructor.

    :raises OSError: the first write failed.
    :raises ConfigurationError: ``interval`` is not a positive number.
    """

    def __init__(self, metrics, path, interval=15.0):
        if isinstance(interval, bool) or \
                not isinstance(interval, (int, float)) or interval <= 0:
            raise exceptions.ConfigurationError(
                'metrics textfile interval must be a positive number of '
                'seconds, got %r' % (interval,))
        self._metrics = metrics
        self.path = path
        self.interval = float(interval)
        self._stop = threading.Event()
        metrics.write_textfile(path)
        self._thread = threading.Thread(
            target=self._run, daemon=True, name='hacluster-metrics-file')
        self._thread.start()

    def __repr__(self):
        return '<TextfileWriter %s every %gs>' % (self.path, self.interval)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self):
        try:
            self._metrics.write_textfile(self.path)
        except Exception as exc:
            # keep trying: a full disk or a removed directory may come back
            LOG.warning('hacluster: cannot write metrics to %s: %s',
                        self.path, exc)

    def stop(self):
        """Stop the writer after one last write (a stopped coordinator
        shows ``hacluster_member_up 0``). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self._write()


def _metrics_of(coord):
    metrics = getattr(coord, 'metrics', None)
    if metrics is None:
        raise exceptions.ConfigurationError(
            'metrics are exported by etcd coordinators only (%r is in '
            'single-node mode)' % (coord,))
    return metrics


def serve(coord, host='127.0.0.1', port=0):
    """Serve the metrics of ``coord`` over HTTP: ``coord.metrics.serve``.

    :raises ConfigurationError: ``coord`` is a single-node coordinator.
    :raises HAClusterError: the address cannot be listened on.
    """
    return _metrics_of(coord).serve(host, port)


def write_textfile(coord, path):
    """Write the metrics of ``coord`` to ``path`` once, atomically.

    :raises ConfigurationError: ``coord`` is a single-node coordinator.
    :raises OSError: the file cannot be written.
    """
    _metrics_of(coord).write_textfile(path)


def start_from_conf(coord, conf):
    """Start what ``[hacluster] metrics_port`` and ``metrics_textfile``
    ask for (nothing by default). Returns the exporters started.

    Monitoring must not take the service down: an endpoint that cannot
    listen or a file that cannot be written is logged as an error, not
    raised.

    :raises ConfigurationError: an option is invalid (the message names
        it; the HA share manager checks them at construction already).
    """
    from hacluster import opts as _opts

    settings = _opts.metrics_settings(conf)
    if not settings.port and not settings.textfile:
        return []
    if getattr(coord, 'single_node', False):
        LOG.warning('hacluster: [hacluster] metrics_port/metrics_textfile '
                    'are ignored in single-node mode')
        return []
    started = []
    if settings.port:
        try:
            started.append(coord.metrics.serve(settings.host, settings.port))
        except exceptions.HAClusterError as exc:
            LOG.error('hacluster: [hacluster] metrics_port = %d: %s; metrics '
                      'are not served', settings.port, exc)
    if settings.textfile:
        try:
            started.append(coord.metrics.start_textfile(
                settings.textfile, settings.textfile_interval))
        except OSError as exc:
            LOG.error('hacluster: [hacluster] metrics_textfile = %s: %s; '
                      'metrics are not written', settings.textfile, exc)
    return started
