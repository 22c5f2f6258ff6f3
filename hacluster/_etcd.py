"""The one place hacluster talks to etcd.

etcd's gRPC gateway (the JSON API etcd3gw speaks) over ``requests``, with
what hacluster needs and etcd3gw lacks:

* several endpoints with fail-over: a request that fails for a transport
  reason (refused, timed out, 5xx such as "leader changed") is sent to the next
  endpoint; the endpoint that answered stays current;
* etcd user/password authentication through an auth token on the session;
* error translation: every requests/HTTP error leaves this module as a
  :class:`~hacluster.exceptions.HAClusterError` with the cause attached and
  the URL scrubbed;
* :class:`Watch`, a prefix watch that reconnects from the last revision it saw
  (etcd3gw's watch silently dies when its stream breaks).

Every call here may block for up to ``timeout`` seconds per endpoint tried;
all of it is thread-safe (requests sessions are shared, the current endpoint
is guarded by a lock) and works under eventlet (green sockets).
"""

import base64
import json
import logging
import os
import socket
import threading
import time

import requests

from hacluster import exceptions
from hacluster import url as _url

LOG = logging.getLogger(__name__)

# gRPC status codes the gateway puts in error bodies.
_GRPC_NOT_FOUND = 5
_GRPC_UNAUTHENTICATED = 16
_GRPC_INVALID_ARGUMENT = 3


def b64(value):
    if isinstance(value, str):
        value = value.encode('utf-8')
    return base64.b64encode(value).decode('ascii')


def unb64(value):
    return base64.b64decode(value) if value else b''


class LeaseNotFound(exceptions.SessionLost):
    """etcd does not know the lease (it expired or was revoked)."""


class KV:
    """One decoded etcd key-value: ``key`` (str), ``value`` (bytes),
    ``create_revision``, ``mod_revision``, ``version``, ``lease`` (ints)."""

    __slots__ = ('key', 'value', 'create_revision', 'mod_revision',
                 'version', 'lease')

    def __init__(self, raw):
        self.key = unb64(raw.get('key')).decode('utf-8')
        self.value = unb64(raw.get('value'))
        self.create_revision = int(raw.get('create_revision', 0))
        self.mod_revision = int(raw.get('mod_revision', 0))
        self.version = int(raw.get('version', 0))
        self.lease = int(raw.get('lease', 0))

    def json(self):
        """The value decoded as JSON (``{}`` when empty or not JSON)."""
        try:
            return json.loads(self.value.decode('utf-8')) if self.value \
                else {}
        except ValueError:
            return {}

    def __repr__(self):
        return '<KV %s c=%d m=%d>' % (self.key, self.create_revision,
                                      self.mod_revision)


def put_op(key, value, lease=0):
    op = {'key': b64(key), 'value': b64(value)}
    if lease:
        op['lease'] = lease
    return {'request_put': op}


def range_op(key, range_end=None, sort_create=False, keys_only=False,
             limit=None, max_create_revision=None):
    op = {'key': b64(key)}
    if range_end is not None:
        op['range_end'] = b64(range_end)
    if sort_create:
        op['sort_order'] = 1    # ASCEND
        op['sort_target'] = 2   # CREATE
    if keys_only:
        op['keys_only'] = True
    if limit:
        op['limit'] = limit
    if max_create_revision:
        op['max_create_revision'] = max_create_revision
    return {'request_range': op}


def delete_op(key, range_end=None):
    op = {'key': b64(key)}
    if range_end is not None:
        op['range_end'] = b64(range_end)
    return {'request_delete_range': op}


def create_revision_is(key, revision):
    """Txn compare: ``key`` exists with this create revision (0 = absent)."""
    return {'key': b64(key), 'target': 'CREATE', 'result': 'EQUAL',
            'create_revision': revision}


def mod_revision_is(key, revision):
    return {'key': b64(key), 'target': 'MOD', 'result': 'EQUAL',
            'mod_revision': revision}


def range_kvs(response):
    """The decoded KVs of a ``response_range`` inside a txn response."""
    return [KV(kv) for kv in response.get('response_range', {}).get('kvs', [])]


class _Transient(Exception):
    """An answer that another endpoint (or a later try) may not give: 5xx,
    408, "leader changed", a broken stream."""


