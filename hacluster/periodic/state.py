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

"""The run-time state of one periodic task on this node, shared by the
runner's roles."""

import threading

from hacluster.periodic import stats as _stats


class TaskState:
    """One added task: its declaration, its functions and how it runs here.

    ``paused`` (for the cluster: the control key) and ``stopped`` (on this
    node: :meth:`PeriodicRunner.stop_task`) change under the runner's lock
    only; ``running`` is held while a cycle of the task runs here, so that
    cycles never overlap; ``stats`` is thread-safe.
    """

    def __init__(self, spec, fn, handler):
        self.spec = spec
        self.name = spec.name
        self.fn = fn
        self.handler = handler
        #: seconds between runs (the declared default until start() reads
        #: the configuration)
        self.spacing = spec.spacing
        self.running = threading.Lock()
        self.paused = False
        self.stopped = False
        self.stats = _stats.TaskStats()
        #: the fan-out RPC version the last dispatch was sent at (the
        #: leader's pin, hacluster.protocol), or None
        self.rpc_pin = None
