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
  (tooz), ``hacluster.synchronized``;
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
``<module>``.

Verdicts, one per site, with a one-line reason:

``already-distributed``
    every coordination and hacluster lock.
``keep``
    an in-process lock whose guarded code only touches this process's own
    objects. Guarded code is the decorated function or the ``with`` block of
    an oslo internal lock, or every ``with`` block using a threading lock
    stored in a name or a ``self`` attribute. "Own objects" means: no calls
    but builtins, logging, ``threading``/``time``/``copy`` helpers and
    container methods on names the module assigns a container to (``{}``,
    ``[]``, ``set()``, ...); or a lazy one-time set-up (``if not self._x:
    self._x = ...``), which each process does for itself. An external lock is
    never kept: it exists to exclude other processes.
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
    non-literal.
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

Sites that share a fixed name exclude each other, so they get one verdict:
the strictest of theirs (replace, then review, then keep), and say so. An
oslo lock and a distributed lock with the same name do not exclude each
other at all: both reasons say so.

Suggestions, for ``replace`` and ``review`` oslo sites: for a decorator,
``hacluster.synchronized`` with the literal name as a template (braces
doubled), or else with the same name expression (evaluated at each call of
the enclosing function; its value must not contain braces, which hacluster
would read as a template field); ``external=False`` is kept so that
hacluster's no-coordinator fall-back stays in-process. For a ``with``,
``coord.get_lock(<name>)`` (the block only), or, when the name is built from
the function's own arguments, ``hacluster.synchronized('<{arg} template>')``
on that function (all of it). :func:`fix_source` applies the decorator
suggestions of ``replace`` sites.

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
* :mod:`hacluster.audit.guarded` -- whether guarded code stays in-process;
* :mod:`hacluster.audit.rules` -- the verdicts above, per lock family;
* :mod:`hacluster.audit.suggestions` -- the suggestions and the fix diff;
* :mod:`hacluster.audit.results` -- sites and rows, one verdict per shared
  name, the summary.

The names below are the package's interface. All its functions are pure
(source text in, data out) except :func:`audit_file` and
:func:`audit_paths`, which read files; none writes.
"""

from hacluster.audit.results import (COLUMNS, KINDS, VERDICTS, Site,
                                     summarize, unify)
from hacluster.audit.sources import (audit_file, audit_paths, audit_source,
                                     error_site, python_files)
from hacluster.audit.suggestions import FIX_IMPORT, fix_diff, fix_source

__all__ = ['COLUMNS', 'KINDS', 'VERDICTS', 'FIX_IMPORT', 'Site',
           'audit_source', 'audit_file', 'audit_paths', 'python_files',
           'error_site', 'unify', 'summarize', 'fix_source', 'fix_diff']
