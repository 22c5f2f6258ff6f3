"""Private etcd and RabbitMQ servers for tests.

Every server started here

* listens on 127.0.0.1 only, on ports picked with :func:`free_port` (never
  the well-known 2379/2380/5672/4369/25672), retrying with new ports up to
  three times when a port turns out to be taken by the time the server binds
  it (only for ports this module picked itself);
* keeps its data and logs in its own :func:`tempfile.mkdtemp` directory,
  removed by ``close()``;
* runs in a new session (``start_new_session=True``), so its process group is
  exactly the processes it started, and is stopped by signalling that group
  by PID -- never by process name;
* is stopped at interpreter exit (:mod:`atexit`) if the test forgot to or
  crashed before it could.

The process group leader is never reaped before the rest of its group is
gone, so its PID (which is the process group ID) cannot be reused by an
unrelated process while this module may still signal the group.

Binaries are looked up on ``PATH`` (``etcd``, ``epmd``) and in
``/usr/lib/rabbitmq/bin``; the environment variables ``HACLUSTER_ETCD``,
``HACLUSTER_EPMD`` and ``HACLUSTER_RABBITMQ_BIN_DIR`` override them.
"""

import atexit
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

LOG = logging.getLogger(__name__)

LOOPBACK = '127.0.0.1'
START_ATTEMPTS = 3
LOG_TAIL_LINES = 30

# Ports handed out recently by free_port(); the kernel may offer the same
# ephemeral port twice in a row, and a cluster needs six distinct ones.
_RECENT_PORTS = []
_RECENT_PORTS_MAX = 256
_PORTS_LOCK = threading.Lock()

# Servers that may still own processes or temporary data; closed at exit.
_LIVE = set()
_LIVE_LOCK = threading.Lock()


class ServerStartError(RuntimeError):
    """A server did not start or did not become ready in time.

    The message names the server and includes the tail (last ~30 lines) of
    its log file(s).
    """


def free_port():
    """Return a TCP port on 127.0.0.1 that is free right now.

    Binds a socket to ``('127.0.0.1', 0)``, reads the port the kernel chose
    and closes the socket.  The port is not reserved: something else may take
    it before the caller binds it, which is why the servers here retry their
    start on a port clash.  Ports returned recently by this process are not
    returned again.  Does not block.
    """
    with _PORTS_LOCK:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = sock.getsockname()[1]
            if port not in _RECENT_PORTS:
                break
        _RECENT_PORTS.append(port)
        del _RECENT_PORTS[:-_RECENT_PORTS_MAX]
        return port


# --------------------------------------------------------------------------
# helpers


def _register(server):
    with _LIVE_LOCK:
        _LIVE.add(server)


def _unregister(server):
    with _LIVE_LOCK:
        _LIVE.discard(server)


@atexit.register
def _close_all():
    """Close every server still registered (interpreter exit)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        try:
            server.close()
        except Exception:  # pragma: no cover - best effort at exit
            LOG.exception('could not close %r at exit', server)


def close_all():
    """Close every server of this process that is not closed yet.

    Blocks until they are stopped (about 1 s per running broker).  Runs at
    interpreter exit; tests normally close their servers themselves.
    """
    _close_all()


def _sigterm_to_keyboard_interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one kills
    raise KeyboardInterrupt('SIGTERM')


def stop_on_sigterm():
    """Make SIGTERM unwind the main thread like Ctrl-C.

    A process killed by SIGTERM's default action runs neither ``finally``
    blocks nor :mod:`atexit` hooks, so its servers would outlive it (e.g. a
    test run under ``timeout``).  With this, SIGTERM raises
    KeyboardInterrupt in the main thread: fixtures tear down and the exit
    hook closes what is left.  A second SIGTERM kills as usual.  Only
    installs itself from the main thread and over the default handler;
    returns True if installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _sigterm_to_keyboard_interrupt)
    return True


def _which(env_var, name, fallbacks=()):
    path = os.environ.get(env_var)
    if path:
        return path
    path = shutil.which(name)
    if path:
        return path
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServerStartError('%s not found on PATH (set %s or run '
                           'tools/bootstrap)' % (name, env_var))