def _is_transient(exc):
    return isinstance(exc, (_Transient,
                            requests.exceptions.RequestException,
                            ValueError))   # a truncated JSON body


class _Endpoint:
    """One etcd endpoint: its base URL, gateway API path and HTTP session.

    (etcd3gw's client does the same, but importing etcd3gw imports futurist,
    which imports eventlet: 0.28 s at every process start, more than half of
    the operator command's start-up. hacluster speaks the same gateway API
    over requests directly.)
    """

    def __init__(self, host, port, protocol, session, timeout, api_path):
        self.host = host
        self.port = port
        self.protocol = protocol
        self.session = session
        self.timeout = timeout
        self._api_path = api_path
        host = '[%s]' % host if ':' in host else host
        self.base_url = '%s://%s:%d' % (protocol, host, port)

    def get_url(self, path):
        if self._api_path is None:
            self._api_path = self._discover()
        return self.base_url + self._api_path + path.lstrip('/')

    def _discover(self):
        """The gateway's API path from etcd's version (3.4+: /v3/)."""
        resp = self.session.get(self.base_url + '/version',
                                timeout=self.timeout)
        if resp.status_code != 200:
            raise _Transient('GET /version: HTTP %d' % resp.status_code)
        try:
            version = tuple(int(p) for p in
                            resp.json()['etcdserver'].split('.')[:2])
        except (KeyError, ValueError) as exc:
            raise _Transient('unreadable etcd version: %s' % exc) from exc
        if version >= (3, 4):
            return '/v3/'
        if version >= (3, 3):
            return '/v3beta/'
        return '/v3alpha/'


def _error_body(exc):
    try:
        return json.loads(exc.detail_text or '{}')
    except (ValueError, TypeError):
        return {}


