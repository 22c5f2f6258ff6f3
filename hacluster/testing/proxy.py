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

"""A TCP proxy a test controls: cut one node off from one server.

    with TcpProxy(etcd.client_port) as proxy:      # 127.0.0.1:proxy.port
        ... point the node at proxy.port ...
        proxy.cut()        # a partition: nothing passes, nothing is refused
        proxy.restore()

``cut()`` black-holes: connections stay open and new ones are accepted,
but no byte passes either way -- what a node behind a broken switch sees
(requests time out), not a clean ``connection refused``. The node keeps
every other connection (database, broker): it is cut off from etcd only.

Thread-safe; binds 127.0.0.1 on a free port; :meth:`close` stops it.
"""

import select
import socket
import threading

LOOPBACK = '127.0.0.1'


class TcpProxy:
    """Forward 127.0.0.1:``port`` (free, chosen here) to
    127.0.0.1:``target_port``."""

    def __init__(self, target_port, target_host=LOOPBACK):
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._passing = threading.Event()
        self._passing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs = []
        #: bytes forwarded (both ways) and connections accepted
        self.forwarded = 0
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True,
                         name='tcp-proxy-%d' % self.port).start()

    @property
    def address(self):
        return '%s:%d' % (LOOPBACK, self.port)

    def cut(self):
        """Stop passing bytes (both ways); connections are kept open."""
        self._passing.clear()

    def restore(self):
        """Pass bytes again. Connections that timed out meanwhile are the
        clients' to re-open."""
        self._passing.set()

    @property
    def is_cut(self):
        return not self._passing.is_set()

    def close(self):
        self._closed.set()
        self._passing.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept(self):
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream),
                             daemon=True).start()

    def _pump(self, a, b):
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for sock in readable:
                    # A cut holds data back instead of dropping it: what
                    # is in flight arrives late if the link comes back, as
                    # TCP would deliver it -- or never, if the client gave
                    # up and closed the connection.
                    self._passing.wait()
                    if self._closed.is_set():
                        return
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
                    self.forwarded += len(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
