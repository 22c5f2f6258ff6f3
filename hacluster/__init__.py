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

"""hacluster: active-active coordination for OpenStack manila-share.

Public entry points::

    hacluster.get_coordinator(backend_url, cluster, node=None, ...)
    hacluster.synchronized(*names, blocking=True, coordinator=None, ...)
    hacluster.HAClusterError (and the rest of hacluster.exceptions)

Importing hacluster starts nothing and never imports oslo.service (that would
pin the process to the eventlet backend).
"""

from hacluster.decorators import synchronized
from hacluster.exceptions import AcquireTimeout
from hacluster.exceptions import BackendUnavailable
from hacluster.exceptions import ConfigurationError
from hacluster.exceptions import HAClusterError
from hacluster.exceptions import InvalidName
from hacluster.exceptions import LockLost
from hacluster.exceptions import LockNotHeld
from hacluster.exceptions import NotLeader
from hacluster.exceptions import NotStarted
from hacluster.exceptions import OutcomeUnknown
from hacluster.exceptions import SessionLost
from hacluster.exceptions import StaleFencingToken
from hacluster.factory import get_coordinator
from hacluster.factory import get_default
from hacluster.factory import set_default
from hacluster.version import __version__

__all__ = [
    'get_coordinator', 'get_default', 'set_default', 'synchronized',
    'HAClusterError', 'AcquireTimeout', 'BackendUnavailable',
    'ConfigurationError', 'InvalidName', 'LockLost', 'LockNotHeld',
    'NotLeader', 'NotStarted', 'OutcomeUnknown', 'SessionLost',
    'StaleFencingToken',
    '__version__',
]
