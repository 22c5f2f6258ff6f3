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

"""Private etcd, RabbitMQ and PostgreSQL servers for tests (compatibility).

The test rig lives in

* :mod:`hacluster.testing.process` -- :func:`free_port`,
  :class:`ServerStartError`, the registry closed at exit
  (:func:`close_all`, :func:`stop_on_sigterm`), process supervision
  (``_Child`` and the ``/proc`` helpers) and
  :class:`~hacluster.testing.process.ManagedServer`, the lifecycle the
  servers share;
* :mod:`hacluster.testing.etcd` -- :class:`EtcdServer`,
  :class:`EtcdCluster`;
* :mod:`hacluster.testing.rabbitmq` -- :class:`RabbitMQServer`;
* :mod:`hacluster.testing.postgres` -- :class:`PostgresServer`.

This module re-exports the names other code uses as ``servers.X``,
including private ones (``_Child``, ``_group_members``, ``_descendants``,
``_still_alive``, ``_log_tail``); to replace one in a test, patch it where
it lives (e.g. ``hacluster.testing.process.free_port``). Importing this
module does not block.
"""

from hacluster.testing.etcd import EtcdCluster
from hacluster.testing.etcd import EtcdServer
from hacluster.testing.postgres import PostgresServer
from hacluster.testing.process import close_all
from hacluster.testing.process import free_port
from hacluster.testing.process import LOG_TAIL_LINES
from hacluster.testing.process import LOOPBACK
from hacluster.testing.process import ManagedServer
from hacluster.testing.process import ServerStartError
from hacluster.testing.process import START_ATTEMPTS
from hacluster.testing.process import StartCloseContext
from hacluster.testing.process import stop_on_sigterm

# (used as servers.X)
from hacluster.testing.process import _Child  # noqa: F401
from hacluster.testing.process import _descendants  # noqa: F401
from hacluster.testing.process import _group_members  # noqa: F401
from hacluster.testing.process import _log_tail  # noqa: F401
from hacluster.testing.process import _still_alive  # noqa: F401
from hacluster.testing.process import group_members  # noqa: F401
from hacluster.testing.process import log_tail  # noqa: F401
from hacluster.testing.rabbitmq import RabbitMQServer

__all__ = [
    'EtcdCluster', 'EtcdServer', 'LOG_TAIL_LINES', 'LOOPBACK',
    'ManagedServer', 'PostgresServer', 'RabbitMQServer', 'START_ATTEMPTS',
    'ServerStartError', 'StartCloseContext', 'close_all', 'free_port',
    'stop_on_sigterm',
]
