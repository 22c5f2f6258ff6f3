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

"""Private etcd servers for tests: :class:`EtcdServer` (one member) and
:class:`EtcdCluster` (several members forming one cluster).

Both listen on 127.0.0.1 only, on free ports, with their data in temporary
directories; see :mod:`hacluster.testing.process` for what every private
server guarantees.  The ``etcd`` binary is looked up on ``PATH``; the
environment variable ``HACLUSTER_ETCD`` overrides it.

An :class:`EtcdServer` may serve its client port over TLS
(:class:`ServerTLS`); :class:`ThrowawayPKI` makes the certificates for it
with the ``openssl`` command-line tool.

Authentication: :func:`jwt_args` (etcd options for JWT tokens, with a key
pair made here), :func:`enable_auth` (a root and an application user, then
``auth enable``), :func:`etcdctl` (run etcdctl against a server) and
:func:`url_with` (a backend URL with credentials).
"""

import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from hacluster.testing import process
from hacluster.testing.process import _clean_env
from hacluster.testing.process import _file_size
from hacluster.testing.process import _read_text
from hacluster.testing.process import _tails
from hacluster.testing.process import _which
from hacluster.testing.process import LOOPBACK
from hacluster.testing.process import ManagedServer
from hacluster.testing.process import ServerStartError
from hacluster.testing.process import START_ATTEMPTS
from hacluster.testing.process import StartCloseContext

LOG = logging.getLogger(__name__)


def _http_json(url, data=None, timeout=1.0, context=None):
    req = urllib.request.Request(url, data=data,
                                 method='POST' if data else 'GET')
    with urllib.request.urlopen(req, timeout=timeout,
                                context=context) as resp:
        return json.loads(resp.read().decode('utf-8'))


class ServerTLS:
    """TLS on a private etcd's client port (the peer port stays plain).

    :param cert, key: the server's certificate and key (PEM files).
    :param ca: the CA certificate (PEM) etcd trusts for client certificates
        (``--trusted-ca-file``); the fixture's own probes trust it too.
    :param client_cert_auth: etcd refuses clients without a certificate
        signed by ``ca`` (``--client-cert-auth``).
    :param probe_cert, probe_key: the client certificate the fixture's
        probes (health, member list) present; needed with
        ``client_cert_auth``.

    The probes check the chain but not the host name: a test may give etcd
    a certificate made out to another host on purpose.
    """

    def __init__(self, cert, key, ca=None, client_cert_auth=False,
                 probe_cert=None, probe_key=None):
        if client_cert_auth and not (ca and probe_cert and probe_key):
            raise ValueError('client_cert_auth needs ca, probe_cert and '
                             'probe_key')
        self.cert = cert
        self.key = key
        self.ca = ca
        self.client_cert_auth = client_cert_auth
        self.probe_cert = probe_cert
        self.probe_key = probe_key

    def etcd_args(self):
        """The etcd command-line options for this configuration."""
        args = ['--cert-file', self.cert, '--key-file', self.key]
        if self.ca:
            args += ['--trusted-ca-file', self.ca]
        if self.client_cert_auth:
            args.append('--client-cert-auth')
        return args

    def etcdctl_args(self):
        """etcdctl options that trust ``ca`` and present the probes'
        client certificate.  (etcdctl checks the host name: these do not
        connect to etcd with a certificate made out to another host.)"""
        args = ['--cacert', self.ca] if self.ca else []
        if self.probe_cert:
            args += ['--cert', self.probe_cert, '--key', self.probe_key]
        return args

    def probe_context(self):
        """An :class:`ssl.SSLContext` for the fixture's probes."""
        context = ssl.create_default_context(cafile=self.ca)
        context.check_hostname = False
        if not self.ca:
            context.verify_mode = ssl.CERT_NONE
        if self.probe_cert:
            context.load_cert_chain(self.probe_cert, self.probe_key)
        return context


