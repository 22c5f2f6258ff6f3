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

"""Process supervision shared by the private test servers.

Holds :func:`free_port`, :class:`ServerStartError`, the registry of live
servers (closed at interpreter exit or by :func:`close_all`),
:func:`stop_on_sigterm`, :class:`_Child` with its ``/proc`` helpers, and
:class:`ManagedServer`, the one lifecycle (stop, kill, pause, resume,
restart, close, ``with``) of the servers in :mod:`hacluster.testing.etcd`,
:mod:`~hacluster.testing.rabbitmq` and :mod:`~hacluster.testing.postgres`.

Every server

* listens on 127.0.0.1 only, on ports picked with :func:`free_port` (never
  the well-known 2379/2380/5672/4369/25672), retrying with new ports up to
  three times when a port turns out to be taken by the time the server binds
  it (only for ports it picked itself);
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
"""

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

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


def log_tail(path, lines=LOG_TAIL_LINES, width=400):
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


def _read_text(path, offset=0):
    """Text of a file from byte ``offset`` on; '' if it cannot be read."""
    try:
        with open(path, 'rb') as f:
            f.seek(offset)
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def _file_size(path):
    """Size of a file in bytes; 0 if it does not exist (yet)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tails(paths):
    return '\n'.join('--- last %d lines of %s ---\n%s' % (LOG_TAIL_LINES, p,
                                                          log_tail(p))
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


def group_members(pgid):
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

    def _wait_info(self):
        """The leader's exit info (None while it runs), without reaping it;
        ``False`` when it was reaped behind our back (e.g. a SIGCHLD
        handler: the PID may be reused now, so it is never signalled
        again)."""
        try:
            return os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            self.reaped = True
            return False

    def exited(self):
        """True once the leader has exited (it is not reaped here)."""
        if self.reaped:
            return True
        return self._wait_info() is not None

    def exit_status(self):
        """Exit code (negative signal number) once exited, else None."""
        if self.reaped:
            return self.popen.returncode
        info = self._wait_info()
        if not info:
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

    def stop(self, timeout, sig=None):
        """Send ``sig`` (default SIGTERM) to the leader, SIGKILL the group
        after ``timeout`` s, reap.

        Blocks until the whole process group is gone (at most ``timeout``
        plus a few seconds).  Idempotent.
        """
        if self.reaped:
            return
        sig = signal.SIGTERM if sig is None else sig
        if not self.exited():
            self.signal(sig, group=False)
            self.signal(signal.SIGCONT)  # in case it was paused
            if not self.wait_exited(timeout):
                LOG.warning('pid %d did not exit %.0f s after %s; killing '
                            'its process group', self.pid, timeout,
                            signal.Signals(sig).name)
        self.kill()

    def kill(self):
        """SIGKILL the whole process group, wait for it to go, reap."""
        if self.reaped:
            return
        self.remember_descendants()
        # Other group members first, while the leader lives: a wrapper
        # script (rabbitmq-server) waiting for its child then reaps it and
        # exits by itself, instead of leaving it a zombie for PID 1.
        others = [pid for pid in group_members(self.pid) if pid != self.pid]
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
        while group_members(self.pid):
            self.signal(signal.SIGKILL)
            if time.monotonic() >= deadline:
                LOG.error('process group %d survives SIGKILL: %s', self.pid,
                          group_members(self.pid))
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


def wait_for(predicate, timeout, what, every=0.05, error=AssertionError):
    """Poll ``predicate`` every ``every`` seconds until it returns something
    true, and return that; after ``timeout`` seconds raise ``error``
    saying what was awaited. Blocks the calling thread."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error('timed out after %.0f s waiting for %s'
                        % (timeout, what))
        time.sleep(every)


# --------------------------------------------------------------------------
# lifecycle


class StartCloseContext:
    """``with x:`` starts ``x`` unless it is running; leaving closes it.

    For classes with a ``running`` attribute and ``start()``/``close()``
    methods; ``__enter__`` blocks and raises like ``start()``.
    """

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()


