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

"""Periodic tasks under hacluster modes.

* ``leader``: runs on the cluster's leader only (backend stats);
* ``every``: runs on each node (node-local work);
* ``fanout``: the leader lists items, each live member handles the items it
  owns (a consistent hash ring), over oslo.messaging, with the cycle's state
  in etcd so that nothing is lost when a message, a member or the leader is.

See :mod:`hacluster.periodic.task` (declaring) and
:mod:`hacluster.periodic.runner` (running). Importing this package does not
import oslo.service.
"""

from hacluster.periodic.runner import PeriodicRunner
from hacluster.periodic.task import CycleContext
from hacluster.periodic.task import EVERY
from hacluster.periodic.task import FANOUT
from hacluster.periodic.task import ItemContext
from hacluster.periodic.task import LEADER
from hacluster.periodic.task import periodic_task

__all__ = ['PeriodicRunner', 'periodic_task', 'LEADER', 'EVERY', 'FANOUT',
           'CycleContext', 'ItemContext']
