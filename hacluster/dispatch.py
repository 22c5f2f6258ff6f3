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

"""The watch dispatcher: one cluster watch, many subscribers.

The coordinator holds one watch on its cluster's prefix
(:class:`hacluster.etcd.Watch`; keys from ``~`` on excepted, which get a
watch of their own while subscribed to, see
:meth:`hacluster.coordinator.Coordinator.subscribe`); the
:class:`Dispatcher` hands each event
to the :class:`hacluster.api.Subscriber` objects registered for the key's
parent prefix (the members, the leader queue, one lock's queue, a task's
control key...), and a resync to all of them.
"""

import logging
import threading

from hacluster import exceptions

LOG = logging.getLogger(__name__)


class Dispatcher:
    """Routes watch events by parent prefix. Thread-safe; :meth:`deliver`
    and :meth:`resync` run in the watch thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs = {}

    def subscribe(self, parent_prefix, subscriber):
        with self._lock:
            self._subs.setdefault(parent_prefix, set()).add(subscriber)

    def unsubscribe(self, parent_prefix, subscriber):
        with self._lock:
            subs = self._subs.get(parent_prefix)
            if subs is not None:
                subs.discard(subscriber)
                if not subs:
                    del self._subs[parent_prefix]

    def subscribers(self, parent_prefix):
        """The subscribers of ``parent_prefix`` now (a new set)."""
        with self._lock:
            return set(self._subs.get(parent_prefix, ()))

    def prefixes(self):
        """The parent prefixes that have subscribers now (a new list)."""
        with self._lock:
            return list(self._subs)

    def deliver(self, events):
        """Hand ``[(type, KV)...]`` to the subscribers of each key's parent
        prefix, in order. A subscriber that raises is logged; the others
        still get the event."""
        for etype, kv in events:
            parent = kv.key[:kv.key.rfind('/') + 1]
            with self._lock:
                subs = list(self._subs.get(parent, ()))
            for sub in subs:
                try:
                    sub.notify(etype, kv)
                except Exception:
                    LOG.exception('hacluster: subscriber %r failed on %s %s',
                                  sub, etype, kv.key)

    def resync(self, only=None):
        """Tell every subscriber (or those of ``only``) that events may
        have been missed. Returns the subscribers whose resync failed with
        an etcd error (to be retried); other failures are logged."""
        with self._lock:
            subs = [s for group in self._subs.values() for s in group]
        failed = []
        for sub in subs:
            if only is not None and sub not in only:
                continue
            try:
                sub.resync()
            except exceptions.HAClusterError:
                failed.append(sub)
            except Exception:
                LOG.exception('hacluster: subscriber %r failed to resync',
                              sub)
        return failed