class ThrowawayPKI:
    """A certificate authority made for one test run, and certificates
    signed by it, made with the ``openssl`` command-line tool (P-256 keys,
    valid two days).

    Made at construction (blocks ~0.1 s); files in ``directory`` (a new
    temporary directory unless given; :meth:`close` removes a directory
    it made).  Attributes, each a PEM file path:

    * ``ca_cert``, ``ca_key`` -- the CA (self-signed, trusted by nobody
      else);
    * ``server_cert``, ``server_key`` -- a server certificate for
      ``127.0.0.1`` and ``localhost`` (subject alternative names);
    * ``wrong_host_cert``, ``wrong_host_key`` -- signed by the same CA but
      made out to ``wrong-host.invalid`` only;
    * ``client_cert``, ``client_key`` -- a client certificate
      (CN ``hacluster-client``).

    Raises :class:`subprocess.CalledProcessError` (with openssl's output) if
    openssl fails, FileNotFoundError if it is not installed.
    """

    DAYS = 2

    def __init__(self, directory=None):
        self._owns_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(
            prefix='hacluster-pki-')
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.ca_cert, self.ca_key = self._make_ca()
        # the server certificates may also serve as client certificates:
        # etcd 3.4's gateway presents the server's own certificate when it
        # dials etcd's gRPC port with --client-cert-auth
        self.server_cert, self.server_key = self.issue(
            'server', 'hacluster-etcd',
            ['IP:127.0.0.1', 'DNS:localhost'], 'serverAuth,clientAuth')
        self.wrong_host_cert, self.wrong_host_key = self.issue(
            'wrong-host', 'wrong-host.invalid', ['DNS:wrong-host.invalid'],
            'serverAuth,clientAuth')
        self.client_cert, self.client_key = self.issue(
            'client', 'hacluster-client', [], 'clientAuth')

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Remove the directory if this object made it.  Idempotent."""
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.directory, name)

    def _openssl(self, *args, config=None):
        argv = ['openssl'] + list(args)
        if config is not None:
            config_path = self.path('openssl-%s.cnf'
                                    % secrets.token_hex(4))
            with open(config_path, 'w') as f:
                f.write(config)
            argv = argv[:2] + ['-config' if argv[1] == 'req'
                               else '-extfile', config_path] + argv[2:]
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True,
                           timeout=60, cwd=self.directory,
                           env=_clean_env(['OPENSSL_']))
        except subprocess.CalledProcessError as exc:
            raise subprocess.CalledProcessError(
                exc.returncode, exc.cmd, exc.stdout,
                exc.stderr) from None

    def _make_ca(self):
        cert, key = self.path('ca.pem'), self.path('ca-key.pem')
        self._openssl(
            'req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt',
            'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key,
            '-out', cert, '-days', str(self.DAYS), '-sha256',
            '-subj', '/CN=hacluster throwaway test CA',
            config='[req]\ndistinguished_name = dn\nx509_extensions = ca\n'
                   '[dn]\n[ca]\nbasicConstraints = critical, CA:TRUE\n'
                   'keyUsage = critical, keyCertSign, cRLSign\n'
                   'subjectKeyIdentifier = hash\n')
        return cert, key

    def issue(self, name, common_name, alt_names, usage):
        """Make ``<name>.pem`` and ``<name>-key.pem`` signed by the CA.

        :param common_name: the subject's CN.
        :param alt_names: subject alternative names, e.g.
            ``['IP:127.0.0.1', 'DNS:localhost']`` (may be empty).
        :param usage: extended key usage, e.g. ``'serverAuth,clientAuth'``.
        :returns: ``(cert_path, key_path)``. Blocks for openssl.
        """
        cert, key = self.path(name + '.pem'), self.path(name + '-key.pem')
        csr = self.path(name + '.csr')
        self._openssl(
            'req', '-new', '-newkey', 'ec', '-pkeyopt',
            'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key,
            '-out', csr, '-subj', '/CN=' + common_name,
            config='[req]\ndistinguished_name = dn\n[dn]\n')
        extensions = ('[leaf]\nbasicConstraints = critical, CA:FALSE\n'
                      'keyUsage = critical, digitalSignature, '
                      'keyEncipherment\n'
                      'extendedKeyUsage = %s\n'
                      'subjectKeyIdentifier = hash\n'
                      'authorityKeyIdentifier = keyid:always\n' % usage)
        if alt_names:
            extensions += 'subjectAltName = %s\n' % ', '.join(alt_names)
        self._openssl(
            'x509', '-req', '-in', csr, '-CA', self.ca_cert, '-CAkey',
            self.ca_key, '-set_serial', str(secrets.randbits(63)), '-out',
            cert, '-days', str(self.DAYS), '-sha256', '-extensions', 'leaf',
            config=extensions)
        os.unlink(csr)
        return cert, key

    def server_tls(self, wrong_host=False, client_cert_auth=False):
        """A :class:`ServerTLS` with this CA: the right server certificate
        (or the one made out to the wrong host), client certificates
        required or not; the probes present the client certificate."""
        if wrong_host:
            cert, key = self.wrong_host_cert, self.wrong_host_key
        else:
            cert, key = self.server_cert, self.server_key
        return ServerTLS(cert, key, ca=self.ca_cert,
                         client_cert_auth=client_cert_auth,
                         probe_cert=self.client_cert,
                         probe_key=self.client_key)


# --------------------------------------------------------------------------
# authentication

#: ``user:password`` of the root user :func:`enable_auth` makes.
ROOT_CREDENTIALS = 'root:rootpw'


class EtcdctlError(RuntimeError):
    """etcdctl exited with an error; the message has its stderr."""


def jwt_args(directory, ttl=60):
    """etcd command-line options for JWT auth tokens (RS256) signed with
    an RSA key pair made in ``directory`` (created if needed) with the
    ``openssl`` command-line tool; tokens are valid ``ttl`` seconds.

    Pass them as ``EtcdServer(extra_args=...)``. Blocks for openssl
    (~0.2 s); raises :class:`subprocess.CalledProcessError` if it fails.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = os.path.join(directory, 'jwt.key')
    pub = os.path.join(directory, 'jwt.pub')
    env = _clean_env(['OPENSSL_'])
    for argv in (['openssl', 'genrsa', '-out', key, '2048'],
                 ['openssl', 'rsa', '-in', key, '-pubout', '-out', pub]):
        subprocess.run(argv, check=True, capture_output=True, timeout=60,
                       env=env)
    return ['--auth-token', 'jwt,pub-key=%s,priv-key=%s,sign-method=RS256,'
            'ttl=%ds' % (pub, key, ttl)]


