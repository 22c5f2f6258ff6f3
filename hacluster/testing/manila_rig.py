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

"""Real manila-share processes on one backend, for tests and the demo.

:class:`ManilaCluster` writes one manila.conf per node and runs manila's own
``manila-share`` command for each (a cotyledon master and its worker, in a
process group of their own), all with one manila ``host``, one database
(PostgreSQL, :class:`~hacluster.testing.servers.PostgresServer`), one
RabbitMQ and one etcd -- every server private and on free loopback ports.
Shares are created and inspected with :mod:`hacluster.testing.manila_client`
(the database records manila-api writes, the RPC cast the scheduler sends).

The schema is made once per PostgreSQL server with ``manila-manage db
sync`` into a template database (:func:`make_template`, ~5 s); each cluster
gets a copy of it (``CREATE DATABASE ... TEMPLATE``, ~0.1 s).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from hacluster.testing import servers

HA_MANAGER = 'hacluster.manila.manager.HAShareManager'
PLAIN_MANAGER = 'manila.share.manager.ShareManager'
HA_DRIVER = 'hacluster.testing.manila_driver.HADummyDriver'
PLAIN_DRIVER = 'manila.tests.share.drivers.dummy.DummyDriver'
TEMPLATE_DB = 'manila_template'
BACKEND = 'dummy'
READY_MARK = 'hacluster: manila-share ready'
#: manila's ``graceful_shutdown_timeout`` on every node (oslo.service's
#: alarm kills a worker whose stop takes longer): :meth:`Node.stop` checks
#: that a node stops cleanly within it.
GRACEFUL_SHUTDOWN_TIMEOUT = 10
#: What cotyledon logs (worker and master) when that alarm ends a stop:
#: the exit status is 0 all the same, so the log is what tells.
ALARM_MARK = 'Graceful shutdown timeout'


class UncleanStop(AssertionError):
    """A node did not stop cleanly on SIGTERM (see :meth:`Node.stop`)."""


def _bin(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        raise servers.ServerStartError(
            '%s not found next to %s: install manila in this environment '
            '(tools/bootstrap)' % (name, sys.executable))
    return path


def make_template(pg, name=TEMPLATE_DB):
    """Create manila's schema in database ``name`` on ``pg`` (once).
    Blocks ~5 s. Returns ``name``."""
    exists = pg.psql("SELECT 1 FROM pg_database WHERE datname = '%s'"
                     % name).strip()
    if exists:
        return name
    pg.create_database(name)
    workdir = tempfile.mkdtemp(prefix='hacluster-dbsync-')
    try:
        conf = os.path.join(workdir, 'manila.conf')
        with open(conf, 'w') as f:
            f.write('[DEFAULT]\nstate_path = %s\n[database]\n'
                    'connection = %s\n' % (workdir, pg.url(name)))
        out = subprocess.run([_bin('manila-manage'), '--config-file', conf,
                              'db', 'sync'], capture_output=True, text=True,
                             timeout=300)
        if out.returncode != 0:
            pg.drop_database(name)
            raise servers.ServerStartError(
                'manila-manage db sync failed (exit %d): %s'
                % (out.returncode, out.stderr[-3000:]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return name


def _ini(sections):
    lines = []
    for section, values in sections.items():
        lines.append('[%s]' % section)
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, dict):
                value = ','.join('%s:%s' % kv for kv in value.items())
            elif isinstance(value, (list, tuple)):
                value = ','.join(str(v) for v in value)
            lines.append('%s = %s' % (key, value))
        lines.append('')
    return '\n'.join(lines)


class Node:
    """One manila-share process (master + worker) of a cluster."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.dir = os.path.join(cluster.workdir, name)
        os.makedirs(os.path.join(self.dir, 'state'), exist_ok=True)
        os.makedirs(os.path.join(self.dir, 'locks'), exist_ok=True)
        self.conf_path = os.path.join(self.dir, 'manila.conf')
        self.log_path = os.path.join(self.dir, 'manila-share.log')
        self.child = None
        self._log_offset = 0
        #: environment for this node only (over the cluster's extra_env),
        #: e.g. a PYTHONPATH that runs another version of hacluster
        self.env = {}

    def __repr__(self):
        return '<manila-share %s pid=%s>' % (self.name, self.pid)

    @property
    def pid(self):
        if self.child is None or self.child.exited():
            return None
        return self.child.pid

    @property
    def running(self):
        return self.pid is not None

    def worker_pids(self):
        return sorted(p for p in servers.group_members(self.child.pid)
                      if p != self.child.pid) if self.running else []

    def start(self):
        """Start manila-share (does not wait; see :meth:`wait_ready`)."""
        if self.running:
            return
        try:
            self._log_offset = os.path.getsize(self.log_path)
        except OSError:
            self._log_offset = 0
        env = dict(os.environ)
        env['HACLUSTER_DRIVER_EVENTS'] = self.cluster.events_path
        env.update(self.cluster.extra_env)
        env.update(self.env)
        self.child = servers._Child(
            [_bin('manila-share'), '--config-file', self.conf_path], env,
            self.dir, self.log_path)

    def log_since_start(self):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(self._log_offset)
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def wait_ready(self, timeout=90.0):
        """Block until this node logs that it serves RPC (manila's own
        manager: that its driver is initialized).

        :raises ServerStartError: it exited or did not get ready in time
            (with the tail of its log).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log_since_start()
            if READY_MARK in log or (
                    self.cluster.manager != HA_MANAGER and
                    'Finished initialization of driver' in log):
                if READY_MARK not in log:
                    time.sleep(1)       # manila's RPC server starts next
                return self
            if not self.running:
                break
            time.sleep(0.2)
        raise servers.ServerStartError(
            'manila-share %s did not get ready (running=%s); log tail:\n%s'
            % (self.name, self.running, servers.log_tail(self.log_path)))

    def kill(self):
        """SIGKILL master and worker at once (a node dying). Blocks until
        they are gone."""
        if self.child is not None:
            # The whole group at once: killing the worker first would let
            # the cotyledon master fork a new one before it dies itself.
            self.child.signal(signal.SIGKILL)
            self.child.kill()

    def stop(self, timeout=None, check=True):
        """SIGTERM the master (manila's clean stop) and wait for it to exit;
        SIGKILL the group after ``timeout`` seconds (default: the cluster's
        ``graceful_shutdown_timeout`` plus 5). Blocks until the group is
        gone.

        :returns: seconds from the SIGTERM to the master's exit (None if
            the node was not running).
        :raises UncleanStop: (with ``check``, once the node is gone) it did
            not exit within ``graceful_shutdown_timeout``, exited with a
            status other than 0, or oslo.service's alarm ended the stop --
            with the tail of its log.
        """
        child = self.child
        if child is None or child.reaped:
            return None
        if child.exited():
            child.kill()            # reap (it died on its own: no stop)
            return None
        if timeout is None:
            timeout = self.cluster.graceful_shutdown_timeout + 5
        began = time.monotonic()
        child.signal(signal.SIGTERM, group=False)
        child.signal(signal.SIGCONT)        # in case it was paused
        exited = child.wait_exited(timeout)
        took = time.monotonic() - began
        status = child.exit_status() if exited else None
        child.kill()                # reap, and any straggler of the group
        log = self.log_since_start()
        problems = []
        if not exited:
            problems.append('still running %.0f s after SIGTERM: killed'
                            % timeout)
        elif took > self.cluster.graceful_shutdown_timeout:
            problems.append('exited %.1f s after SIGTERM (limit %g s)'
                            % (took, self.cluster.graceful_shutdown_timeout))
        if exited and status != 0:
            problems.append('exit status %s' % status)
        if ALARM_MARK in log:
            problems.append('ended by oslo.service\'s graceful_shutdown_'
                            'timeout alarm')
        if check and problems:
            raise UncleanStop('manila-share %s did not stop cleanly: %s; log '
                              'tail:\n%s' % (self.name, ', '.join(problems),
                                             servers.log_tail(self.log_path)))
        return took


class ManilaCluster:
    """N manila-share nodes serving one backend.

    :param pg: a started PostgresServer (the template must exist:
        :func:`make_template`).
    :param transport_url: RabbitMQ URL.
    :param backend_url: etcd URL (``etcd3+http://...``); None for manila's
        default single-node mode (``file://``).
    :param nodes: node names.
    :param cluster: hacluster cluster name (default: unique per instance).
    :param periodic_interval: manila's ``periodic_interval`` (seconds), the
        spacing of the stats and share-status polls.
    :param delays: DummyDriver method delays, ``{method: seconds}``.
    :param driver: the share driver class path.
    :param manager: the share manager class path (manila's own
        ``PLAIN_MANAGER`` for baselines).
    :param extra: more config, ``{section: {key: value}}`` for every node.
    :param graceful_shutdown_timeout: manila's (oslo.service's) option on
        every node; :meth:`Node.stop` checks a stop against it.
    """

    def __init__(self, pg, transport_url, backend_url=None,
                 nodes=('node1', 'node2', 'node3'), cluster=None,
                 periodic_interval=2, delays=None, driver=HA_DRIVER,
                 extra=None, extra_env=None, host='hagroup',
                 workdir=None, manager=HA_MANAGER, node_extra=None,
                 graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT):
        self.pg = pg
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self.transport_url = transport_url
        self.backend_url = backend_url
        self.cluster = cluster or 'manila-' + uuid.uuid4().hex[:8]
        self.host = host
        self.backend_host = '%s@%s' % (host, BACKEND)
        self.periodic_interval = periodic_interval
        self.delays = dict(delays or {})
        self.driver = driver
        self.manager = manager
        self.extra = extra or {}
        #: more config for one node: {node: {section: {key: value}}}
        self.node_extra = node_extra or {}
        self._engine = None
        self.extra_env = dict(extra_env or {})
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix='hacluster-manila-')
        os.makedirs(self.workdir, exist_ok=True)
        self.events_path = os.path.join(self.workdir, 'driver-events.jsonl')
        self.database = 'm_' + uuid.uuid4().hex[:12]
        pg.create_database(self.database, template=TEMPLATE_DB)
        self.nodes = {}
        for name in nodes:
            self.add_node(name)
        self.client_conf = os.path.join(self.workdir, 'client.conf')
        with open(self.client_conf, 'w') as f:
            f.write(self._config(None))

    def add_node(self, name):
        node = self.nodes[name] = Node(self, name)
        with open(node.conf_path, 'w') as f:
            f.write(self._config(node))
        return node

    def _config(self, node):
        sections = {
            'DEFAULT': {
                'host': self.host,
                'enabled_share_backends': BACKEND,
                'share_manager': self.manager,
                'transport_url': self.transport_url,
                'state_path': node.dir if node else self.workdir,
                'periodic_interval': self.periodic_interval,
                'periodic_fuzzy_delay': 0,
                'graceful_shutdown_timeout': self.graceful_shutdown_timeout,
                'report_interval': 5,
                'debug': 'false',
                'use_stderr': 'true',
                'default_log_levels': 'amqp=WARN,amqplib=WARN,'
                                      'oslo.messaging=INFO,'
                                      'oslo_messaging=INFO,'
                                      'sqlalchemy=WARN,'
                                      'stevedore=WARN,hacluster=INFO,'
                                      'urllib3=WARN,requests=WARN',
            },
            'oslo_concurrency': {
                'lock_path': os.path.join(node.dir if node else
                                          self.workdir, 'locks')},
            'database': {'connection': self.pg.url(self.database)},
            'coordination': {'backend_url': self.backend_url},
            'hacluster': {'cluster': self.cluster,
                          'node_name': node.name if node else None,
                          'lease_ttl': 3, 'renew_deadline': 2,
                          'renew_interval': 0.5},
            BACKEND: {
                'share_driver': self.driver,
                'share_backend_name': BACKEND,
                'driver_handles_share_servers': 'False',
                'dummy_driver_default_driver_method_delay': 0,
                'dummy_driver_driver_methods_delays': self.delays,
            },
        }
        for section, values in self.extra.items():
            sections.setdefault(section, {}).update(values)
        if node is not None:
            for section, values in self.node_extra.get(node.name,
                                                       {}).items():
                sections.setdefault(section, {}).update(values)
        return _ini(sections)

    # -- processes ------------------------------------------------------------

    def start(self, names=None, timeout=90.0):
        """Start the nodes (all by default) and wait until each serves.
        Blocks (a node takes ~5-10 s to start on 2 cores)."""
        names = list(names or self.nodes)
        for name in names:
            self.nodes[name].start()
        for name in names:
            self.nodes[name].wait_ready(timeout)
        return self

    def kill(self, name):
        self.nodes[name].kill()

    def stop(self, name, timeout=None, check=True):
        """:meth:`Node.stop` of node ``name``: seconds it took to exit.

        :raises UncleanStop: see there."""
        return self.nodes[name].stop(timeout, check=check)

    def close(self):
        """Stop every node (SIGTERM, SIGKILL after graceful_shutdown_timeout
        plus 5 s), drop the database, remove the work directory (kept when
        ``HACLUSTER_KEEP`` is set). Blocks."""
        def stop(node):
            try:
                node.stop(check=False)
            except Exception:
                node.kill()
        # All at once: one after the other, each clean stop (2.5 to 5 s)
        # added up at every test's teardown.
        stoppers = [threading.Thread(target=stop, args=(node,),
                                     name='stop-%s' % name)
                    for name, node in self.nodes.items()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        if self._engine is not None:
            self._engine.dispose()
        try:
            self.pg.drop_database(self.database)
        except Exception:
            pass
        if self._own_workdir and not os.environ.get('HACLUSTER_KEEP'):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- inspecting and driving -----------------------------------------------

    def client(self, *args, timeout=120):
        """Run a :mod:`hacluster.testing.manila_client` command; its JSON.

        :raises RuntimeError: the command failed (its stderr tail)."""
        out = subprocess.run(
            [sys.executable, '-W', 'ignore', '-m',
             'hacluster.testing.manila_client', '--config-file',
             self.client_conf] + [str(a) for a in args],
            capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError('manila_client %s failed (exit %d): %s' % (
                ' '.join(map(str, args)), out.returncode, out.stderr[-3000:]))
        return json.loads(out.stdout.strip().splitlines()[-1])

    def create_shares(self, count, name='hashare'):
        return self.client('create', count, '--name', name)

    def statuses(self):
        """``{instance id: {'status', 'share_id', 'host'}}`` from the DB."""
        return self.client('status')

    def updated_at(self, instance_id):
        """When the instance's database row last changed, as a Unix time
        (manila stores UTC): when a status really changed, not when a
        poll saw it."""
        import datetime
        raw = self.statuses()[instance_id]['updated_at']
        return datetime.datetime.fromisoformat(raw).replace(
            tzinfo=datetime.timezone.utc).timestamp()

    def db_status(self, instance_id):
        """The share instance's status, read from PostgreSQL directly (a
        few milliseconds: for sampling a status while it changes)."""
        import sqlalchemy
        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                self.pg.url(self.database), poolclass=sqlalchemy.pool.NullPool)
        with self._engine.connect() as conn:
            row = conn.execute(sqlalchemy.text(
                'SELECT status FROM share_instances WHERE id = :id'),
                {'id': instance_id}).first()
        return row[0] if row else None

    def leader(self):
        """The leading node's name (``hacluster leader show``), or None."""
        rc, out, _ = self.hacluster('leader', 'show', '-f', 'json')
        return json.loads(out)['node'] if rc == 0 else None

    def wait_statuses(self, instance_ids, final, timeout):
        """Block until every instance's status is in ``final``; returns the
        statuses. :raises AssertionError: at the deadline, with them."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.statuses()
            got = {i: now.get(i, {}).get('status') for i in instance_ids}
            if all(s in final for s in got.values()):
                return got
            if time.monotonic() >= deadline:
                raise AssertionError('after %.0f s not all %s: %s'
                                     % (timeout, final, got))
            time.sleep(0.5)

    def events(self, kind=None, since=None):
        """The driver's event lines (see
        :mod:`hacluster.testing.manila_driver`), oldest first."""
        out = []
        try:
            with open(self.events_path) as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if kind and event['event'] != kind:
                        continue
                    if since is not None and event['t'] < since:
                        continue
                    out.append(event)
        except FileNotFoundError:
            pass
        return out

    def hacluster(self, *args, timeout=60, env=None):
        """Run the ``hacluster`` CLI against this cluster (with ``env``
        over this process's environment: another version's PYTHONPATH
        runs that version's command); ``(exit status, stdout, stderr)``."""
        hbin = os.path.join(os.path.dirname(sys.executable), 'hacluster')
        out = subprocess.run(
            [hbin] + list(args) + ['--config-file', self.client_conf],
            capture_output=True, text=True, timeout=timeout,
            env=dict(os.environ, **(env or {})))
        return out.returncode, out.stdout, out.stderr

    def log_tail(self, name, lines=60):
        return servers.log_tail(self.nodes[name].log_path, lines)

    def signal(self, name, sig=signal.SIGKILL):
        self.nodes[name].child.signal(sig)


class StatusSampler:
    """Samples one share instance's status from the database every 0.1 s
    (in a thread) and keeps every change: ``changes`` is ``[(time,
    status)]``; :meth:`stop` ends the sampling and returns the statuses
    seen, in order."""

    def __init__(self, cluster, instance_id):
        self._cluster = cluster
        self._id = instance_id
        self.changes = []            # (time, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                status = self._cluster.db_status(self._id)
            except Exception:
                status = None
            if status is not None and (not self.changes or
                                       self.changes[-1][1] != status):
                self.changes.append((time.time(), status))
            self._stop.wait(0.1)

    def statuses(self):
        return [s for _, s in self.changes]

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.statuses()
