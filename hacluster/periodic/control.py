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

"""Cluster-wide pause and resume of periodic tasks.

Each task has a control key in etcd (:meth:`hacluster.keys.Layout.
task_control`) holding ``{"paused": bool, "by": node, "at": time}``. Every
node watches the control keys of its tasks and stops or restarts its timers
when they change, so a pause reaches every node of the cluster.
"""

import json
import time


def paused_in(kv):
    """True if a control record (a :class:`hacluster.etcd.KV`, or None for
    no record) says paused."""
    return bool(kv and kv.json().get('paused'))


class _ControlSubscriber:
    """Watch subscriber for the keys directly under one task's prefix:
    hands its control key's changes to the :class:`PauseControl`."""

    def __init__(self, control, state):
        self._control = control
        self._state = state

    def notify(self, etype, kv):
        self._control.on_event(self._state, etype, kv)

    def resync(self):
        self._control.reread(self._state)


class PauseControl:
    """The control keys of a runner's tasks.

    :param client: the coordinator's etcd client.
    :param layout: the cluster's :class:`hacluster.keys.Layout`.
    :param node: this node's name (recorded as who paused).
    :param subscribe, unsubscribe: the coordinator's watch subscription
        functions (``subscribe(prefix, subscriber)``).
    :param on_change: ``on_change(state, paused)``, called in the watch
        thread when a task's control key changes (or may have: after a
        resync); it must be quick and must not raise.

    Thread-safe for :meth:`pause` and :meth:`resume`; :meth:`watch` and
    :meth:`unwatch` are called under the runner's lock.
    """

    def __init__(self, client, layout, node, subscribe, unsubscribe,
                 on_change):
        self._client = client
        self._layout = layout
        self._node = node
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._on_change = on_change
        self._subs = []

    def pause(self, name):
        """Pause task ``name`` on every node. Blocks for one etcd request.

        :raises HAClusterError: etcd could not be reached.
        """
        self._put(name, True)

    def resume(self, name):
        """Resume task ``name`` on every node. Blocks for one etcd request.

        :raises HAClusterError: etcd could not be reached.
        """
        self._put(name, False)

    def _put(self, name, paused):
        self._client.put(self._layout.task_control(name),
                         json.dumps({'paused': paused, 'by': self._node,
                                     'at': time.time()}))

    def watch(self, state):
        """Subscribe to the control key of a task (a :class:`TaskState`),
        then read it: returns whether the task is paused now. Blocks for
        one etcd request.

        :raises HAClusterError: etcd could not be reached.
        """
        prefix = self._layout.task(state.name)
        sub = _ControlSubscriber(self, state)
        self._subscribe(prefix, sub)
        self._subs.append((prefix, sub))
        return paused_in(self._client.get(
            self._layout.task_control(state.name)))

    def unwatch(self):
        """Drop every subscription made by :meth:`watch` (no request)."""
        for prefix, sub in self._subs:
            self._unsubscribe(prefix, sub)
        self._subs = []

    def on_event(self, state, etype, kv):
        """A watch event under a task's prefix (watch thread): hand a change
        of its control key to ``on_change`` (a deleted key: not paused)."""
        if kv.key == self._layout.task_control(state.name):
            self._on_change(state, paused_in(kv if etype == 'PUT' else None))

    def reread(self, state):
        """Events may have been missed (watch thread): read a task's
        control key again and hand it to ``on_change``.

        :raises HAClusterError: etcd could not be read (the coordinator
            retries the resync until it succeeds)."""
        kv = self._client.get(self._layout.task_control(state.name))
        self._on_change(state, paused_in(kv))
