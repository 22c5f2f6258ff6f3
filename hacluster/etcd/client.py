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

"""etcd's gateway over ``requests``: endpoints, fail-over, auth, errors.

What hacluster needs and etcd3gw lacks:

* several endpoints with fail-over: a request that fails for a transport
  reason (refused, timed out, 5xx such as "leader changed") is sent to the next
  endpoint; the endpoint that answered stays current;
* etcd user/password authentication through an auth token on the session;
* error translation: every requests/HTTP error leaves this module as a
  :class:`~hacluster.exceptions.HAClusterError` with the cause attached and
  the URL scrubbed.

Every call here may block for up to ``timeout`` seconds per endpoint tried;
all of it is thread-safe (requests sessions are shared, the current endpoint
is guarded by a lock) and works under eventlet (green sockets).
"""

import json
import os
import threading
import time

import requests

from hacluster.etcd.kv import b64
from hacluster.etcd.kv import KV
from hacluster.etcd.kv import range_op
from hacluster.etcd.kv import RangePage
from hacluster.etcd.kv import TxnResult
from hacluster import exceptions
from hacluster.keys import prefix_end
from hacluster import url as _url

# gRPC status codes the gateway puts in error bodies.
_GRPC_NOT_FOUND = 5
_GRPC_UNAUTHENTICATED = 16
_GRPC_INVALID_ARGUMENT = 3
_GRPC_OUT_OF_RANGE = 11


class LeaseNotFound(exceptions.SessionLost):
    """etcd does not know the lease (it expired or was revoked)."""


class Compacted(exceptions.HAClusterError):
    """A read at a revision etcd has compacted away (read again at a
    newer one)."""


# What etcd says when a token it issued is no good any more: expired
# (code 16), or issued before an RBAC change -- any user, role or
# permission change bumps the auth store's revision, and every token older
# than that is refused with code 3 until its holder logs in again.
_TOKEN_REFUSALS = ('revision of auth store is old', 'invalid auth token',
                   'user name is empty')


def token_refused(code, message):
    """True if etcd's error ``code``/``message`` means "log in again"."""
    if code == _GRPC_UNAUTHENTICATED:
        return True
    message = (message or '').lower()
    return code == _GRPC_INVALID_ARGUMENT and any(
        words in message for words in _TOKEN_REFUSALS)


class Transient(Exception):
    """An answer that another endpoint (or a later try) may not give: 5xx,
    408, "leader changed", a broken stream."""