def etcdctl(server, *args, input=None, timeout=30):
    """Run ``etcdctl`` (API v3) against ``server`` (an :class:`EtcdServer`:
    its endpoint and TLS options), ``input`` on its stdin; return its
    stdout. Blocks up to ``timeout`` s.

    :raises EtcdctlError: etcdctl failed (the message has its stderr; the
        password of a ``--user`` argument is masked).
    """
    argv = [_which('HACLUSTER_ETCDCTL', 'etcdctl')] + \
        server.etcdctl_args() + [str(a) for a in args]
    env = _clean_env(['ETCDCTL_'])
    env['ETCDCTL_API'] = '3'
    out = subprocess.run(argv, capture_output=True, text=True,
                         timeout=timeout, input=input, env=env)
    if out.returncode != 0:
        shown = list(args)
        for i, arg in enumerate(shown[:-1]):
            if arg == '--user':
                shown[i + 1] = str(shown[i + 1]).split(':', 1)[0] + ':***'
        raise EtcdctlError('etcdctl %s failed (status %d): %s' % (
            ' '.join(str(a) for a in shown), out.returncode,
            out.stderr.strip()))
    return out.stdout


def enable_auth(server, user='manila', password='s3cret',
                prefix='/hacluster/'):
    """Turn authentication on in ``server``: users ``root`` (password
    ``rootpw``, role root: everything) and ``user`` (role ``hacluster``:
    readwrite on keys under ``prefix``), then ``auth enable``. Returns
    ``server``. Blocks for a few etcdctl runs; raises
    :class:`EtcdctlError`."""
    root, root_password = ROOT_CREDENTIALS.split(':', 1)
    etcdctl(server, 'user', 'add', root, '--interactive=false',
            input=root_password + '\n')
    etcdctl(server, 'role', 'add', 'root')   # may already exist in 3.4
    etcdctl(server, 'user', 'grant-role', 'root', 'root')
    etcdctl(server, 'user', 'add', user, '--interactive=false',
            input=password + '\n')
    etcdctl(server, 'role', 'add', 'hacluster')
    etcdctl(server, 'role', 'grant-permission', 'hacluster', '--prefix',
            'readwrite', prefix)
    etcdctl(server, 'user', 'grant-role', user, 'hacluster')
    etcdctl(server, 'auth', 'enable')
    return server


def url_with(server, userinfo):
    """``server``'s backend URL with ``userinfo`` (``'user:password'`` or
    ``'user'``) in it: ``etcd3+http://manila:s3cret@127.0.0.1:PORT``."""
    return 'etcd3+%s://%s@%s' % (server.scheme, userinfo, server.endpoint)


