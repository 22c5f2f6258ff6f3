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

"""A prefix watch on etcd that survives broken streams.

:class:`Watch` holds one streaming ``/watch`` request open in a thread and
reconnects from the last revision it delivered (etcd3gw's watch silently
dies when its stream breaks).
"""

import json
import logging
import os
import socket
import threading

import requests

from hacluster import backoff as _backoff
from hacluster.etcd.client import Transient
from hacluster.etcd.kv import b64
from hacluster.etcd.kv import KV
from hacluster.keys import prefix_end
from hacluster import url as _url

LOG = logging.getLogger(__name__)

# The gateway passes Grpc-Metadata-* headers on as gRPC metadata: with
# "hasleader", etcd cancels the watch when its member has no raft leader
# (what clientv3.WithRequireLeader does).
_REQUIRE_LEADER = {'Grpc-Metadata-hasleader': 'true'}


class Watch:
    """Watch every key under a prefix, reconnecting as needed.

    One background thread holds a streaming ``/v3/watch`` request open. When
    the stream breaks (member killed, restarted, network cut, or silence for
    ``idle_timeout`` seconds), it reconnects -- to the next endpoint if the
    current one fails -- and resumes from the revision after the last one it
    delivered, so no event is lost. If etcd has compacted that history, it
    resumes from now and calls ``on_resync()`` so subscribers re-read state.

    A member that freezes (a stopped process, a stalled disk, a half-open
    connection) sends nothing, not even an error, and an idle stream looks
    the same. So the watch follows the client: when any request fails over
    to another endpoint (the session renews every ``renew_interval``, so a
    frozen member is noticed within about ``renew_interval`` plus one
    request timeout), a watch on an endpoint that is no longer current is
    broken and opened again on the current one. It also asks etcd to
    cancel it when its member loses the raft leader (gRPC metadata
    ``hasleader``), so a member cut off from its peers cannot keep feeding
    a stale, silent stream.

    :param client: :class:`Client`.
    :param prefix: key prefix (ending in ``/``).
    :param range_end: the end of the watched range (exclusive), to watch
        ``[prefix, range_end)`` instead of every key under ``prefix``.
    :param on_events: ``callable(list_of_(type, KV))`` with type ``'PUT'`` or
        ``'DELETE'``, called in the watch thread in revision order; it must
        be quick and must not raise (errors are logged).
    :param on_resync: ``callable()`` called after events may have been
        missed (compaction).
    """

    def __init__(self, client, prefix, on_events, on_resync=None,
                 idle_timeout=30.0, name='hacluster-watch', range_end=None):
        self._client = client
        self._prefix = prefix
        self._range_end = prefix_end(prefix) if range_end is None else \
            (range_end.encode('utf-8') if isinstance(range_end, str)
             else range_end)
        self._on_events = on_events
        self._on_resync = on_resync or (lambda: None)
        self._idle_timeout = idle_timeout
        self._name = name
        self._stop = threading.Event()
        self._thread = None
        self._resp = None
        self._resp_lock = threading.Lock()
        self._next_revision = None
        self._endpoint = None
        self._moving = False
        self.connected = threading.Event()
        #: Number of times the stream was (re)established.
        self.connects = 0
        #: Number of times the stream moved because the client switched
        #: endpoints.
        self.follows = 0
        self._unsubscribe = client.on_switch(self._client_switched)

    def start(self, start_revision):
        """Start watching from ``start_revision`` (inclusive). Returns at
        once; events arrive in the watch thread."""
        self._next_revision = start_revision
        self._thread = threading.Thread(target=self._run, name=self._name,
                                        daemon=True)
        self._thread.start()

    def stop(self, wait=True):
        """Stop the watch; blocks until its thread ends (at most a few
        seconds) unless ``wait`` is False (then :meth:`join` waits)."""
        self._stop.set()
        self._unsubscribe()
        self._break_stream()
        if wait:
            self.join()

    def join(self, timeout=5.0):
        """Wait up to ``timeout`` s for the thread of a stopped watch to
        end."""
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _client_switched(self, endpoint):
        # Runs in whichever thread saw its request fail (often the session's
        # renewal): only break the stream here, the watch thread reconnects.
        if self._endpoint is not None and self._endpoint is not endpoint:
            self._moving = True
            self._break_stream()

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
        backoff = 0.05
        while not self._stop.is_set():
            self._moving = False
            client = self._client.current()
            self._endpoint = client
            index = self._client.index_of(client)
            request = {'create_request': {
                'key': b64(self._prefix),
                'range_end': b64(self._range_end),
                'start_revision': self._next_revision,
                'progress_notify': True,
            }}
            resp = None
            try:
                self._client.ensure_token(client)
                self._client.count_request()
                resp = client.session.post(
                    client.get_url('/watch'), json=request, stream=True,
                    headers=_REQUIRE_LEADER,
                    timeout=(self._client.timeout, self._client.timeout))
                with self._resp_lock:
                    self._resp = resp
                if self._stop.is_set():
                    break
                if self._client.current() is not client:
                    # The client moved on while this stream was opening.
                    self._moving = True
                    raise Transient('the client switched endpoints')
                # A healthy member answers a watch at once, so the headers
                # had to come within one request timeout (a frozen member
                # is left as soon as a request would leave it); from now
                # on silence is normal, up to idle_timeout.
                _set_read_timeout(resp, self._idle_timeout)
                if resp.status_code != 200:
                    raise Transient('HTTP %d: %s' % (resp.status_code,
                                                     resp.text[:200]))
                self._consume(resp)
                backoff = 0.05
            except Exception as exc:
                if self._stop.is_set():
                    break
                if self._moving:
                    self._moving = False
                    self.follows += 1
                    LOG.info('hacluster: watch on %s follows the client to '
                             '%s', self._prefix, _url.scrub(
                                 self._client.current().base_url))
                    continue
                idle = isinstance(exc, (requests.exceptions.ReadTimeout,
                                        requests.exceptions.ConnectionError)) \
                    and 'Read timed out' in str(exc)
                if not idle:
                    LOG.warning('hacluster: watch on %s broke (%s); '
                                'reconnecting', self._prefix,
                                _url.scrub(exc))
                    self._client.advance(index)
                    self._stop.wait(_backoff.jittered(backoff))
                    backoff = _backoff.doubled(backoff, 1.0)
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
            raise Transient('watch error: %s' % json.dumps(message)[:200])
        result = message.get('result', {})
        if result.get('created') and not result.get('canceled'):
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
            reason = result.get('cancel_reason') or 'no reason given'
            if not compact and self._endpoint is not None:
                # Canceled at creation: most often etcd refusing the token
                # the stream was opened with (expired, or older than an
                # RBAC change); the next attempt logs in again.
                self._client.forget_token(self._endpoint)
            raise requests.exceptions.ConnectionError(
                'watch canceled: %s' % reason)
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


def _set_read_timeout(resp, seconds):
    """Give the socket under a streaming ``requests`` response a new read
    timeout (requests applies one timeout to the headers and to every later
    read). Best effort: if the layout of urllib3/http.client is not the one
    expected, the shorter timeout stays and an idle watch just reconnects
    more often."""
    try:
        resp.raw._fp.fp.raw._sock.settimeout(seconds)
    except AttributeError:
        LOG.debug('hacluster: cannot lengthen the watch read timeout')