def is_transient(exc):
    return isinstance(exc, (Transient,
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
            raise Transient('GET /version: HTTP %d' % resp.status_code)
        try:
            version = tuple(int(p) for p in
                            resp.json()['etcdserver'].split('.')[:2])
        except (KeyError, ValueError) as exc:
            raise Transient('unreadable etcd version: %s' % exc) from exc
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
        # A CA or certificate file that cannot be read is a configuration
        # error, named now rather than at the first request.
        _url.check_tls_files(backend_url)
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
        #: The highest store revision any answer of this client reported
        #: (0 before the first). The session's keep-alive answers carry it
        #: too, so it is at most about one renew_interval old while the
        #: session is healthy: a lock waiter compares it with the revision
        #: of its last read to know, with no request of its own, whether
        #: anything at all changed in etcd since (see hacluster.locks).
        self.revision = 0
        self._revision_lock = threading.Lock()
        self._on_switch = []

    @property
    def endpoints(self):
        return ['%s:%d' % ep for ep in self.url.endpoints]

    def current(self):
        """The endpoint in use (``host``, ``port``, ``session``...)."""
        with self._lock:
            return self._clients[self._current]

    def index_of(self, endpoint):
        """The position of ``endpoint`` (from :meth:`current`)."""
        return self._clients.index(endpoint)

    def advance(self, failed_index):
        """Endpoint ``failed_index`` failed: make the next one current
        (unless another caller already moved on)."""
        self._advance(failed_index)

    def ensure_token(self, endpoint):
        """Log in on ``endpoint`` if the URL has credentials and it holds
        no token yet (the watch's streaming request needs one)."""
        if self.url.username and \
                'Authorization' not in endpoint.session.headers:
            self._authenticate(endpoint)

    def forget_token(self, endpoint):
        """Drop ``endpoint``'s token (etcd refused it): the next request or
        watch on it logs in again."""
        endpoint.session.headers.pop('Authorization', None)

    def count_request(self):
        self.requests += 1

    def on_switch(self, callback):
        """Call ``callback(endpoint)`` whenever another endpoint becomes
        current. It runs in the thread whose request failed, so it must be
        quick and must not block; errors are ignored. Returns a function
        that unregisters it."""
        self._on_switch.append(callback)

        def remove():
            try:
                self._on_switch.remove(callback)
            except ValueError:
                pass
        return remove

    def _advance(self, failed_index):
        with self._lock:
            if self._current != failed_index:
                return
            self._current = (failed_index + 1) % len(self._clients)
            endpoint = self._clients[self._current]
        for callback in list(self._on_switch):
            try:
                callback(endpoint)
            except Exception:   # a listener must not fail a request
                pass

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
            raise Transient('HTTP %d: %s' % (resp.status_code,
                                             resp.text[:200]))
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
        :raises Compacted: a read at a revision etcd has compacted.
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
                    return self._seen(resp.json())
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
                if code == _GRPC_OUT_OF_RANGE and 'compacted' in message:
                    raise Compacted('etcd: %s' % message)
                if self.url.username and token_refused(code, message):
                    # The token expired, or predates an RBAC change: get a
                    # new one, try this endpoint once more.
                    client.session.headers.pop('Authorization', None)
                    self._authenticate(client, per_try)
                    resp = client.session.post(
                        client.get_url(path), json=payload, timeout=per_try)
                    if resp.status_code == 200:
                        return self._seen(resp.json())
                if resp.status_code >= 500 or resp.status_code == 408:
                    raise Transient('HTTP %d: %s' % (resp.status_code,
                                                     resp.text[:200]))
                raise exceptions.HAClusterError(
                    'etcd at %s refused %s: %s'
                    % (self._endpoint_name(index), path,
                       _url.scrub(message)))
            except exceptions.HAClusterError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise exceptions.HAClusterError(
                        'unexpected error talking to etcd at %s: %s'
                        % (self._endpoint_name(index), _url.scrub(exc)),
                        cause=exc)
                errors.append((index, exc))
                self._advance(index)
        index, last = errors[-1]
        # A TLS refusal stays "unavailable" (another endpoint may have a
        # good certificate), but says which option to fix.
        hint = _url.tls_hint(last, self.url)
        raise exceptions.BackendUnavailable(
            'no etcd endpoint answered (tried %s); last error: %s%s'
            % (', '.join(dict.fromkeys(self._endpoint_name(i)
                                       for i, _ in errors)),
               _url.scrub(last), '; ' + hint if hint else ''), cause=last)

    def _seen(self, answer):
        # Unary answers carry the header at the top; the gateway's
        # keep-alive (a stream of one message) inside "result".
        header = answer.get('header') or \
            (answer.get('result') or {}).get('header') or {}
        revision = int(header.get('revision', 0) or 0)
        if revision > self.revision:
            # Under a lock: a racing lower value must never win (it could
            # make a waiter believe nothing changed).
            with self._revision_lock:
                if revision > self.revision:
                    self.revision = revision
        return answer

    def _endpoint_name(self, index):
        host, port = self.url.endpoints[index]
        return '%s://%s:%d' % (self.url.protocol, host, port)

    # -- key-value -------------------------------------------------------

    def txn(self, compare=(), success=(), failure=(), budget=None):
        """Run a transaction; return its :class:`TxnResult` (``succeeded``
        tells which branch ran; ``kvs(i)`` the reads of that branch). With
        ``budget``, every try ends within that many seconds (see
        :meth:`call`)."""
        return TxnResult(self.call('/kv/txn', {'compare': list(compare),
                                               'success': list(success),
                                               'failure': list(failure)},
                                   budget=budget))

    def get(self, key):
        """The :class:`KV` at ``key``, or None."""
        resp = self.call('/kv/range', {'key': b64(key)})
        kvs = resp.get('kvs') or []
        return KV(kvs[0]) if kvs else None

    def get_prefix(self, prefix, sort_create=False, keys_only=False,
                   max_create_revision=None):
        """All KVs under ``prefix`` and the store revision of the read."""
        op = range_op(prefix, prefix_end(prefix), sort_create=sort_create,
                      keys_only=keys_only,
                      max_create_revision=max_create_revision)
        resp = self.call('/kv/range', op['request_range'])
        return ([KV(kv) for kv in resp.get('kvs') or []],
                int(resp['header']['revision']))

    def range_page(self, prefix, start=None, limit=0, revision=None,
                   keys_only=False):
        """One page of the keys under ``prefix``: from key ``start``
        (inclusive; default: the prefix itself) on, at most ``limit`` keys
        (0: all), in key order, read at store ``revision`` (default: now),
        without their values if ``keys_only``. Returns a
        :class:`RangePage`. Blocks for one request.

        :raises Compacted: ``revision`` has been compacted.
        :raises BackendUnavailable: no endpoint answered.
        """
        op = range_op(start if start is not None else prefix,
                      prefix_end(prefix), limit=limit, revision=revision,
                      keys_only=keys_only)
        resp = self.call('/kv/range', op['request_range'])
        return RangePage(resp, int(resp['header']['revision']))

    def count_prefix(self, prefix):
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