class EtcdServer(ManagedServer):
    """One etcd member on 127.0.0.1.

    With no arguments this is a single-member cluster on two free ports with
    its data in a new temporary directory.  ``data_dir`` given by the caller
    is created if needed but never removed.  ``initial_cluster`` (an
    ``--initial-cluster`` string) makes it a member of a larger cluster; see
    :class:`EtcdCluster`.  ``extra_args`` are appended to the etcd command
    line.  ``tls`` (a :class:`ServerTLS`) serves the client port over
    HTTPS: ``url`` is then ``etcd3+https://...`` (without the ``ca_cert``
    or client certificate options: the test adds those it wants).

    Attributes: ``start_duration`` (seconds the last successful start took),
    ``log_path``, ``tls``.

    :meth:`stop` sends SIGTERM and SIGKILLs after 5 s (``STOP_TIMEOUT``);
    the other lifecycle methods are those of
    :class:`~hacluster.testing.process.ManagedServer`.
    """

    START_TIMEOUT = 15.0
    STOP_TIMEOUT = 5.0

    def __init__(self, name='etcd0', data_dir=None, client_port=None,
                 peer_port=None, initial_cluster=None,
                 initial_cluster_state='new', cluster_token=None,
                 extra_args=(), tls=None):
        self.name = name
        self.tls = tls
        self._owns_dir = data_dir is None
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix='hacluster-etcd-%s-' % name)
        else:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.data_dir = data_dir
        self.log_path = os.path.join(data_dir, 'etcd.log')
        auto_ports = (client_port is None and peer_port is None
                      and initial_cluster is None)
        self.client_port = client_port or process.free_port()
        self.peer_port = peer_port or process.free_port()
        self.initial_cluster = initial_cluster
        self.initial_cluster_state = initial_cluster_state
        self.cluster_token = (cluster_token or
                              'hacluster-%s' % secrets.token_hex(6))
        self.extra_args = tuple(extra_args)
        self._log_offset = 0
        self._spawned_at = None
        super().__init__(
            temp_dir=data_dir if self._owns_dir else None,
            auto_ports=('client_port', 'peer_port') if auto_ports else ())

    def __repr__(self):
        return '<EtcdServer %s %s pid=%s>' % (self.name, self.endpoint,
                                              self.pid)

    # -- addresses

    @property
    def endpoint(self):
        """``'127.0.0.1:PORT'`` of the client port."""
        return '%s:%d' % (LOOPBACK, self.client_port)

    @property
    def scheme(self):
        """``'https'`` with :class:`ServerTLS`, else ``'http'``."""
        return 'https' if self.tls else 'http'

    @property
    def url(self):
        """tooz-style backend URL, ``'etcd3+http://127.0.0.1:PORT'``
        (``etcd3+https`` with TLS)."""
        return 'etcd3+%s://%s' % (self.scheme, self.endpoint)

    @property
    def client_url(self):
        return '%s://%s' % (self.scheme, self.endpoint)

    def etcdctl_args(self):
        """etcdctl options that reach this server: ``--endpoints`` and,
        with TLS, the CA and the probes' client certificate."""
        args = ['--endpoints', self.client_url]
        if self.tls:
            args += self.tls.etcdctl_args()
        return args

    def _probe_context(self):
        return self.tls.probe_context() if self.tls else None

    @property
    def peer_url(self):
        return 'http://%s:%d' % (LOOPBACK, self.peer_port)

    @property
    def etcd_data_dir(self):
        """The directory passed to ``etcd --data-dir``."""
        return os.path.join(self.data_dir, 'etcd')

    # -- state

    def is_healthy(self, timeout=1.0):
        """True if ``GET /health`` answers ``{"health": "true"}``.

        Blocks at most ``timeout`` seconds; never raises for network errors.
        """
        try:
            body = _http_json(self.client_url + '/health', timeout=timeout,
                              context=self._probe_context())
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
                              data=b'{}', timeout=timeout,
                              context=self._probe_context())
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
        ] + (self.tls.etcd_args() if self.tls else []) + list(
            self.extra_args)

    def spawn(self):
        """Start the etcd process without waiting for it.  Does not block."""
        with self._lock:
            self._check_startable()
            env = _clean_env(['ETCD_'], keep=('ETCD_UNSUPPORTED_ARCH',))
            self._log_offset = _file_size(self.log_path)
            self._spawn_child(self._argv(), env, self.data_dir,
                              self.log_path)
            self._spawned_at = time.monotonic()
            LOG.debug('spawned %r', self)

    def port_clash(self):
        """True if the last spawned etcd failed to bind a port."""
        return 'address already in use' in _read_text(self.log_path,
                                                      self._log_offset)

    def _check_alive(self):
        """Raise ServerStartError if the process has exited."""
        child = self._child
        if child is None or child.exited():
            status = child.exit_status() if child else None
            raise ServerStartError(
                'etcd %s (%s) exited during start with status %s\n%s' % (
                    self.name, self.endpoint, status,
                    _tails([self.log_path])))

    def ready(self):
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

    def start(self, timeout=START_TIMEOUT):
        """Start etcd and block until it reports healthy; return self.

        Polls ``GET http(s)://127.0.0.1:PORT/health`` for up to ``timeout``
        seconds per attempt.  If etcd exits because a port picked by
        :func:`free_port` was taken meanwhile, it is retried with new ports
        (3 attempts).  Raises :class:`ServerStartError` (with the log tail)
        if etcd exits or is not healthy in time; the process is then killed.
        Raises RuntimeError if already running or closed.

        A member of a cluster being formed is only healthy once a quorum
        runs: start those with :class:`EtcdCluster`.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            self.spawn()
            try:
                self.wait_ready(timeout)
                LOG.info('etcd %s ready on %s in %.2f s', self.name,
                         self.endpoint, self.start_duration)
                return self
            except ServerStartError:
                self.stop()
                if self.port_clash() and self._new_ports_for_retry(
                        attempt, ('client_port', 'peer_port')):
                    continue
                raise
        raise AssertionError('unreachable')  # pragma: no cover

    def wait_ready(self, timeout=START_TIMEOUT):
        """Block until healthy (see :meth:`start`); raise ServerStartError."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline:
                raise self._start_error(timeout)
            time.sleep(0.05)
        return self

    def _before_restart(self):
        """A member of a multi-member cluster restarts with
        ``--initial-cluster-state existing``.

        :meth:`restart` keeps the ports: they are part of the cluster's
        configuration.
        """
        if self.initial_cluster and ',' in self.initial_cluster:
            self.initial_cluster_state = 'existing'


