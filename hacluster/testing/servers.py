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
``_still_alive``, ``_log_tail``).  Setting one of them here (e.g.
``monkeypatch.setattr(servers, 'free_port', ...)``) rebinds it in the rig
modules holding the same object too, as when the rig was this one module.
Importing this module does not block.
"""

import sys
import types

from hacluster.testing import etcd, postgres, process, rabbitmq
from hacluster.testing.etcd import EtcdCluster, EtcdServer
from hacluster.testing.postgres import PostgresServer
from hacluster.testing.process import (LOG_TAIL_LINES, LOOPBACK,
                                       START_ATTEMPTS, ManagedServer,
                                       ServerStartError, StartCloseContext,
                                       close_all, free_port, stop_on_sigterm)
from hacluster.testing.process import (  # noqa: F401 (used as servers.X)
    _Child, _descendants, _group_members, _log_tail, _still_alive)
from hacluster.testing.rabbitmq import RabbitMQServer

__all__ = [
    'EtcdCluster', 'EtcdServer', 'LOG_TAIL_LINES', 'LOOPBACK',
    'ManagedServer', 'PostgresServer', 'RabbitMQServer', 'START_ATTEMPTS',
    'ServerStartError', 'StartCloseContext', 'close_all', 'free_port',
    'stop_on_sigterm',
]
_PARTS = (process, etcd, rabbitmq, postgres)
_MISSING = object()


class _CompatModule(types.ModuleType):
    """This module; setting a name it shares with the rig modules (the
    same object) rebinds it there too."""

    def __setattr__(self, name, value):
        old = vars(self).get(name, _MISSING)
        if old is not _MISSING:
            for part in _PARTS:
                if vars(part).get(name, _MISSING) is old:
                    setattr(part, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _CompatModule
