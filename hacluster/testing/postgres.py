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

"""A private PostgreSQL server for tests: :class:`PostgresServer`.

It listens on 127.0.0.1 only, on a free port, with its cluster, log and
Unix socket in a temporary directory; see :mod:`hacluster.testing.process`
for what every private server guarantees.
"""

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from hacluster.testing import process
from hacluster.testing.process import _clean_env
from hacluster.testing.process import _primary_group
from hacluster.testing.process import log_tail
from hacluster.testing.process import LOOPBACK
from hacluster.testing.process import ManagedServer
from hacluster.testing.process import ServerStartError
from hacluster.testing.process import START_ATTEMPTS


class PostgresServer(ManagedServer):
    """A private PostgreSQL server on 127.0.0.1 (trust authentication).

    ``initdb`` makes a new cluster in a temporary directory; the server
    listens on a free port and keeps its Unix socket in that directory (never
    ``/var/run/postgresql``).  PostgreSQL refuses to run as root: when this
    process is root, the server runs as the ``postgres`` system user (made
    by the Debian package), which then owns the directory.

    Binaries come from ``HACLUSTER_PG_BIN_DIR``, else the newest
    ``/usr/lib/postgresql/*/bin``, else ``PATH``.

    Attributes: ``port``, ``data_dir``, ``start_duration``.

    The lifecycle methods are those of
    :class:`~hacluster.testing.process.ManagedServer`: :meth:`stop` is a
    fast shutdown (SIGINT), SIGKILL after 10 s; :meth:`close` removes the
    whole temporary directory.
    """

    START_TIMEOUT = 60.0
    STOP_TIMEOUT = 10.0
    STOP_SIGNAL = signal.SIGINT
    SUPERUSER = 'postgres'

    def __init__(self, port=None):
        self.base_dir = tempfile.mkdtemp(prefix='hacluster-pg-')
        self.data_dir = os.path.join(self.base_dir, 'data')
        self.log_path = os.path.join(self.base_dir, 'postgres.log')
        self.port = port or process.free_port()
        self.run_as = 'postgres' if os.geteuid() == 0 else None
        super().__init__(temp_dir=self.base_dir,
                         auto_ports=('port',) if port is None else ())

    def __repr__(self):
        return '<PostgresServer 127.0.0.1:%d pid=%s>' % (self.port, self.pid)

    def url(self, database, driver='postgresql+psycopg2'):
        """SQLAlchemy URL of ``database`` on this server."""
        return '%s://%s@%s:%d/%s' % (driver, self.SUPERUSER, LOOPBACK,
                                     self.port, database)

    @staticmethod
    def _bin(name):
        bin_dir = os.environ.get('HACLUSTER_PG_BIN_DIR')
        if not bin_dir:
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

    def start(self, timeout=START_TIMEOUT):
        """initdb (first time), start, wait until it answers. Blocks.

        Returns self at once if already running.  On a port clash with a
        port picked by :func:`free_port`, retries on a new port (3
        attempts).

        :raises ServerStartError: with the tail of the server's log (also
            if closed).
        """
        with self._lock:
            if self._closed:
                raise ServerStartError('%r is closed' % self)
            if self.running:
                return self
            began = time.monotonic()
            if not os.path.exists(os.path.join(self.data_dir, 'PG_VERSION')):
                self._initdb()
            for attempt in range(1, START_ATTEMPTS + 1):
                self._spawn_child(self._argv(), _clean_env(['PG']),
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
                tail = log_tail(self.log_path)
                self._child.kill()
                clash = 'already in use' in tail or 'could not bind' in tail
                if clash and self._new_ports_for_retry(attempt, ('port',)):
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


def _check_ident(name):
    """Raise ValueError unless ``name`` is a plain SQL identifier."""
    if not re.match(r'^[A-Za-z_][A-Za-z0-9_]{0,62}$', name):
        raise ValueError('not a plain SQL identifier: %r' % (name,))