class Client:
    """etcd over its gRPC gateway, with endpoint fail-over.

    :param backend_url: a parsed :class:`hacluster.url.BackendURL` of kind
        ``'etcd'``.
    :param timeout: seconds one request may take on one endpoint.

    Thread-safe. Every method blocks for the request (up to ``timeout`` per
    endpoint tried) and raises :class:`BackendUnavailable` when no endpoint
    answered, naming the (scrubbed) endpoints.
    """

    def __init__(self, backend_url, timeout=5.0):
        self.url = backend_url
        self.timeout = backend_url.timeout or timeout
        self._lock = threading.Lock()
        self._current = 0
        self._clients = []
        for host, port in backend_url.endpoints:
            session = requests.Session()
            # requests re-reads proxy and CA-bundle variables from the
            # environment on every request (~0.3 ms each, a sixth of a lock
            # cycle); read them once here instead, with the same meaning.
            base = '%s://%s:%d' % (backend_url.protocol, host, port)
            session.proxies = requests.utils.get_environ_proxies(base)
            session.trust_env = False
            env_bundle = os.environ.get('REQUESTS_CA_BUNDLE') or \
                os.environ.get('CURL_CA_BUNDLE')
            if env_bundle:
                session.verify = env_bundle
            if backend_url.ca_cert:
                session.verify = backend_url.ca_cert
            if backend_url.cert_cert:
                session.cert = (backend_url.cert_cert, backend_url.cert_key)
            self._clients.append(_Endpoint(
                host, port, backend_url.protocol, session, self.timeout,
                backend_url.api_path))
        #: Requests sent (for benchmarks and the status command).
        self.requests = 0

    @property
    def endpoints(self):
        return ['%s:%d' % ep for ep in self.url.endpoints]

    def current(self):
        """The endpoint in use (``host``, ``port``, ``session``...)."""
        with self._lock:
            return self._clients[self._current]

    def _advance(self, failed_index):
        with self._lock:
            if self._current == failed_index:
                self._current = (failed_index + 1) % len(self._clients)

    def _authenticate(self, client, timeout=None):
        if not self.url.username:
            return
        resp = client.session.post(
            client.get_url('/auth/authenticate'),
            json={'name': self.url.username,
                  'password': self.url.password or ''},
            timeout=timeout or self.timeout)
        if resp.status_code >= 500 or resp.status_code == 408:
            # "leader changed", "request timed out": try the next endpoint
            raise _Transient('HTTP %d: %s' % (resp.status_code, resp.text[:200]))
        if resp.status_code != 200:
            raise exceptions.ConfigurationError(
                'etcd refused the credentials of user %r in backend_url %s: '
                '%s' % (self.url.username, self.url.safe,
                        _url.scrub(resp.text.strip())))
        client.session.headers['Authorization'] = resp.json()['token']

    def call(self, path, payload, timeout=None, budget=None):
        """POST ``payload`` to the gateway API ``path``; return the JSON.

        Tries each endpoint once, starting with the current one, each for up
        to ``timeout`` seconds (default: the client's), and all of them
        within ``budget`` seconds if given (no endpoint is tried once the
        budget is spent).

        :raises LeaseNotFound: etcd does not know a lease named in the call.
        :raises BackendUnavailable: no endpoint answered.
        :raises HAClusterError: etcd refused the request.
        """
        with self._lock:
            start = self._current
        errors = []
        n = len(self._clients)
        ends = None if budget is None else time.monotonic() + budget
        # Without a budget, a second round after a short pause: a brief
        # stall (an etcd leader election, a slow disk) must not fail a call
        # when there is only one endpoint to fail over to. Every request
        # hacluster sends is idempotent or compare-guarded, so sending it
        # again is safe.
        rounds = 1 if budget is not None else 2
        for i in range(n * rounds):
            if i == n:
                time.sleep(0.1)
            index = (start + i) % n
            client = self._clients[index]
            per_try = timeout or self.timeout
            if ends is not None:
                left = ends - time.monotonic()
                if left <= 0.01 and errors:
                    break
                per_try = max(0.01, min(per_try, left))
            try:
                if self.url.username and \
                        'Authorization' not in client.session.headers:
                    self._authenticate(client, per_try)
                self.requests += 1
                resp = client.session.post(
                    client.get_url(path), json=payload, timeout=per_try)
                if resp.status_code == 200:
                    return resp.json()
                body = {}
                try:
                    body = resp.json()
                except ValueError:
                    pass
                code = body.get('code')
                message = body.get('message') or body.get('error') or \
                    resp.text.strip()
                if code == _GRPC_NOT_FOUND and 'lease not found' in message:
                    raise LeaseNotFound('etcd: %s' % message)
                if code == _GRPC_UNAUTHENTICATED and self.url.username:
                    # The token expired: get a new one, try this endpoint
                    # once more.
                    client.session.headers.pop('Authorization', None)
                    self._authenticate(client, per_try)
                    resp = client.session.post(
                        client.get_url(path), json=payload, timeout=per_try)
                    if resp.status_code == 200:
                        return resp.json()
                if resp.status_code >= 500 or resp.status_code == 408:
                    raise _Transient('HTTP %d: %s' % (resp.status_code, resp.text[:200]))
                raise exceptions.HAClusterError(
                    'etcd at %s refused %s: %s'
                    % (self._endpoint_name(index), path,
                       _url.scrub(message)))
            except exceptions.HAClusterError:
                raise
            except Exception as exc:
                if not _is_transient(exc):
                    raise exceptions.HAClusterError(
                        'unexpected error talking to etcd at %s: %s'
                        % (self._endpoint_name(index), _url.scrub(exc)),
                        cause=exc)
                errors.append((index, exc))
                self._advance(index)
        index, last = errors[-1]
        raise exceptions.BackendUnavailable(
            'no etcd endpoint answered (tried %s); last error: %s'
            % (', '.join(dict.fromkeys(self._endpoint_name(i)
                                       for i, _ in errors)),
               _url.scrub(last)), cause=last)

    def _endpoint_name(self, index):
        host, port = self.url.endpoints[index]
        return '%s://%s:%d' % (self.url.protocol, host, port)

    # -- key-value -------------------------------------------------------

    def txn(self, compare=(), success=(), failure=()):
        """Run a transaction; return the raw response (``succeeded`` is
        True/False, ``responses`` the results of the branch taken)."""
        resp = self.call('/kv/txn', {'compare': list(compare),
                                     'success': list(success),
                                     'failure': list(failure)})
        resp['succeeded'] = bool(resp.get('succeeded', False))
        resp.setdefault('responses', [])
        return resp

    def get(self, key):
        """The :class:`KV` at ``key``, or None."""
        resp = self.call('/kv/range', {'key': b64(key)})
        kvs = resp.get('kvs') or []
        return KV(kvs[0]) if kvs else None

    def get_prefix(self, prefix, sort_create=False, keys_only=False,
                   max_create_revision=None):
        """All KVs under ``prefix`` and the store revision of the read."""
        from hacluster.keys import prefix_end
        op = range_op(prefix, prefix_end(prefix), sort_create=sort_create,
                      keys_only=keys_only,
                      max_create_revision=max_create_revision)
        resp = self.call('/kv/range', op['request_range'])
        return ([KV(kv) for kv in resp.get('kvs') or []],
                int(resp['header']['revision']))

    def count_prefix(self, prefix):
        from hacluster.keys import prefix_end
        resp = self.call('/kv/range', {'key': b64(prefix),
                                       'range_end': b64(prefix_end(prefix)),
                                       'count_only': True})
        return int(resp.get('count', 0))

    def put(self, key, value, lease=0):
        """Write ``key``; return the store revision of the write."""
        payload = {'key': b64(key), 'value': b64(value)}
        if lease:
            payload['lease'] = lease
        return int(self.call('/kv/put', payload)['header']['revision'])

    def delete(self, key):
        """Delete ``key``; return how many keys were deleted (0 or 1)."""
        return int(self.call('/kv/deleterange',
                             {'key': b64(key)}).get('deleted', 0))

    def delete_prefix(self, prefix):
        from hacluster.keys import prefix_end
        return int(self.call('/kv/deleterange', {
            'key': b64(prefix),
            'range_end': b64(prefix_end(prefix))}).get('deleted', 0))


    # -- leases ----------------------------------------------------------

    def lease_grant(self, ttl):
        """Grant a lease; return ``(lease_id, granted_ttl)``."""
        resp = self.call('/lease/grant', {'TTL': int(ttl), 'ID': 0})
        if resp.get('error'):
            raise exceptions.HAClusterError(
                'etcd refused a lease of %ss: %s' % (ttl, resp['error']))
        return int(resp['ID']), int(resp['TTL'])

    def lease_keepalive(self, lease_id, timeout=None, budget=None):
        """Refresh a lease; return its new TTL, or -1 if etcd no longer
        has it."""
        resp = self.call('/lease/keepalive', {'ID': lease_id},
                         timeout=timeout, budget=budget)
        return int(resp.get('result', {}).get('TTL', -1))

    def lease_time_to_live(self, lease_id):
        """Seconds ``lease_id`` has left, or -1 once etcd no longer has it
        (expired or revoked). A lease that is gone never comes back: a -1
        is proof that every key bound to it is gone and that its holder can
        no longer renew it. Blocks for one request.

        :raises BackendUnavailable: no endpoint answered.
        """
        resp = self.call('/kv/lease/timetolive', {'ID': int(lease_id)})
        return int(resp.get('TTL', -1))

    def lease_revoke(self, lease_id, timeout=None):
        try:
            self.call('/kv/lease/revoke', {'ID': lease_id}, timeout=timeout)
        except LeaseNotFound:
            pass


