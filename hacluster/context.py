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

"""What a part of a coordinator needs of it, and nothing more.

etcd's own ``concurrency`` package has ``Mutex`` and ``Election`` take a
``Session``, not a hub. hacluster's parts (claims, recovery, membership,
locks, the periodic runner) take a :class:`Context`: the etcd client, the
session, the key layout, this member's identity, the watch dispatcher
(:meth:`subscribe`) and the fence point -- built once by the coordinator.
"""


class Context:
    """The coordinator's shared parts, as its parts see them.

    :param client: :class:`hacluster.etcd.Client`.
    :param session: :class:`hacluster.session.Session`.
    :param layout: :class:`hacluster.keys.Layout`.
    :param cluster, node, member_id: this member's identity.
    :param clock: the monotonic clock deadlines are measured on.
    :param subscribe, unsubscribe: the watch dispatcher
        (``subscribe(prefix, subscriber)``; see
        :class:`hacluster.api.Subscriber`).
    :param fence_point: callable, see
        :meth:`hacluster.coordinator.Coordinator.fence_point`.
    :param check_running: callable raising NotStarted when stopped.
    :param is_running: callable, True while the coordinator runs.
    :param compat: :class:`hacluster.protocol.ClusterCompat`: what the
        cluster's members speak (record formats to write, the fan-out RPC
        version to send at); None in contexts that write no records.

    Immutable after construction; thread-safe.
    """

    __slots__ = ('client', 'session', 'layout', 'cluster', 'node',
                 'member_id', 'clock', 'subscribe', 'unsubscribe',
                 'fence_point', 'check_running', 'is_running', 'compat')

    def __init__(self, client, session, layout, cluster, node, member_id,
                 clock, subscribe, unsubscribe, fence_point, check_running,
                 is_running, compat=None):
        self.client = client
        self.session = session
        self.layout = layout
        self.cluster = cluster
        self.node = node
        self.member_id = member_id
        self.clock = clock
        self.subscribe = subscribe
        self.unsubscribe = unsubscribe
        self.fence_point = fence_point
        self.check_running = check_running
        self.is_running = is_running
        self.compat = compat