class EtcdCluster(StartCloseContext):
    """``size`` etcd members on 127.0.0.1 forming one cluster.

    All data lives under one temporary directory (``data_dir``), one
    sub-directory per member.  ``members`` is the list of
    :class:`EtcdServer`; kill/pause/restart them individually.
    ``extra_args`` are appended to every member's etcd command line (e.g.
    ``['--heartbeat-interval', '50', '--election-timeout', '500']``).
    """

    def __init__(self, size=3, name_prefix='etcd', extra_args=()):
        if size < 1:
            raise ValueError('size must be >= 1')
        self.size = size
        self.name_prefix = name_prefix
        self.extra_args = tuple(extra_args)
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
        ports = [(process.free_port(), process.free_port())
                 for _ in range(self.size)]
        names = ['%s%d' % (self.name_prefix, i) for i in range(self.size)]
        initial = ','.join('%s=http://%s:%d' % (name, LOOPBACK, peer)
                           for name, (_, peer) in zip(names, ports))
        self.members = [
            EtcdServer(name=name,
                       data_dir=os.path.join(self.data_dir, '%s-%d' % (
                           name, self._generation)),
                       client_port=client, peer_port=peer,
                       initial_cluster=initial, cluster_token=token,
                       extra_args=self.extra_args)
            for name, (client, peer) in zip(names, ports)]

    @property
    def endpoints(self):
        """``['127.0.0.1:P1', '127.0.0.1:P2', ...]`` (client ports)."""
        return [m.endpoint for m in self.members]

    @property
    def url(self):
        """``'etcd3+http://127.0.0.1:P1,127.0.0.1:P2,...'``."""
        return 'etcd3+http://' + ','.join(self.endpoints)

    @property
    def running(self):
        """True while any member's process exists."""
        return any(m.running for m in self.members)

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
                member.spawn()
            try:
                self.wait_healthy(timeout=timeout)
                self.start_duration = time.monotonic() - t0
                LOG.info('etcd cluster %s ready in %.2f s', self.url,
                         self.start_duration)
                return self
            except ServerStartError:
                clash = any(m.port_clash() for m in self.members)
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
            pending = [m for m in pending if not m.ready()]
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
                                    timeout=timeout,
                                    context=member._probe_context())
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