class Watch:
    """Watch every key under a prefix, reconnecting as needed.

    One background thread holds a streaming ``/v3/watch`` request open. When
    the stream breaks (member killed, restarted, network cut, or silence for
    ``idle_timeout`` seconds), it reconnects -- to the next endpoint if the
    current one fails -- and resumes from the revision after the last one it
    delivered, so no event is lost. If etcd has compacted that history, it
    resumes from now and calls ``on_resync()`` so subscribers re-read state.

    :param client: :class:`Client`.
    :param prefix: key prefix (ending in ``/``).
    :param on_events: ``callable(list_of_(type, KV))`` with type ``'PUT'`` or
        ``'DELETE'``, called in the watch thread in revision order; it must
        be quick and must not raise (errors are logged).
    :param on_resync: ``callable()`` called after events may have been
        missed (compaction).
    """

    def __init__(self, client, prefix, on_events, on_resync=None,
                 idle_timeout=30.0, name='hacluster-watch'):
        self._client = client
        self._prefix = prefix
        self._on_events = on_events
        self._on_resync = on_resync or (lambda: None)
        self._idle_timeout = idle_timeout
        self._name = name
        self._stop = threading.Event()
        self._thread = None
        self._resp = None
        self._resp_lock = threading.Lock()
        self._next_revision = None
        self.connected = threading.Event()
        #: Number of times the stream was (re)established.
        self.connects = 0

    def start(self, start_revision):
        """Start watching from ``start_revision`` (inclusive). Returns at
        once; events arrive in the watch thread."""
        self._next_revision = start_revision
        self._thread = threading.Thread(target=self._run, name=self._name,
                                        daemon=True)
        self._thread.start()

    def stop(self):
        """Stop the watch; blocks until its thread ends (at most a few
        seconds)."""
        self._stop.set()
        self._break_stream()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _break_stream(self):
        # Closing a streaming response does not wake a thread blocked in
        # read(); shutting the socket down does. Under the lock: the watch
        # thread closes the response only after clearing self._resp, so the
        # descriptor cannot have been reused for another socket.
        with self._resp_lock:
            resp = self._resp
            if resp is None:
                return
            try:
                fd = resp.raw._fp.fileno()
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except Exception:   # already closed: nothing to wake
                pass

    def _run(self):
        from hacluster.keys import prefix_end
        backoff = 0.05
        while not self._stop.is_set():
            client = self._client.current()
            index = self._client._clients.index(client)
            request = {'create_request': {
                'key': b64(self._prefix),
                'range_end': b64(prefix_end(self._prefix)),
                'start_revision': self._next_revision,
                'progress_notify': True,
            }}
            resp = None
            try:
                if self._client.url.username and \
                        'Authorization' not in client.session.headers:
                    self._client._authenticate(client)
                self._client.requests += 1
                resp = client.session.post(
                    client.get_url('/watch'), json=request, stream=True,
                    timeout=(self._client.timeout, self._idle_timeout))
                with self._resp_lock:
                    self._resp = resp
                if self._stop.is_set():
                    break
                if resp.status_code != 200:
                    raise _Transient('HTTP %d: %s' % (resp.status_code,
                                                      resp.text[:200]))
                self._consume(resp)
                backoff = 0.05
            except Exception as exc:
                if self._stop.is_set():
                    break
                idle = isinstance(exc, (requests.exceptions.ReadTimeout,
                                        requests.exceptions.ConnectionError)) \
                    and 'Read timed out' in str(exc)
                if not idle:
                    LOG.warning('hacluster: watch on %s broke (%s); '
                                'reconnecting', self._prefix,
                                _url.scrub(exc))
                    self._client._advance(index)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 1.0)
            finally:
                self.connected.clear()
                with self._resp_lock:
                    self._resp = None
                if resp is not None:
                    try:
                        resp.close()
                    except Exception:
                        pass

    def _consume(self, resp):
        buf = b''
        for chunk in resp.iter_content(chunk_size=None):
            if self._stop.is_set():
                return
            buf += chunk
            while b'\n' in buf:
                line, buf = buf.split(b'\n', 1)
                if line.strip():
                    self._handle(json.loads(line))
        if buf.strip():
            self._handle(json.loads(buf))
        raise requests.exceptions.ConnectionError('watch stream ended')

    def _handle(self, message):
        if 'error' in message:
            raise _Transient('watch error: %s' % json.dumps(message)[:200])
        result = message.get('result', {})
        if result.get('created'):
            self.connects += 1
            self.connected.set()
            # Nothing is missed between our read and this point: the watch
            # replays from start_revision.
        if result.get('canceled'):
            compact = int(result.get('compact_revision', 0) or 0)
            if compact:
                LOG.warning('hacluster: watch on %s fell behind compaction '
                            '(revision %s); resynchronising', self._prefix,
                            compact)
                self._next_revision = compact
                self._safe(self._on_resync)
            raise requests.exceptions.ConnectionError('watch canceled')
        events = result.get('events') or []
        if events:
            decoded = [('DELETE' if e.get('type') == 'DELETE' else 'PUT',
                        KV(e['kv'])) for e in events]
            self._next_revision = decoded[-1][1].mod_revision + 1
            self._safe(self._on_events, decoded)
        header_rev = int(result.get('header', {}).get('revision', 0) or 0)
        if not events and header_rev and result.get('created') is None and \
                self._next_revision is not None:
            # A progress notification: nothing changed up to header_rev.
            self._next_revision = max(self._next_revision, header_rev + 1)

    @staticmethod
    def _safe(fn, *args):
        try:
            fn(*args)
        except Exception:
            LOG.exception('hacluster: watch callback failed')