def _log_tail(path, lines=LOG_TAIL_LINES, width=400):
    """Last ``lines`` lines of a log file (each cut to ``width`` chars)."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError as exc:
        return '(no log: %s)' % exc
    text = data.decode('utf-8', 'replace').splitlines()[-lines:]
    return '\n'.join(line if len(line) <= width else line[:width] + '...'
                     for line in text)


def _read_text(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def _tails(paths):
    return '\n'.join('--- last %d lines of %s ---\n%s' % (LOG_TAIL_LINES, p,
                                                          _log_tail(p))
                     for p in paths)


def _clean_env(drop_prefixes, keep=()):
    env = {k: v for k, v in os.environ.items()
           if k in keep or not k.startswith(tuple(drop_prefixes))}
    env.setdefault('LANG', 'C.UTF-8')
    return env


def _primary_group(user):
    import pwd
    return pwd.getpwnam(user).pw_gid


def _proc_table():
    """{pid: (state, ppid, pgrp, starttime)} of all processes (procfs)."""
    table = {}
    try:
        entries = os.listdir('/proc')
    except OSError:  # pragma: no cover - no procfs
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, 'rb') as f:
                stat = f.read().decode('ascii', 'replace')
        except OSError:
            continue
        # After the ")" closing the command name: state(3) ppid(4)
        # pgrp(5) ... starttime(22).
        fields = stat.rpartition(')')[2].split()
        if len(fields) >= 20:
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[2]),
                                 fields[19])
    return table


def _group_members(pgid):
    """PIDs of live (non-zombie) processes in process group ``pgid``."""
    return [pid for pid, (state, _, pgrp, _) in _proc_table().items()
            if pgrp == pgid and state not in 'ZX']


def _descendants(pid):
    """{pid: starttime} of the live descendants of ``pid``.

    Includes those that left the process group (Erlang's erl_child_setup
    and inet_gethost call setsid()).
    """
    table = _proc_table()
    children = {}
    for child, (state, ppid, _, _) in table.items():
        if state not in 'ZX':
            children.setdefault(ppid, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found[child] = table[child][3]
                todo.append(child)
    return found


def _still_alive(snapshot):
    """PIDs from a {pid: starttime} snapshot that still run (same start)."""
    table = _proc_table()
    return [pid for pid, start in snapshot.items()
            if pid in table and table[pid][3] == start
            and table[pid][0] not in 'ZX']


class _Child:
    """One process started in its own session, plus everything it forks.

    The leader is not reaped until :meth:`reap`, so ``pid`` stays reserved
    (and the process group ID valid) while the group is signalled.
    """

    def __init__(self, argv, env, cwd, log_path, user=None):
        self.argv = list(argv)
        self.log_path = log_path
        with open(log_path, 'ab') as log:
            log.write(('\n=== %s start: %s\n' % (
                time.strftime('%Y-%m-%d %H:%M:%S'),
                ' '.join(self.argv))).encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=cwd, close_fds=True,
                start_new_session=True, user=user, group=(
                    None if user is None else _primary_group(user)))
        self.pid = self.popen.pid
        self.reaped = False
        # Descendants seen so far, {pid: starttime}; see _reap_descendants.
        self._known = {}

    @property
    def returncode(self):
        return self.popen.returncode

    def exited(self):
        """True once the leader has exited (it is not reaped here)."""
        if self.reaped:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Reaped behind our back (e.g. a SIGCHLD handler); the PID may
            # be reused now, so never signal it again.
            self.reaped = True
            return True
        return info is not None

    def exit_status(self):
        """Exit code (negative signal number) once exited, else None."""
        if self.reaped:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            self.reaped = True
            return None
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status

    def remember_descendants(self):
        """Note the current descendants, to make sure they die with us."""
        if not self.reaped and not self.exited():
            self._known.update(_descendants(self.pid))

    def signal(self, sig, group=True):
        """Send ``sig`` to the process group (or only the leader)."""
        if self.reaped:
            return
        self.remember_descendants()
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait_exited(self, timeout):
        """Block up to ``timeout`` s for the leader to exit; return exited."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout):
        """SIGTERM the leader, SIGKILL the group after ``timeout`` s, reap.

        Blocks until the whole process group is gone (at most ``timeout``
        plus a few seconds).  Idempotent.
        """
        if self.reaped:
            return
        if not self.exited():
            self.signal(signal.SIGTERM, group=False)
            self.signal(signal.SIGCONT)  # in case it was paused
            if not self.wait_exited(timeout):
                LOG.warning('pid %d did not exit %.0f s after SIGTERM; '
                            'killing its process group', self.pid, timeout)
        self.kill()

    def kill(self):
        """SIGKILL the whole process group, wait for it to go, reap."""
        if self.reaped:
            return
        self.remember_descendants()
        # Other group members first, while the leader lives: a wrapper
        # script (rabbitmq-server) waiting for its child then reaps it and
        # exits by itself, instead of leaving it a zombie for PID 1.
        others = [pid for pid in _group_members(self.pid) if pid != self.pid]
        if others and not self.exited():
            for pid in others:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.wait_exited(1.0)
        self.signal(signal.SIGKILL)
        self.wait_exited(10)
        # Stragglers (children of the leader in the same group).  The
        # leader is a zombie at most, so its PID still names our group.
        deadline = time.monotonic() + 10
        while _group_members(self.pid):
            self.signal(signal.SIGKILL)
            if time.monotonic() >= deadline:
                LOG.error('process group %d survives SIGKILL: %s', self.pid,
                          _group_members(self.pid))
                break
            time.sleep(0.02)
        self._reap_descendants()
        self.reap()

    def _reap_descendants(self):
        """Make sure descendants that left our group are gone too.

        They normally exit on their own once their parent is gone; give
        them 2 s, then SIGKILL them by PID (checked against the start time
        recorded when they were seen, so a reused PID is never hit).
        """
        deadline = time.monotonic() + 2
        while True:
            alive = _still_alive(self._known)
            if not alive:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        LOG.warning('killing leftover descendants of pid %d: %s', self.pid,
                    alive)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while _still_alive(self._known) and time.monotonic() < deadline:
            time.sleep(0.02)

    def reap(self):
        if not self.reaped:
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                LOG.error('could not reap pid %d', self.pid)
                return
            self.reaped = True


def _http_json(url, data=None, timeout=1.0):
    req = urllib.request.Request(url, data=data,
                                 method='POST' if data else 'GET')
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode('utf-8'))


# --------------------------------------------------------------------------
# etcd


class _Server:
    """``with server:`` starts it unless running; leaving closes it."""

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()


