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

"""Small helpers shared by the functional tests."""

import os

from hacluster.testing.process import wait_for  # noqa: F401

RECOVERY_WORKER = os.path.join(os.path.dirname(__file__), 'recoveryworker.py')


def start_recovery_worker(workers, etcd, cluster, node, store, *args):
    """A recoveryworker.py process (see its doc for the modes)."""
    return workers(etcd.url, cluster, node, store, *args,
                   script=RECOVERY_WORKER)


def handled(store):
    """The recovery handler calls recorded by recoveryworker.py processes:
    ``[claim_id, resource, attempt, node, time]`` rows."""
    path = os.path.join(store, 'handled')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.strip()]
