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

"""What a lock site is at run time under the HA share manager.

:class:`hacluster.manila.manager.HAShareManager`, clustered, changes three
things about the locks of the code manila-share runs
(:mod:`hacluster.manila.locks`), and the audit judges a site by the lock it
will take there, not by the lock it names:

* **call time**: ``manila.utils.synchronized`` is looked up on the module
  when the code naming it runs, and the manager replaces it on the module
  with a cluster lock (``manila-<name>`` in etcd). A decorator evaluated
  inside a function -- the nested ``@utils.synchronized(...)`` manila's
  drivers use -- is therefore a cluster lock once the manager started; one
  evaluated at import (a method's decorator) or in ``__init__`` (manila
  builds the driver before the manager joins the cluster) captured the
  file lock for good, and so did a name imported with ``from manila.utils
  import synchronized``. manila's coordination locks
  (``coordination.synchronized``/``Lock``) look up manila's lock
  coordinator at each use, which the manager replaces too:
  ``manila-<name>`` in etcd as well. ``HAShareDriverMixin.ha_lock(name)``
  takes ``manila-<name>``.
* **import time, re-wrapped**: for the import-time decorators of
  :data:`hacluster.manila.locks.IMPORT_TIME_LOCKS` (cluster-wide state
  manila's own network helpers guard) the manager decorates the method
  again, with the cluster lock of the same name.
* **local on purpose**: :data:`LOCAL_ON_PURPOSE` -- import-time locks on
  this host's own state, left node-local.

Every other oslo.concurrency lock stays what it is: a file lock or an
in-process lock of this node. The cluster lock a replacement must take is
``manila-`` + the name as written (:func:`cluster_name`), the name manila's
own swapped locks, its coordination locks and ``ha_lock`` use: two sites
that shared a name keep excluding each other (oslo's in-process locks are
keyed by the name alone, whatever the file prefix, so prefixes are not
part of it).

``hacluster.synchronized`` without ``coordinator=`` is a cluster lock only
in a process with a default coordinator: the HA manager sets it
(:func:`hacluster.factory.set_default`) when it joins clustered; anywhere
else it is an oslo.concurrency lock (a file lock unless
``external=False``). Its name is used as given: no prefix.
"""

import os

from hacluster.manila import locks as _locks

#: The prefix of manila's lock names (hacluster.manila.locks.PREFIX).
PREFIX = _locks.PREFIX

#: ``(module, class, method, lock name, why)``: import-time locks the HA
#: manager leaves node-local on purpose (see hacluster.manila.locks).
LOCAL_ON_PURPOSE = (
    ('manila.share.drivers.service_instance', 'NeutronNetworkHelper',
     '_plug_interface_in_host', 'service_instance_plug_interface_in_host',
     'it plugs a network interface into this host, whose interfaces are '
     'its own'),
)


def cluster_name(name):
    """The cluster lock (etcd) manila's own call sites take for an oslo or
    manila lock named ``name`` (as written) under the HA manager."""
    return PREFIX + name


def file_name(prefix, name):
    """oslo.concurrency's lock file name for ``name`` with
    ``lock_file_prefix`` ``prefix`` (None: no prefix)."""
    if not prefix:
        return name
    return prefix + ('' if prefix.endswith('-') else '-') + name


def too_early(scope):
    """Why a lock expression evaluated in ``scope`` is evaluated before the
    HA manager swaps manila's locks (``'at import'``, ``'in __init__'``),
    or None when it is evaluated at each call of a function."""
    current = scope
    while current is not None and current.kind != 'function':
        if current.kind == 'module':
            return 'at import'
        current = current.parent
    if current is None:
        return 'at import'
    if current.name == '__init__':
        return 'in __init__'
    return None


def _module_path(filename):
    return os.path.normpath(os.path.abspath(filename)).replace(os.sep, '/')


def _matches(filename, module):
    path = _module_path(filename)
    if path.endswith('/__init__.py'):
        path = path[:-len('/__init__.py')]
    elif path.endswith('.py'):
        path = path[:-3]
    return path == '/' + module.replace('.', '/') or \
        path.endswith('/' + module.replace('.', '/'))


def _method_of(scope, function_name):
    """``(class, method)`` for a decorator on ``function_name`` evaluated
    in ``scope``, when that is the body of a top-level class."""
    if scope.kind != 'class' or scope.parent is None or \
            scope.parent.kind != 'module':
        return None
    return scope.name, function_name


def rewrapped(filename, scope, function_name, name):
    """The :data:`hacluster.manila.locks.IMPORT_TIME_LOCKS` entry the HA
    manager re-wraps this import-time decorator with, or None."""
    method = _method_of(scope, function_name)
    if method is None:
        return None
    for module, cls, meth, lock in _locks.IMPORT_TIME_LOCKS:
        if (cls, meth) == method and lock == name and \
                _matches(filename, module):
            return module, cls, meth, lock
    return None


def local_on_purpose(filename, scope, function_name, name):
    """Why the HA manager leaves this import-time decorator node-local
    (:data:`LOCAL_ON_PURPOSE`), or None."""
    method = _method_of(scope, function_name)
    if method is None:
        return None
    for module, cls, meth, lock, why in LOCAL_ON_PURPOSE:
        if (cls, meth) == method and lock == name and \
                _matches(filename, module):
            return why
    return None
