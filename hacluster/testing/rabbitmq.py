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

"""A private RabbitMQ broker for tests: :class:`RabbitMQServer`.

It listens on 127.0.0.1 only, on free ports, with its own epmd and its data
in a temporary directory; see :mod:`hacluster.testing.process` for what
every private server guarantees.  Binaries are looked up in
``/usr/lib/rabbitmq/bin`` and (``epmd``) on ``PATH``; the environment
variables ``HACLUSTER_RABBITMQ_BIN_DIR`` and ``HACLUSTER_EPMD`` override
them.
"""

import logging
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time

from hacluster.testing import process
from hacluster.testing.process import _Child
from hacluster.testing.process import _clean_env
from hacluster.testing.process import _file_size
from hacluster.testing.process import _read_text
from hacluster.testing.process import _tails
from hacluster.testing.process import _which
from hacluster.testing.process import group_members
from hacluster.testing.process import log_tail
from hacluster.testing.process import LOOPBACK
from hacluster.testing.process import ManagedServer
from hacluster.testing.process import ServerStartError
from hacluster.testing.process import START_ATTEMPTS

LOG = logging.getLogger(__name__)


class RabbitMQServer(ManagedServer):
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

    The lifecycle methods are those of
    :class:`~hacluster.testing.process.ManagedServer`; the main process is
    the ``rabbitmq-server`` wrapper script, epmd is a helper: :meth:`stop`
    sends SIGTERM to the wrapper (it forwards SIGTERM to the VM and waits
    for a clean shutdown), SIGKILLs the broker's group after 20 s, then
    stops epmd; :meth:`kill` leaves epmd running, as a real broker crash
    would, and :meth:`restart` reuses it.
    """

    START_TIMEOUT = 60.0
    STOP_TIMEOUT = 20.0

    def __init__(self, port=None, dist_port=None, epmd_port=None,
                 nodename=None):
        self.data_dir = tempfile.mkdtemp(prefix='hacluster-rabbitmq-')
        given = {'port': port, 'dist_port': dist_port,
                 'epmd_port': epmd_port}
        self.port = port or process.free_port()
        self.dist_port = dist_port or process.free_port()
        self.epmd_port = epmd_port or process.free_port()
        self.nodename = nodename or 'hacluster-%s@localhost' % (
            secrets.token_hex(4))
        self.log_path = os.path.join(self.data_dir, 'log', 'rabbit.log')
        self.console_log_path = os.path.join(self.data_dir, 'console.log')
        self.epmd_log_path = os.path.join(self.data_dir, 'epmd.log')
        self.pid_file = os.path.join(self.data_dir, 'rabbitmq.pid')
        self._epmd = None
        self._beam_pid = None
        self._log_offset = 0
        super().__init__(temp_dir=self.data_dir, auto_ports=[
            name for name, value in given.items() if value is None])
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
    def wrapper_pid(self):
        """PID of the ``rabbitmq-server`` shell script (group leader)."""
        return super().pid

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
        if pid and self._child is not None and pid in group_members(
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
        cli_port = process.free_port()
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
        """Stop this broker's epmd (SIGTERM, SIGKILL after 5 s); blocks."""
        if self._epmd is not None:
            self._epmd.stop(5.0)

    _stop_helpers = _stop_epmd  # by stop(), not by kill() nor restart()

    def _spawn_broker(self):
        self._write_config()
        self._beam_pid = None
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass
        self._log_offset = _file_size(self.log_path)
        self._spawn_child([self._bin('rabbitmq-server')], self._env(),
                          self.data_dir, self.console_log_path)

    def _new_log_text(self):
        return _read_text(self.log_path, self._log_offset)

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
        text = (self._new_log_text() + log_tail(self.console_log_path, 200))
        return 'eaddrinuse' in text.lower() or \
            'address already in use' in text.lower()

    def start(self, timeout=START_TIMEOUT):
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
            self._check_startable()
            for attempt in range(1, START_ATTEMPTS + 1):
                t0 = time.monotonic()
                try:
                    self._ensure_epmd(timeout=10.0)
                except ServerStartError:
                    # Whatever made epmd fail: a new port may help.
                    self._stop_epmd()
                    if self._new_ports_for_retry(attempt, ('epmd_port',)):
                        continue
                    raise
                self._spawn_broker()
                try:
                    self._wait_ready(timeout)
                except ServerStartError:
                    clash = self._port_clash()
                    self._stop_child()
                    if clash and self._new_ports_for_retry(
                            attempt, ('port', 'dist_port')):
                        continue
                    self._stop_epmd()
                    raise
                self.start_duration = time.monotonic() - t0
                LOG.info('RabbitMQ %s ready on 127.0.0.1:%d in %.2f s',
                         self.nodename, self.port, self.start_duration)
                return self
        raise AssertionError('unreachable')  # pragma: no cover