class EtcdServer(_Server):
    """One etcd member on 127.0.0.1.

    With no arguments this is a single-member cluster on two free ports with
    its data in a new temporary directory.  ``data_dir`` given by the caller
    is created if needed but never removed.  ``initial_cluster`` (an
    ``--initial-cluster`` string) makes it a member of a larger cluster; see
    :class:`EtcdCluster`.  ``extra_args`` are appended to the etcd command
    line.

    Attributes: ``start_duration`` (seconds the last successful start took),
    ``log_path``.
    """

    STOP_TIMEOUT = 5.0

    def __init__(self, name='etcd0', data_dir=None, client_port=None,
                 peer_port=None, initial_cluster=None,
                 initial_cluster_state='new', cluster_token=None,
                 extra_args=()):
        self.name = name
        self._owns_dir = data_dir is None
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix='hacluster-etcd-%s-' % name)
        else:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.data_dir = data_dir
        self.log_path = os.path.join(data_dir, 'etcd.log')
        self._auto_ports = (client_port is None and peer_port is None
                            and initial_cluster is None)
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster
        self.initial_cluster_state = initial_cluster_state
        self.cluster_token = (cluster_token or
                              'hacluster-%s' % secrets.token_hex(6))
        self.extra_args = tuple(extra_args)
        self.start_duration = None
        self._child = None
        self._log_offset = 0
        self._spawned_at = None
        self._closed = False
        self._lock = threading.RLock()
        _register(self)

    def __repr__(self):
        return '<EtcdServer %s %s pid=%s>' % (self.name, self.endpoint,
                                              self.pid)

    # -- addresses

    @property
    def endpoint(self):
        """``'127.0.0.1:PORT'`` of the client port."""
        return '%s:%d' % (LOOPBACK, self.client_port)

    @property
    def url(self):
        """tooz-style backend URL, ``'etcd3+http://127.0.0.1:PORT'``."""
        return 'etcd3+http://%s' % self.endpoint

    @property
    def client_url(self):
        return 'http://%s' % self.endpoint

    @property
    def peer_url(self):
        return 'http://%s:%d' % (LOOPBACK, self.peer_port)

    @property
    def etcd_data_dir(self):
        """The directory passed to ``etcd --data-dir``."""
        return os.path.join(self.data_dir, 'etcd')

    # -- state

    @property
    def pid(self):
        """PID of the running etcd process, or None."""
        child = self._child
        if child is None or child.exited():
            return None
        return child.pid

    @property
    def running(self):
        """True while the etcd process exists (also while paused)."""
        return self.pid is not None

    def is_healthy(self, timeout=1.0):
        """True if ``GET /health`` answers ``{"health": "true"}``.

        Blocks at most ``timeout`` seconds; never raises for network errors.
        """
        try:
            body = _http_json(self.client_url + '/health', timeout=timeout)
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get('health')).lower() == 'true'

    def _answers_as_itself(self, timeout=1.0):
        """True if the member answering on our client port is this one.

        Guards against a foreign etcd that grabbed our port: the answering
        member's peer URLs must be ours.
        """
        try:
            body = _http_json(self.client_url + '/v3/cluster/member/list',
                              data=b'{}', timeout=timeout)
        except (OSError, ValueError, urllib.error.URLError):
            return False
        me = body.get('header', {}).get('member_id')
        for member in body.get('members', []):
            if member.get('ID') == me:
                return self.peer_url in member.get('peerURLs', [])
        return False

    # -- lifecycle

    def _argv(self):
        initial_cluster = (self.initial_cluster or
                           '%s=%s' % (self.name, self.peer_url))
        return [
            _which('HACLUSTER_ETCD', 'etcd'),
            '--name', self.name,
            '--data-dir', self.etcd_data_dir,
            '--listen-client-urls', self.client_url,
            '--advertise-client-urls', self.client_url,
            '--listen-peer-urls', self.peer_url,
            '--initial-advertise-peer-urls', self.peer_url,
            '--initial-cluster', initial_cluster,
            '--initial-cluster-state', self.initial_cluster_state,
            '--initial-cluster-token', self.cluster_token,
            '--logger', 'zap',
            '--log-outputs', 'stderr',
        ] + list(self.extra_args)

    def _spawn(self):
        """Start the etcd process without waiting for it.  Does not block."""
        with self._lock:
            if self._closed:
                raise RuntimeError('%r is closed' % self)
            if self.running:
                raise RuntimeError('%r is already running' % self)
            if self._child is not None:
                self._child.kill()  # reap a crashed predecessor
            env = _clean_env(['ETCD_'], keep=('ETCD_UNSUPPORTED_ARCH',))
            self._log_offset = (os.path.getsize(self.log_path)
                                if os.path.exists(self.log_path) else 0)
            self._child = _Child(self._argv(), env, self.data_dir,
                                 self.log_path)
            self._spawned_at = time.monotonic()
            LOG.debug('spawned %r', self)

    def _port_clash(self):
        """True if the last spawned etcd failed to bind a port."""
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(self._log_offset)
                text = f.read().decode('utf-8', 'replace')
        except OSError:
            return False
        return 'address already in use' in text

    def _check_alive(self):
        """Raise ServerStartError if the process has exited."""
        child = self._child
        if child is None or child.exited():
            status = child.exit_status() if child else None
            raise ServerStartError(
                'etcd %s (%s) exited during start with status %s\n%s' % (
                    self.name, self.endpoint, status,
                    _tails([self.log_path])))

    def _ready(self):
        """One readiness probe; raises ServerStartError if etcd died."""
        self._check_alive()
        if self.is_healthy() and self._answers_as_itself():
            self._check_alive()
            self.start_duration = time.monotonic() - self._spawned_at
            return True
        return False

    def _start_error(self, timeout):
        return ServerStartError(
            'etcd %s (%s) not healthy after %.1f s\n%s' % (
                self.name, self.endpoint, timeout, _tails([self.log_path])))

    def start(self, timeout=15.0):
        """Start etcd and block until it reports healthy; return self.

        Polls ``GET http://127.0.0.1:PORT/health`` for up to ``timeout``
        seconds per attempt.  If etcd exits because a port picked by
        :func:`free_port` was taken meanwhile, it is retried with new ports
        (3 attempts).  Raises :class:`ServerStartError` (with the log tail)
        if etcd exits or is not healthy in time; the process is then killed.
        Raises RuntimeError if already running or closed.

        A member of a cluster being formed is only healthy once a quorum
        runs: start those with :class:`EtcdCluster`.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            self._spawn()
            try:
                self.wait_ready(timeout)
                LOG.info('etcd %s ready on %s in %.2f s', self.name,
                         self.endpoint, self.start_duration)
                return self
            except ServerStartError:
                self.stop()
                if (self._auto_ports and self._port_clash()
                        and attempt < START_ATTEMPTS):
                    LOG.warning('etcd %s: port clash on %s, retrying with '
                                'new ports', self.name, self.endpoint)
                    self.client_port = free_port()
                    self.peer_port = free_port()
                    continue
                raise
        raise AssertionError('unreachable')  # pragma: no cover

    def wait_ready(self, timeout=15.0):
        """Block until healthy (see :meth:`start`); raise ServerStartError."""
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() >= deadline:
                raise self._start_error(timeout)
            time.sleep(0.05)
        return self

    def stop(self):
        """Stop etcd: SIGTERM, up to 5 s grace, then SIGKILL.

        Blocks until the process is gone and reaped.  Keeps the data
        directory (see :meth:`restart`).  Idempotent; never raises for a
        process that is already gone.
        """
        with self._lock:
            if self._child is not None:
                self._child.stop(self.STOP_TIMEOUT)
                LOG.debug('stopped etcd %s', self.name)

    def kill(self):
        """SIGKILL etcd now (simulated crash); blocks until it is gone."""
        with self._lock:
            if self._child is not None:
                self._child.kill()

    def pause(self):
        """SIGSTOP etcd: it keeps its sockets but answers nothing."""
        if self._child is not None and not self._child.exited():
            self._child.signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT a paused etcd."""
        if self._child is not None and not self._child.exited():
            self._child.signal(signal.SIGCONT)

    def restart(self, timeout=15.0):
        """Stop (if running) and start again on the same ports and data.

        A member of a multi-member cluster restarts with
        ``--initial-cluster-state existing``.  Blocks like :meth:`start`;
        no port retry (the ports are part of the cluster's configuration).
        Raises :class:`ServerStartError`.
        """
        self.stop()
        if self.initial_cluster and ',' in self.initial_cluster:
            self.initial_cluster_state = 'existing'
        self._spawn()
        try:
            return self.wait_ready(timeout)
        except ServerStartError:
            self.stop()
            raise

    def close(self):
        """Stop etcd and remove its temporary data directory.  Idempotent."""
        with self._lock:
            self.stop()
            self._closed = True
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            _unregister(self)


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 forming one cluster.

    All data lives under one temporary directory (``data_dir``), one
    sub-directory per member.  ``members`` is the list of
    :class:`EtcdServer`; kill/pause/restart them individually.
    """

    def __init__(self, size=3, name_prefix='etcd'):
        if size < 1:
            raise ValueError('size must be >= 1')
        self.size = size
        self.name_prefix = name_prefix
        self.data_dir = tempfile.mkdtemp(prefix='hacluster-etcd-cluster-')
        self.members = []
        self.start_duration = None
        self._generation = 0
        self._closed = False
        self._build()

    def __repr__(self):
        return '<EtcdCluster %s>' % ','.join(self.endpoints)

    def _build(self):
        for member in self.members:
            member.close()
        self._generation += 1
        token = 'hacluster-cluster-%s' % secrets.token_hex(6)
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        names = ['%s%d' % (self.name_prefix, i) for i in range(self.size)]
        initial = ','.join('%s=http://%s:%d' % (name, LOOPBACK, peer)
                           for name, (_, peer) in zip(names, ports))
        self.members = [
            EtcdServer(name=name,
                       data_dir=os.path.join(self.data_dir, '%s-%d' % (
                           name, self._generation)),
                       client_port=client, peer_port=peer,
                       initial_cluster=initial, cluster_token=token)
            for name, (client, peer) in zip(names, ports)]

    @property
    def endpoints(self):
        """``['127.0.0.1:P1', '127.0.0.1:P2', ...]`` (client ports)."""
        return [m.endpoint for m in self.members]

    @property
    def url(self):
        """``'etcd3+http://127.0.0.1:P1,127.0.0.1:P2,...'``."""
        return 'etcd3+http://' + ','.join(self.endpoints)

    def start(self, timeout=20.0):
        """Start all members at once and block until every one is healthy.

        Returns self.  If a member exits because one of the ports picked
        for the cluster was taken meanwhile, the whole cluster is rebuilt on
        new ports (3 attempts).  Raises :class:`ServerStartError` (with the
        failing member's log tail); all members are stopped then.
        """
        if self._closed:
            raise RuntimeError('%r is closed' % self)
        t0 = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            for member in self.members:
                member._spawn()
            try:
                self.wait_healthy(timeout=timeout)
                self.start_duration = time.monotonic() - t0
                LOG.info('etcd cluster %s ready in %.2f s', self.url,
                         self.start_duration)
                return self
            except ServerStartError:
                clash = any(m._port_clash() for m in self.members)
                for member in self.members:
                    member.stop()
                if clash and attempt < START_ATTEMPTS:
                    LOG.warning('etcd cluster: port clash, retrying on new '
                                'ports')
                    self._build()
                    continue
                raise
        raise AssertionError('unreachable')  # pragma: no cover

    def wait_healthy(self, members=None, timeout=20.0):
        """Block until each of ``members`` (default: all) is healthy.

        Raises :class:`ServerStartError` if one exits or the timeout passes.
        """
        pending = list(self.members if members is None else members)
        deadline = time.monotonic() + timeout
        while pending:
            pending = [m for m in pending if not m._ready()]
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise pending[0]._start_error(timeout)
            time.sleep(0.05)
        return self

    def leader(self, timeout=1.0):
        """The member that currently is the raft leader, or None.

        Asks each running member's ``/v3/maintenance/status``; blocks at
        most ``timeout`` s per member.
        """
        for member in self.members:
            if not member.running:
                continue
            try:
                status = _http_json(member.client_url +
                                    '/v3/maintenance/status', data=b'{}',
                                    timeout=timeout)
            except (OSError, ValueError, urllib.error.URLError):
                continue
            if status.get('leader') and \
                    status.get('leader') == status.get('header', {}).get(
                        'member_id'):
                return member
        return None

    def stop(self):
        """Stop all members (data kept).  Blocks; idempotent."""
        for member in self.members:
            member.stop()

    def close(self):
        """Stop all members and remove all their data.  Idempotent."""
        for member in self.members:
            member.close()
        self._closed = True
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        if not any(m.running for m in self.members):
            self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()


# --------------------------------------------------------------------------
# RabbitMQ


class RabbitMQServer(_Server):
    """A private RabbitMQ broker (no plugins) on 127.0.0.1.

    Runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly (not the
    ``/usr/sbin`` wrapper, which switches user and log directory) with a
    random node name, its own ``HOME`` (hence its own Erlang cookie), its own
    epmd on a free port and everything under a temporary directory.  The
    user ``guest``/``guest`` may connect (``loopback_users = none``).

    epmd is started by this class as a foreground child process so that its
    PID is known; Erlang's automatic epmd start is disabled
    (``-start_epmd false``) so no stray epmd daemon is ever forked.

    Attributes: ``nodename``, ``data_dir``, ``start_duration``.
    """

    STOP_TIMEOUT = 20.0

    def __init__(self, port=None, dist_port=None, epmd_port=None,
                 nodename=None):
        self.data_dir = tempfile.mkdtemp(prefix='hacluster-rabbitmq-')
        self._auto = {'port': port is None, 'dist_port': dist_port is None,
                      'epmd_port': epmd_port is None}
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.epmd_port = epmd_port or free_port()
        self.nodename = nodename or 'hacluster-%s@localhost' % (
            secrets.token_hex(4))
        self.start_duration = None
        self.log_path = os.path.join(self.data_dir, 'log', 'rabbit.log')
        self.console_log_path = os.path.join(self.data_dir, 'console.log')
        self.epmd_log_path = os.path.join(self.data_dir, 'epmd.log')
        self.pid_file = os.path.join(self.data_dir, 'rabbitmq.pid')
        self._child = None
        self._epmd = None
        self._beam_pid = None
        self._log_offset = 0
        self._closed = False
        self._lock = threading.RLock()
        _register(self)
        os.makedirs(os.path.join(self.data_dir, 'log'), exist_ok=True)
        os.makedirs(os.path.join(self.data_dir, 'mnesia'), exist_ok=True)

    def __repr__(self):
        return '<RabbitMQServer %s 127.0.0.1:%d pid=%s>' % (
            self.nodename, self.port, self.pid)

    # -- addresses and state

    @property
    def transport_url(self):
        """``'rabbit://guest:guest@127.0.0.1:PORT/'`` for oslo.messaging."""
        return 'rabbit://guest:guest@%s:%d/' % (LOOPBACK, self.port)

    @property
    def running(self):
        """True while the broker's process group leader exists."""
        return self._child is not None and not self._child.exited()

    @property
    def wrapper_pid(self):
        """PID of the ``rabbitmq-server`` shell script (group leader)."""
        return self._child.pid if self.running else None

    @property
    def pid(self):
        """PID of the broker's Erlang VM (beam.smp) while running, or None.

        Before the VM has written its pid file this is the wrapper's PID.
        """
        if not self.running:
            return None
        return self._beam_pid or self._read_beam_pid() or self._child.pid

    @property
    def epmd_pid(self):
        """PID of this broker's epmd while it runs, or None."""
        epmd = self._epmd
        if epmd is None or epmd.exited():
            return None
        return epmd.pid

    def _read_beam_pid(self):
        try:
            pid = int(_read_text(self.pid_file).strip() or 0)
        except ValueError:
            return None
        # Only trust it if it is in our process group.
        if pid and self._child is not None and pid in _group_members(
                self._child.pid):
            self._beam_pid = pid
            return pid
        return None

    # -- environment

    def _bin(self, name):
        bin_dir = os.environ.get('HACLUSTER_RABBITMQ_BIN_DIR',
                                 '/usr/lib/rabbitmq/bin')
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            raise ServerStartError('%s not found (set HACLUSTER_RABBITMQ_'
                                   'BIN_DIR or run tools/bootstrap)' % path)
        return path

    def _env(self):
        """Environment for the broker and for rabbitmqctl against it."""
        d = self.data_dir
        env = _clean_env(['RABBITMQ_', 'ERL_', 'CONF_ENV_FILE'])
        erl_args = '-kernel inet_dist_use_interface {127,0,0,1} ' \
                   '-start_epmd false'
        env.update({
            'HOME': d,
            'RABBITMQ_NODENAME': self.nodename,
            'RABBITMQ_USE_LONGNAME': 'false',
            'RABBITMQ_NODE_IP_ADDRESS': LOOPBACK,
            'RABBITMQ_NODE_PORT': str(self.port),
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            'RABBITMQ_CONF_ENV_FILE': os.path.join(d, 'rabbitmq-env.conf'),
            'RABBITMQ_CONFIG_FILE': os.path.join(d, 'rabbitmq.conf'),
            'RABBITMQ_ADVANCED_CONFIG_FILE': os.path.join(d,
                                                          'advanced.config'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(d,
                                                          'enabled_plugins'),
            'RABBITMQ_MNESIA_BASE': os.path.join(d, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(d, 'log'),
            'RABBITMQ_LOGS': self.log_path,
            'RABBITMQ_PID_FILE': self.pid_file,
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': erl_args,
            'RABBITMQ_CTL_ERL_ARGS': erl_args,
            'ERL_EPMD_ADDRESS': LOOPBACK,
            'ERL_EPMD_PORT': str(self.epmd_port),
            # Read by every erl started with this environment, including
            # the "epmd starter" RabbitMQ runs if epmd goes away.
            'ERL_FLAGS': '-start_epmd false',
        })
        return env

    def _write_config(self):
        d = self.data_dir
        with open(os.path.join(d, 'rabbitmq.conf'), 'w') as f:
            f.write('listeners.tcp.1 = %s:%d\n' % (LOOPBACK, self.port))
            f.write('loopback_users = none\n')
            # Tests must not be blocked by a nearly full disk.
            f.write('disk_free_limit.absolute = 1MB\n')
        with open(os.path.join(d, 'enabled_plugins'), 'w') as f:
            f.write('[].\n')
        open(os.path.join(d, 'rabbitmq-env.conf'), 'a').close()

    def rabbitmqctl(self, *args, timeout=60.0, check=True):
        """Run ``rabbitmqctl -n NODE ARGS`` against this broker.

        Uses the broker's environment (HOME/cookie, epmd port) and a fresh
        free port for the CLI's own distribution listener.  Blocks up to
        ``timeout`` s; returns the CompletedProcess (text output).  Raises
        subprocess.CalledProcessError if ``check`` and it fails,
        subprocess.TimeoutExpired on timeout.
        """
        env = self._env()
        cli_port = free_port()
        env['RABBITMQ_CTL_DIST_PORT_MIN'] = str(cli_port)
        env['RABBITMQ_CTL_DIST_PORT_MAX'] = str(cli_port)
        argv = [self._bin('rabbitmqctl'), '-n', self.nodename] + list(args)
        # Own session, so a timeout can kill the CLI's whole group.
        proc = subprocess.Popen(argv, env=env, cwd=self.data_dir,
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leader not reaped yet
            except ProcessLookupError:
                pass
            proc.communicate()
            raise
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    # -- lifecycle

    def _ensure_epmd(self, timeout):
        """Start this broker's epmd unless it runs; block until it listens.

        Raises ServerStartError if epmd exits (port taken) or does not
        listen within ``timeout`` s.
        """
        if self.epmd_pid is not None:
            return
        if self._epmd is not None:
            self._epmd.kill()
        argv = [_which('HACLUSTER_EPMD', 'epmd',
                       fallbacks=self._epmd_fallbacks()),
                '-address', LOOPBACK, '-port', str(self.epmd_port)]
        self._epmd = _Child(argv, self._env(), self.data_dir,
                            self.epmd_log_path)
        deadline = time.monotonic() + timeout
        while True:
            if self._epmd.exited():
                raise ServerStartError(
                    'epmd on 127.0.0.1:%d exited with status %s\n%s' % (
                        self.epmd_port, self._epmd.exit_status(),
                        _tails([self.epmd_log_path])))
            try:
                socket.create_connection((LOOPBACK, self.epmd_port),
                                         timeout=0.5).close()
            except OSError:
                if time.monotonic() >= deadline:
                    raise ServerStartError(
                        'epmd not listening on 127.0.0.1:%d after %.1f s\n%s'
                        % (self.epmd_port, timeout,
                           _tails([self.epmd_log_path])))
                time.sleep(0.02)
                continue
            # Listening - and still ours (not someone else on the port)?
            time.sleep(0.05)
            if not self._epmd.exited():
                return

    @staticmethod
    def _epmd_fallbacks():
        import glob
        return sorted(glob.glob('/usr/lib/erlang/erts-*/bin/epmd'))

    def _stop_epmd(self):
        if self._epmd is not None:
            self._epmd.stop(5.0)

    def _spawn_broker(self):
        self._write_config()
        self._beam_pid = None
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass
        self._log_offset = os.path.getsize(self.log_path) \
            if os.path.exists(self.log_path) else 0
        self._child = _Child([self._bin('rabbitmq-server')], self._env(),
                             self.data_dir, self.console_log_path)

    def _new_log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(self._log_offset)
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def _logs(self):
        return [self.console_log_path, self.log_path, self.epmd_log_path]

    def _amqp_connects(self):
        """True if guest can open an AMQP connection; None without amqp."""
        try:
            import amqp
        except ImportError:  # pragma: no cover - amqp comes with kombu
            return None
        conn = amqp.Connection(host='%s:%d' % (LOOPBACK, self.port),
                               userid='guest', password='guest',
                               connect_timeout=2)
        try:
            conn.connect()
            return True
        except Exception:
            return False
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        marker = 'started TCP listener on %s:%d' % (LOOPBACK, self.port)
        while True:
            if self._child.exited():
                raise ServerStartError(
                    'RabbitMQ %s exited during start with status %s\n%s' % (
                        self.nodename, self._child.exit_status(),
                        _tails(self._logs())))
            # The marker comes from our own node's log: the listener is
            # ours, not a foreign process' on the same port.
            if marker in self._new_log_text():
                ok = self._amqp_connects()
                if ok is None:
                    ok = self.rabbitmqctl(
                        'await_startup', '--timeout',
                        str(max(1, int(deadline - time.monotonic()))),
                        check=False).returncode == 0
                if ok and not self._child.exited():
                    self._read_beam_pid()
                    self._child.remember_descendants()
                    return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    'RabbitMQ %s not ready on 127.0.0.1:%d after %.1f s\n%s'
                    % (self.nodename, self.port, timeout,
                       _tails(self._logs())))
            time.sleep(0.1)

    def _port_clash(self):
        text = (self._new_log_text() + _log_tail(self.console_log_path, 200))
        return 'eaddrinuse' in text.lower() or \
            'address already in use' in text.lower()

    def start(self, timeout=60.0):
        """Start epmd and the broker; block until it accepts AMQP logins.

        Ready means: the node's own log says it listens on our port and
        ``guest`` can open an AMQP connection (6-9 s here).  On a port clash
        with ports picked by :func:`free_port`, retries on new ports (3
        attempts).  Raises :class:`ServerStartError` (with log tails) if the
        broker exits or is not ready within ``timeout`` s per attempt; its
        processes are then stopped.  Raises RuntimeError if already running
        or closed.  Returns self.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError('%r is closed' % self)
            if self.running:
                raise RuntimeError('%r is already running' % self)
            for attempt in range(1, START_ATTEMPTS + 1):
                t0 = time.monotonic()
                try:
                    self._ensure_epmd(timeout=10.0)
                except ServerStartError:
                    self._stop_epmd()
                    if self._auto['epmd_port'] and attempt < START_ATTEMPTS:
                        LOG.warning('epmd port %d taken, retrying',
                                    self.epmd_port)
                        self.epmd_port = free_port()
                        continue
                    raise
                if self._child is not None:
                    self._child.kill()  # reap a crashed predecessor
                self._spawn_broker()
                try:
                    self._wait_ready(timeout)
                except ServerStartError:
                    clash = self._port_clash()
                    self._child.stop(self.STOP_TIMEOUT)
                    retry = [k for k in ('port', 'dist_port') if self._auto[k]]
                    if clash and retry and attempt < START_ATTEMPTS:
                        LOG.warning('RabbitMQ: port clash, retrying with new '
                                    'ports')
                        for key in retry:
                            setattr(self, key, free_port())
                        continue
                    self._stop_epmd()
                    raise
                self.start_duration = time.monotonic() - t0
                LOG.info('RabbitMQ %s ready on 127.0.0.1:%d in %.2f s',
                         self.nodename, self.port, self.start_duration)
                return self
        raise AssertionError('unreachable')  # pragma: no cover

    def _stop_broker(self):
        if self._child is not None:
            # SIGTERM to the wrapper script: it forwards SIGTERM to the VM
            # and waits for a clean shutdown.
            self._child.stop(self.STOP_TIMEOUT)

    def stop(self):
        """Stop the broker (SIGTERM, then SIGKILL after 20 s) and its epmd.

        Blocks until every process of both groups is gone.  Keeps the data
        (:meth:`restart` reuses it).  Idempotent.
        """
        with self._lock:
            self._stop_broker()
            self._stop_epmd()

    def kill(self):
        """SIGKILL the broker's whole process group now (simulated crash).

        epmd keeps running, as it would after a real broker crash; stop()
        or close() stops it.  Blocks until the broker's processes are gone.
        """
        with self._lock:
            if self._child is not None:
                self._child.kill()

    def pause(self):
        """SIGSTOP the broker's process group."""
        if self.running:
            self._child.signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT the broker's process group."""
        if self.running:
            self._child.signal(signal.SIGCONT)

    def restart(self, timeout=60.0):
        """Stop the broker if running and start it again.

        Same node name, ports and data (clients keep their URL, so there is
        no retry on new ports); epmd is reused if running.  Blocks like
        :meth:`start`.  Raises :class:`ServerStartError`.
        """
        with self._lock:
            self._stop_broker()
            auto = self._auto
            self._auto = {k: False for k in auto}
            try:
                return self.start(timeout)
            finally:
                self._auto = auto

    def close(self):
        """Stop broker and epmd, remove the temporary directory.

        Idempotent.
        """
        with self._lock:
            self.stop()
            self._closed = True
            shutil.rmtree(self.data_dir, ignore_errors=True)
            _unregister(self)


# --------------------------------------------------------------------------
# PostgreSQL


class PostgresServer(_Server):
    """A private PostgreSQL server on 127.0.0.1 (trust authentication).

    ``initdb`` makes a new cluster in a temporary directory; the server
    listens on a free port and keeps its Unix socket in that directory (never
    ``/var/run/postgresql``).  PostgreSQL refuses to run as root: when this
    process is root, the server runs as the ``postgres`` system user (made
    by the Debian package), which then owns the directory.

    Binaries come from ``HACLUSTER_PG_BIN_DIR``, else the newest
    ``/usr/lib/postgresql/*/bin``, else ``PATH``.

    Attributes: ``port``, ``data_dir``, ``start_duration``.
    """

    STOP_TIMEOUT = 10.0
    SUPERUSER = 'postgres'

    def __init__(self, port=None):
        self.base_dir = tempfile.mkdtemp(prefix='hacluster-pg-')
        self.data_dir = os.path.join(self.base_dir, 'data')
        self.log_path = os.path.join(self.base_dir, 'postgres.log')
        self._auto_port = port is None
        self.port = port or free_port()
        self.start_duration = None
        self._child = None
        self._log_offset = 0
        self._closed = False
        self._lock = threading.RLock()
        self.run_as = 'postgres' if os.geteuid() == 0 else None
        _register(self)

    def __repr__(self):
        return '<PostgresServer 127.0.0.1:%d pid=%s>' % (self.port, self.pid)

    @property
    def pid(self):
        if self._child is None or self._child.exited():
            return None
        return self._child.pid

    @property
    def running(self):
        return self.pid is not None

    def url(self, database, driver='postgresql+psycopg2'):
        """SQLAlchemy URL of ``database`` on this server."""
        return '%s://%s@%s:%d/%s' % (driver, self.SUPERUSER, LOOPBACK,
                                     self.port, database)

    @staticmethod
    def _bin(name):
        bin_dir = os.environ.get('HACLUSTER_PG_BIN_DIR')
        if not bin_dir:
            import glob
            found = sorted(glob.glob('/usr/lib/postgresql/*/bin/' + name),
                           key=lambda p: int(p.split('/')[4])
                           if p.split('/')[4].isdigit() else 0)
            if found:
                return found[-1]
            path = shutil.which(name)
            if path:
                return path
            raise ServerStartError(
                '%s not found (install postgresql: run tools/bootstrap, or '
                'set HACLUSTER_PG_BIN_DIR)' % name)
        return os.path.join(bin_dir, name)

    def _run(self, argv, timeout=60):
        out = subprocess.run(argv, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=timeout, user=self.run_as,
                             group=None if self.run_as is None
                             else _primary_group(self.run_as),
                             env=_clean_env(['PG']))
        if out.returncode != 0:
            raise ServerStartError('%s failed (exit %d): %s' % (
                ' '.join(argv), out.returncode,
                out.stdout.decode(errors='replace')[-2000:]))
        return out.stdout.decode(errors='replace')

    def _initdb(self):
        if self.run_as is not None:
            import pwd
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
        self._run([self._bin('initdb'), '-D', self.data_dir, '-U',
                   self.SUPERUSER, '--auth=trust', '--no-sync', '-E', 'UTF8',
                   '--locale=C'], timeout=120)

    def _argv(self):
        return [self._bin('postgres'), '-D', self.data_dir,
                '-c', 'listen_addresses=%s' % LOOPBACK,
                '-c', 'port=%d' % self.port,
                '-c', 'unix_socket_directories=%s' % self.base_dir,
                # test data: durability is not worth the fsyncs here
                '-c', 'fsync=off', '-c', 'synchronous_commit=off',
                '-c', 'full_page_writes=off',
                '-c', 'max_connections=300']

    def _ready(self):
        try:
            with socket.create_connection((LOOPBACK, self.port), 0.5):
                pass
        except OSError:
            return False
        try:
            self.psql('SELECT 1', database='postgres', timeout=5)
        except (ServerStartError, subprocess.TimeoutExpired):
            return False
        return True

    def psql(self, sql, database='postgres', timeout=60):
        """Run ``sql`` with psql as the superuser; returns its output.

        :raises ServerStartError: psql failed (its output is in the
            message).
        """
        return self._run([self._bin('psql'), '-X', '-q', '-A', '-t',
                          '-v', 'ON_ERROR_STOP=1', '-h', LOOPBACK,
                          '-p', str(self.port), '-U', self.SUPERUSER,
                          '-d', database, '-c', sql], timeout=timeout)

    def start(self, timeout=60.0):
        """initdb (first time), start, wait until it answers. Blocks.

        :raises ServerStartError: with the tail of the server's log.
        """
        with self._lock:
            if self._closed:
                raise ServerStartError('%r is closed' % self)
            if self.running:
                return self
            began = time.monotonic()
            if not os.path.exists(os.path.join(self.data_dir, 'PG_VERSION')):
                self._initdb()
            for attempt in range(START_ATTEMPTS):
                self._child = _Child(self._argv(), _clean_env(['PG']),
                                     self.base_dir, self.log_path,
                                     user=self.run_as)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if self._child.exited():
                        break
                    if self._ready():
                        self.start_duration = time.monotonic() - began
                        return self
                    time.sleep(0.1)
                tail = _log_tail(self.log_path)
                self._child.kill()
                clash = 'already in use' in tail or 'could not bind' in tail
                if clash and self._auto_port and attempt + 1 < START_ATTEMPTS:
                    self.port = free_port()
                    continue
                raise ServerStartError(
                    'PostgreSQL on 127.0.0.1:%d did not start within %.0f s; '
                    'log tail:\n%s' % (self.port, timeout, tail))

    def create_database(self, name, template=None):
        """CREATE DATABASE ``name`` (optionally a copy of ``template``)."""
        _check_ident(name)
        sql = 'CREATE DATABASE "%s"' % name
        if template:
            _check_ident(template)
            sql += ' TEMPLATE "%s"' % template
        self.psql(sql)

    def drop_database(self, name):
        _check_ident(name)
        self.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    def stop(self):
        """Fast shutdown (SIGINT), SIGKILL after STOP_TIMEOUT. Blocks."""
        with self._lock:
            if self._child is None:
                return
            child, self._child = self._child, None
            if not child.exited():
                child.signal(signal.SIGINT, group=False)
                child.wait_exited(self.STOP_TIMEOUT)
            child.kill()

    def close(self):
        """Stop and remove the data directory. Idempotent."""
        with self._lock:
            self.stop()
            self._closed = True
            shutil.rmtree(self.base_dir, ignore_errors=True)
            _unregister(self)


def _check_ident(name):
    import re
    if not re.match(r'^[A-Za-z_][A-Za-z0-9_]{0,62}$', name):
        raise ValueError('not a plain SQL identifier: %r' % (name,))