class ManagedServer(StartCloseContext):
    """The lifecycle of a server run as one supervised process group.

    Implements, once for every server, ``pid``/``running``, :meth:`stop`,
    :meth:`kill`, :meth:`pause`, :meth:`resume`, :meth:`restart`,
    :meth:`close` and the ``with`` block, for the main process
    ``self._child`` (a :class:`_Child`); registers the server to be closed
    at exit.  A subclass sets ``START_TIMEOUT``, ``STOP_TIMEOUT`` (grace
    before SIGKILL) and ``STOP_SIGNAL`` (clean shutdown, SIGTERM by
    default); calls ``super().__init__(temp_dir, auto_ports)`` (the
    directory :meth:`close` removes, or None; the port attributes it picked
    with :func:`free_port`, the only ones a start may re-pick); implements
    ``start(timeout)`` -- under ``self._lock``, :meth:`_spawn_child`, block
    until ready, on a port clash retry if :meth:`_new_ports_for_retry` says
    so; and may override :meth:`_stop_helpers` and :meth:`_before_restart`.
    """

    START_TIMEOUT = 60.0
    STOP_TIMEOUT = 10.0
    STOP_SIGNAL = signal.SIGTERM

    def __init__(self, temp_dir=None, auto_ports=()):
        self.start_duration = None
        self._temp_dir = temp_dir
        self._auto_ports = frozenset(auto_ports)
        self._child = None
        self._closed = False
        self._lock = threading.RLock()
        _register(self)

    def _live_child(self):
        """The main process' :class:`_Child` while it exists, else None."""
        child = self._child
        return child if child is not None and not child.exited() else None

    @property
    def pid(self):
        """PID of the running main process, or None."""
        child = self._live_child()
        return None if child is None else child.pid

    @property
    def running(self):
        """True while the main process exists (also while paused)."""
        return self._live_child() is not None

    def _check_startable(self):
        """Raise RuntimeError if closed or already running."""
        if self._closed:
            raise RuntimeError('%r is closed' % self)
        if self.running:
            raise RuntimeError('%r is already running' % self)

    def _spawn_child(self, argv, env, cwd, log_path, user=None):
        """Start the main process; does not wait for it to be ready.

        A crashed predecessor is killed and reaped first (blocks until its
        group is gone).  Raises what :class:`subprocess.Popen` raises.
        """
        if self._child is not None:
            self._child.kill()  # reap a crashed predecessor
        self._child = _Child(argv, env, cwd, log_path, user=user)
        return self._child

    def _new_ports_for_retry(self, attempt, clashed):
        """Whether a start that failed on a port clash is to be retried.

        True if attempt number ``attempt`` (from 1) was not the last and
        some of the ``clashed`` port attributes were picked by this server
        itself: those get new ports from :func:`free_port`.  Never blocks.
        """
        ports = [name for name in clashed if name in self._auto_ports]
        if not ports or attempt >= START_ATTEMPTS:
            return False
        LOG.warning('%r: port clash, retrying with new %s', self,
                    ', '.join(ports))
        for name in ports:
            setattr(self, name, free_port())
        return True

    def _stop_helpers(self):
        """Stop helper processes (by :meth:`stop` only); blocks."""

    def _before_restart(self):
        """Adjust the configuration after a stop, before a restart."""

    def _stop_child(self):
        """Stop the main process: ``STOP_SIGNAL``, SIGKILL after
        ``STOP_TIMEOUT`` s.  Blocks until its group is gone and reaped."""
        if self._child is not None:
            self._child.stop(self.STOP_TIMEOUT, self.STOP_SIGNAL)
            LOG.debug('stopped %r', self)

    def stop(self):
        """Stop the server: ``STOP_SIGNAL`` to its main process, SIGKILL to
        the whole process group after ``STOP_TIMEOUT`` s; then its helper
        processes, if any.

        Blocks until every one of its processes is gone and reaped.  Keeps
        the data (see :meth:`restart`).  Idempotent; never raises for a
        process that is already gone.
        """
        with self._lock:
            self._stop_child()
            self._stop_helpers()

    def kill(self):
        """SIGKILL the main process group now (simulated crash); blocks
        until it is gone.  Helper processes keep running, as after a real
        crash; :meth:`stop` or :meth:`close` stops them."""
        with self._lock:
            if self._child is not None:
                self._child.kill()

    def _signal_group(self, sig):
        child = self._live_child()
        if child is not None:
            child.signal(sig)

    def pause(self):
        """SIGSTOP the main process group: it keeps its sockets but
        answers nothing.  Does not block; no-op unless running."""
        self._signal_group(signal.SIGSTOP)

    def resume(self):
        """SIGCONT a paused main process group.  Does not block."""
        self._signal_group(signal.SIGCONT)

    def restart(self, timeout=None):
        """Stop the main process if running and start it again.

        Same ports and data: clients keep their address, so there is no
        retry on new ports; helper processes still running are reused.
        Blocks like ``start()`` (``timeout`` defaults to ``START_TIMEOUT``)
        and raises what it raises (:class:`ServerStartError`; a closed
        server refuses).
        """
        if timeout is None:
            timeout = self.START_TIMEOUT
        with self._lock:
            self._stop_child()
            self._before_restart()
            auto, self._auto_ports = self._auto_ports, frozenset()
            try:
                return self.start(timeout)
            finally:
                self._auto_ports = auto

    def close(self):
        """Stop the server (see :meth:`stop`), remove its temporary
        directory.  Blocks.  Idempotent; it cannot be started again."""
        with self._lock:
            self.stop()
            self._closed = True
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            _unregister(self)


# (the names the rig used when it was one module)
_log_tail = log_tail
_group_members = group_members

# --------------------------------------------------------------------------
# scripted workers


class LineWorker:
    """A Python script run as a subprocess whose stdout lines are collected
    (in a reader thread) and whose stderr goes to a temporary file, so a
    chatty worker can never block on a full pipe.

    :param script: path of the script; ``args`` follow it (as strings).

    ``lines`` grows as lines arrive; :meth:`wait_line` blocks until one
    starts with a prefix. Thread-safe.
    """

    def __init__(self, script, *args, env=None):
        self._stderr = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen(
            [sys.executable, '-W', 'ignore', script] + [str(a) for a in args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, env=env)
        self.lines = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip('\n'))
                self._cond.notify_all()

    def wait_line(self, prefix, timeout=10.0):
        """The first line starting with ``prefix``; blocks up to
        ``timeout`` s for it. Raises AssertionError (with the lines and the
        stderr tail) if it does not come, or the process exits first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and \
                        not any(ln.startswith(prefix) for ln in self.lines):
                    if left > 0:
                        self._cond.wait(0.2)   # drain what is buffered
                        if any(ln.startswith(prefix) for ln in self.lines):
                            continue
                    raise AssertionError(
                        'no %r line from worker (rc=%s); got %r; stderr: %s'
                        % (prefix, self.proc.poll(), self.lines,
                           self.stderr_tail()))
                self._cond.wait(left)

    def stderr_tail(self, size=2000):
        """The last ``size`` characters the worker wrote to stderr."""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            return self._stderr.read()[-size:]
        except ValueError:      # closed
            return ''

    def send(self, line):
        """Write ``line`` to the worker's stdin."""
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()

    def close(self):
        """SIGKILL the worker if it runs; reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()
