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

"""``hacluster.synchronized``: manila's lock decorator, distributed.

A driver switches from ``manila.utils.synchronized(name, external=True)`` or
``manila.coordination.synchronized(name)`` by changing one import::

    from hacluster import synchronized

    @synchronized('{share.id}-{f_name}')
    def extend_share(self, share, new_size): ...

Lock names are ``str.format`` templates over the decorated function's
arguments (by name, defaults applied) plus ``f_name``. With several names the
locks are taken in sorted order (so two callers never deadlock by taking the
same pair in opposite orders) and released in reverse.

Where the locks live: the ``coordinator`` argument (a coordinator, or a
callable returning one, e.g. ``lambda: driver.coordinator``), else the default
set with :func:`hacluster.factory.set_default`, else -- no coordinator
configured -- oslo.concurrency locks, external (file) locks with
``external=True``, in ``[oslo_concurrency] lock_path``: the same lock files
manila's own ``utils.synchronized`` uses when given the same prefix.

Unlike cinder's coordination decorator, a lock that cannot be taken in time
raises :class:`~hacluster.exceptions.AcquireTimeout`; the function never runs
unlocked.
"""

import functools
import inspect
import string
import time

import logging

from hacluster import exceptions
from hacluster import factory as _factory
from hacluster import locks as _locks

LOG = logging.getLogger(__name__)


def _template_fields(template):
    fields = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field:
            fields.add(field.split('.')[0].split('[')[0])
    return fields


#: The prefix manila's cluster lock names carry (``ha_lock``, the swapped
#: ``utils.synchronized``): the lock file prefix of manila's own locks.
MANILA_PREFIX = 'manila-'


def synchronized(*names, blocking=True, coordinator=None, external=True,
                 shared=False, lock_file_prefix=None):
    """Decorate a function so it runs holding the named lock(s).

    :param names: one or more lock name templates, e.g.
        ``'{share.id}-{f_name}'``.
    :param blocking: True (wait as long as it takes), False (fail at once
        if held) or seconds to wait at most.
    :param coordinator: a coordinator or a callable returning one (or
        None); see the module doc for the fall-back.
    :param external: for the oslo.concurrency fall-back only: an external
        (file) lock, shared with other processes, or an in-process one.
    :param shared: take the locks shared (read) instead of exclusive.
    :param lock_file_prefix: for the fall-back only: oslo.concurrency's lock
        file prefix (``'manila-'`` gives the files manila's own
        ``utils.synchronized`` uses).
    :raises ConfigurationError: at decoration time, if no name is given, a
        template names an argument the function does not have, or
        ``blocking`` is invalid.

    The wrapped function raises :class:`AcquireTimeout` when a lock is not
    taken in time (it does not run), and :class:`BackendUnavailable` when
    etcd cannot be reached.
    """
    if not names:
        raise exceptions.ConfigurationError(
            'synchronized() needs at least one lock name')
    for name in names:
        if not isinstance(name, str):
            raise exceptions.ConfigurationError(
                'synchronized() lock names must be strings, got %r' % (name,))
    timeout = _locks.parse_blocking(blocking)

    def decorator(func):
        sig = inspect.signature(func)
        params = set(sig.parameters) | {'f_name'}
        for name in names:
            missing = _template_fields(name) - params
            if missing:
                raise exceptions.ConfigurationError(
                    'lock name template %r of %s uses %s, which %s has no '
                    'argument named so' % (name, func.__qualname__,
                                           ', '.join(sorted(missing)),
                                           func.__name__))

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            values['f_name'] = func.__name__
            lock_names = sorted({n.format(**values) for n in names})
            coord = coordinator() if callable(coordinator) and \
                not hasattr(coordinator, 'get_lock') else coordinator
            if coord is None:
                coord = _factory.get_default()
            if coord is None:
                prefix, oslo_names = lock_file_prefix, lock_names
                if prefix is None and all(n.startswith(MANILA_PREFIX)
                                          for n in lock_names):
                    # 'manila-X' is the cluster lock of manila's own
                    # utils.synchronized('X'): without a cluster, take the
                    # very lock manila's call site takes (oslo keys its
                    # in-process lock by the bare name and the prefix), so
                    # the two exclude each other within a process too.
                    prefix = MANILA_PREFIX
                    oslo_names = [n[len(MANILA_PREFIX):] for n in lock_names]
                return _run_oslo(func, args, kwargs, oslo_names, timeout,
                                 external, prefix)
            held = []
            try:
                for lock_name in lock_names:
                    lock = coord.get_lock(lock_name, shared=shared)
                    if not lock.acquire(True if timeout is None
                                        else timeout):
                        raise exceptions.AcquireTimeout(
                            'could not acquire lock %r for %s within %s'
                            % (lock_name, func.__qualname__,
                               'no wait (blocking=False)' if timeout == 0
                               else '%ss' % timeout))
                    held.append(lock)
                return func(*args, **kwargs)
            finally:
                for lock in reversed(held):
                    try:
                        if not lock.release():
                            # The function ran (partly) unprotected: say so
                            # loudly; its result stands, it cannot be undone
                            # here.
                            LOG.error('hacluster: lock %r was lost while %s '
                                      'ran (%s); its critical section was '
                                      'not protected to the end',
                                      lock.name, func.__qualname__,
                                      lock.lost_reason)
                    except exceptions.LockNotHeld:
                        pass
        return wrapper
    return decorator


def _run_oslo(func, args, kwargs, lock_names, timeout, external, prefix):
    """Run ``func`` under oslo.concurrency locks (no coordinator)."""
    from oslo_concurrency import lockutils
    from oslo_config import cfg

    held = []
    try:
        for lock_name in lock_names:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                cm = lockutils.lock(lock_name, lock_file_prefix=prefix,
                                    external=external,
                                    blocking=timeout is None)
                try:
                    cm.__enter__()
                except cfg.RequiredOptError as exc:
                    raise exceptions.ConfigurationError(
                        'no coordinator is configured, and the fall-back '
                        'external lock %r needs [oslo_concurrency] lock_path '
                        '(or OSLO_LOCK_PATH) to be set' % lock_name,
                        cause=exc) from exc
                except lockutils.AcquireLockFailedException:
                    # oslo.concurrency blocks forever or not at all: retry
                    # until our own deadline.
                    if time.monotonic() >= deadline:
                        raise exceptions.AcquireTimeout(
                            'could not acquire local lock %r for %s within '
                            '%ss' % (lock_name, func.__qualname__, timeout))
                    time.sleep(0.01)
                    continue
                held.append(cm)
                break
        return func(*args, **kwargs)
    finally:
        for cm in reversed(held):
            cm.__exit__(None, None, None)
