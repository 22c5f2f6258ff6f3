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

"""Lock audit for share drivers going active-active.

A driver that runs on several manila-share nodes at once must not rely on a
lock that only excludes threads or processes of *one* node. This package finds
every lock site in Python source -- by parsing it with :mod:`ast`; the audited
code is never imported or run -- and says what to do with each.

What is a lock site (names are resolved through the module's imports, so
``from manila import utils as u`` then ``@u.synchronized(...)`` is found, and
an unrelated ``zfs_utils.synchronized`` is not):

* ``manila.utils.synchronized`` -- oslo.concurrency's ``synchronized`` with
  the ``manila-`` prefix; ``external`` is keyword-only there and defaults to
  False;
* ``oslo_concurrency.lockutils.synchronized``, ``.lock``, ``.external_lock``,
  ``.internal_lock``, and what ``lockutils.synchronized_with_prefix(...)`` /
  ``lockutils.lock_with_prefix(...)`` return when assigned to a name in the
  same module (``synchronized = lockutils.synchronized_with_prefix('x-')``);
* ``manila.coordination.synchronized`` and ``manila.coordination.Lock``
  (tooz), ``hacluster.synchronized``, and ``HAShareDriverMixin.ha_lock``
  (any call of an attribute named ``ha_lock``: ``self.ha_lock(...)``);
* ``threading.Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore`` and
  ``Condition``.

Per site: kind -- ``external`` (oslo file lock: ``external=True``),
``internal`` (oslo in-process lock), ``distributed`` (coordination or
hacluster), ``threading``; usage -- ``decorator``, ``context`` (the
expression of a ``with``) or ``call`` (anything else: assigned, passed,
called); the lock name as written, rebuilt from concatenation, ``%``,
``.format()``, ``'-'.join([...])`` and f-strings, each dynamic part shown as
``{expression}`` (``{...}`` when the expression is longer than 40
characters). A name that is a bare local variable is shown as the value it
was assigned (``key = "nfs-%s" % ...`` then ``synchronized(key)`` shows
``nfs-{...}``). ``where`` is the decorated function for a decorator, else the
innermost enclosing function or class, dotted (``Driver.method.inner``), or
``<module>``. ``runtime`` is the lock the site takes in manila-share
under :class:`hacluster.manila.manager.HAShareManager` with etcd
(:mod:`hacluster.audit.runtime` has the rules): ``etcd <name>`` -- a
cluster lock --, ``file <name>`` or ``in-process <name>`` -- node-local --,
``coordinator <name>`` (a hacluster lock on the coordinator given).

Verdicts, one per site, with a one-line reason. First what the HA manager
does to the lock:

``swapped``
    manila's ``utils.synchronized`` looked up on the module when the code
    naming it runs -- the nested decorators manila's drivers use: the HA
    manager replaces it with the cluster lock ``manila-<name>``. Not one
    applied at import (a method's decorator), in ``__init__`` (before the
    manager joined) or bound by ``from manila.utils import synchronized``.
``rewrapped``
    an import-time decorator of
    :data:`hacluster.manila.locks.IMPORT_TIME_LOCKS`, which the manager
    decorates again with the cluster lock of the same name.
``already-distributed``
    every coordination lock (the manager replaces manila's lock
    coordinator: ``manila-<name>``), ``ha_lock`` (``manila-<name>``) and
    hacluster lock (its name as given; a cluster lock where a default
    coordinator is set -- the HA manager sets it -- or one is passed, an
    oslo.concurrency lock anywhere else: the reason says so).

Then, for a lock that stays node-local:

``keep``
    an in-process lock whose guarded code only touches this process's own
    objects. Guarded code is the decorated function or the ``with`` block of
    an oslo internal lock, or every ``with`` block using a threading lock
    stored in a name or a ``self`` attribute. "Own objects" means: no calls
    but builtins, logging, ``threading``/``time``/``copy`` helpers and
    container methods on names the module assigns a container to (``{}``,
    ``[]``, ``set()``, ...); or a lazy one-time set-up (``if not self._x:
    self._x = ...``), which each process does for itself. An external lock is
    kept only when the HA manager leaves it node-local on purpose
    (:data:`hacluster.audit.runtime.LOCAL_ON_PURPOSE`: it guards this
    host's own state); otherwise it exists to exclude other processes.
``review`` (cannot tell)
    a threading lock that guards anything else (it is an object, not a
    name: no mechanical replacement), that is acquired by hand, stored in a
    container or passed around, or made anew in a ``with``; an oslo lock
    whose name is built from something other than the arguments (bar
    ``self``/``cls``) of the function the name is evaluated in -- instance
    state like ``self.tag``, a global, a local assigned more than once: is
    it the same on every node for the same resource?; an in-process oslo
    lock with a fixed name outside driver code (it may guard a per-process
    client session rather than backend state); ``external=`` given as a
    non-literal. A swapped lock is ``review`` too when its name is built
    so: it is a cluster lock, the question about its name stays.
``replace``
    every other oslo lock: an external (file) lock, which only excludes
    processes of this node; an in-process lock in driver code (in a class
    whose name ends in ``Driver``, or in a method named like a manila
    ``ShareDriver`` operation) or named after a resource (from arguments):
    it guards backend or DB state that other nodes change too.
``error``
    not a lock: a file that could not be read, decoded or parsed; a row with
    an empty kind, the line of the syntax error (else 0) and the reason.

A name is evaluated where Python evaluates it: a decorator's in the scope
around the decorated function, so a nested function's lock may be named
from its enclosing function's arguments (the decorator runs at each call).
Plain single assignments are followed (``key = "x-%s" % args[0]``).

Sites that share a fixed name exclude each other (oslo's in-process locks
are keyed by the name alone), so the node-local ones get one verdict: the
strictest of theirs (replace, then review, then keep), and say so; when one
of them is a cluster lock under the HA manager (swapped, re-wrapped), every
node-local one is ``replace``: it must take that cluster lock too. Where
locks of different kinds share a name the reasons say whether they exclude
each other: under the HA manager, when they take the same cluster lock (a
swapped lock and a coordination lock of one name do; manila's own manager
excludes nothing between an oslo and a tooz lock); a node-local lock
never excludes a cluster lock; ``hacluster.synchronized('x')`` is not
manila's ``x`` (that is ``manila-x``).

Suggestions, for ``replace`` and ``review`` node-local oslo sites, always
take the cluster lock ``manila-`` + the name as written -- the one manila's
own locks take under the HA manager, so sites that excluded each other
still do: for a decorator, ``hacluster.synchronized('manila-...')`` with
the literal name as a template (braces doubled), or else ``'manila-' +``
the same name expression (evaluated at each call of the enclosing
function; its value must not contain braces, which hacluster would read as
a template field); ``external=False`` is kept so that hacluster's
no-coordinator fall-back stays in-process. For a ``with`` in a method of a
share driver class (named ``...Driver``, or based on ``...ShareDriver`` or
``HAShareDriverMixin``), ``with self.ha_lock(<name>)`` (which adds the
prefix, and is manila's own file lock in single-node mode); elsewhere,
when the name is built from the function's own arguments,
``hacluster.synchronized('manila-<{arg} template>')`` on that function
(all of it), else ``hacluster.synchronized('manila-' + <name>)`` on a
nested function holding the block. :func:`fix_source` applies the
decorator suggestions of ``replace`` sites, and the ``self.ha_lock`` ones
in a driver that mixes in ``HAShareDriverMixin``.

Limits: a lock factory imported from another module of the driver, a lock
made by a driver's own helper, and locks from other libraries (eventlet,
fasteners, multiprocessing) are not seen; wrappers such as manila's
``nfs_synchronized`` are seen once, where they call ``utils.synchronized``.

The stages, one module each, in the order an audit runs them:

* :mod:`hacluster.audit.sources` -- finding the ``*.py`` files, reading,
  decoding and parsing them; a file that fails is an ``error`` site;
* :mod:`hacluster.audit.calls` -- import aliases, which calls are locks,
  and the walk, scope by scope, that makes each lock call a site;
* :mod:`hacluster.audit.scopes` -- scopes and what binds each name;
* :mod:`hacluster.audit.naming` -- lock names rebuilt and shown;
* :mod:`hacluster.audit.runtime` -- what the HA manager makes of a lock;
* :mod:`hacluster.audit.guarded` -- whether guarded code stays in-process;
* :mod:`hacluster.audit.rules` -- the verdicts above, per lock family;
* :mod:`hacluster.audit.suggestions` -- the suggestions and the fix diff;
* :mod:`hacluster.audit.results` -- sites and rows, one verdict per shared
  name, the summary.

The names below are the package's interface. All its functions are pure
(source text in, data out) except :func:`audit_file` and
:func:`audit_paths`, which read files; none writes.
"""

from hacluster.audit.results import COLUMNS
from hacluster.audit.results import KINDS
from hacluster.audit.results import Site
from hacluster.audit.results import summarize
from hacluster.audit.results import unify
from hacluster.audit.results import VERDICTS
from hacluster.audit.sources import audit_file
from hacluster.audit.sources import audit_paths
from hacluster.audit.sources import audit_source
from hacluster.audit.sources import error_site
from hacluster.audit.sources import python_files
from hacluster.audit.suggestions import fix_diff
from hacluster.audit.suggestions import FIX_IMPORT
from hacluster.audit.suggestions import fix_source

__all__ = ['COLUMNS', 'KINDS', 'VERDICTS', 'FIX_IMPORT', 'Site',
           'audit_source', 'audit_file', 'audit_paths', 'python_files',
           'error_site', 'unify', 'summarize', 'fix_source', 'fix_diff']
