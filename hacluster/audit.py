"""Lock audit for share drivers going active-active.

A driver that runs on several manila-share nodes at once must not rely on a
lock that only excludes threads or processes of *one* node. This module finds
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

All functions here are pure (source text in, data out) except
:func:`audit_file` and :func:`audit_paths`, which read files; none writes.
"""

import ast
import dataclasses
import difflib
import io
import os
import re
import string
import sys
import tokenize

COLUMNS = ('file', 'line', 'where', 'kind', 'usage', 'name', 'verdict',
           'reason', 'suggestion')
KINDS = ('external', 'internal', 'distributed', 'threading')
VERDICTS = ('replace', 'review', 'keep', 'already-distributed', 'error')

FIX_IMPORT = 'from hacluster import synchronized as ha_synchronized'
_FIX_NAME = 'ha_synchronized'

_MAX_EXPR = 40
# Sources with none of these cannot have a lock site.
_CANDIDATE = re.compile(r'synchroni|[lL]ock|Semaphore|Condition')

# Qualified name -> (family, flavour). Families: 'oslo' (flavour
# 'synchronized' or 'lock': external positional at index 2; 'prefixed-*':
# external keyword-only; 'external'/'internal': fixed), 'distributed',
# 'threading'.
_FORMS = {
    'manila.utils.synchronized': ('oslo', 'prefixed-synchronized'),
    'oslo_concurrency.lockutils.synchronized': ('oslo', 'synchronized'),
    'oslo_concurrency.lockutils.lock': ('oslo', 'lock'),
    'oslo_concurrency.lockutils.external_lock': ('oslo', 'external'),
    'oslo_concurrency.lockutils.internal_lock': ('oslo', 'internal'),
    'manila.coordination.synchronized': ('distributed', 'manila'),
    'manila.coordination.Lock': ('distributed', 'manila'),
    'hacluster.synchronized': ('distributed', 'hacluster'),
    'hacluster.decorators.synchronized': ('distributed', 'hacluster'),
    'threading.Lock': ('threading', 'Lock'),
    'threading.RLock': ('threading', 'RLock'),
    'threading.Semaphore': ('threading', 'Semaphore'),
    'threading.BoundedSemaphore': ('threading', 'BoundedSemaphore'),
    'threading.Condition': ('threading', 'Condition'),
}
_FACTORIES = {
    'oslo_concurrency.lockutils.synchronized_with_prefix':
        'prefixed-synchronized',
    'oslo_concurrency.lockutils.lock_with_prefix': 'prefixed-lock',
}

# The public methods of manila 23's ShareDriver: a lock on one of these is
# a lock on a driver operation.
_DRIVER_OPERATIONS = frozenset('''
    allocate_admin_network allocate_network allow_access
    check_for_setup_error check_update_share_server_network_allocations
    check_update_share_server_security_service
    choose_share_server_compatible_with_share
    choose_share_server_compatible_with_share_group connection_get_info
    create_backup create_backup_continue create_replica
    create_replicated_snapshot create_share create_share_from_snapshot
    create_share_group create_share_group_from_share_group_snapshot
    create_share_group_snapshot create_snapshot deallocate_network
    delete_backup delete_replica delete_replicated_snapshot delete_share
    delete_share_group delete_share_group_snapshot delete_snapshot
    deny_access do_setup ensure_share ensure_shares extend_share
    get_backend_info get_share_server_network_info get_share_server_pools
    get_share_stats get_share_status manage_existing
    manage_existing_snapshot manage_existing_snapshot_with_server
    manage_existing_with_server manage_server migration_cancel
    migration_check_compatibility migration_complete migration_continue
    migration_get_progress migration_start promote_replica restore_backup
    restore_backup_continue revert_to_replicated_snapshot revert_to_snapshot
    setup_server share_server_migration_cancel
    share_server_migration_check_compatibility
    share_server_migration_complete share_server_migration_continue
    share_server_migration_get_progress share_server_migration_start
    shrink_share snapshot_update_access teardown_server transfer_accept
    unmanage unmanage_server unmanage_snapshot unmanage_snapshot_with_server
    unmanage_with_server update_access update_admin_network_allocation
    update_network_allocation update_replica_state
    update_replicated_snapshot update_share_from_metadata
    update_share_network_subnet_from_metadata
    update_share_server_network_allocations
    update_share_server_security_service update_share_usage_size
'''.split())

_SAFE_BUILTINS = frozenset('''
    abs all any bool bytes dict divmod enumerate filter float format
    frozenset getattr hasattr hash id int isinstance issubclass iter len list
    map max min next object print range repr reversed round set setattr
    sorted str sum tuple type zip _
'''.split())
_SAFE_DOTTED_PREFIXES = ('threading.', 'time.time', 'time.monotonic',
                         'copy.copy', 'copy.deepcopy', 'collections.')
_LOGGERS = frozenset({'LOG', 'LOGGER', 'log', 'logger', 'logging', '_LOG'})
_CONTAINER_METHODS = frozenset('''
    add append clear copy count discard extend get index insert items keys
    pop popitem remove setdefault sort update values
'''.split())
_CONDITION_METHODS = frozenset({'wait', 'wait_for', 'notify', 'notify_all'})
_CONTAINER_FACTORIES = frozenset({
    'dict', 'list', 'set', 'collections.OrderedDict',
    'collections.defaultdict', 'collections.deque', 'collections.Counter',
    'OrderedDict', 'defaultdict', 'deque', 'Counter',
    'weakref.WeakValueDictionary', 'weakref.WeakKeyDictionary'})


@dataclasses.dataclass
class Site:
    """One lock site (or, with verdict ``error``, one file not audited).

    ``external`` is True/False for oslo locks (None when it is not a
    literal, and for other kinds). ``fix`` is, for a ``replace`` decorator,
    ``(lineno, col, end_lineno, end_col, text)``: the decorator call's span
    (ast positions: 1-based lines, UTF-8 byte columns) and its replacement.
    ``proposal`` is the ``(suggestion, fix)`` an oslo site gets when its
    verdict is ``replace`` or ``review`` (see :func:`unify`).
    """

    file: str
    line: int
    where: str
    kind: str
    usage: str
    name: str
    verdict: str
    reason: str
    suggestion: str = ''
    external: object = None
    fix: object = None
    proposal: object = dataclasses.field(default=None, repr=False,
                                         compare=False)

    def row(self):
        """The values of :data:`COLUMNS`, in order."""
        return tuple(getattr(self, column) for column in COLUMNS)


# -- names and scopes -------------------------------------------------------

def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return '.'.join(reversed(parts))


class _Factory:
    """A name bound to ``lockutils.*_with_prefix(...)``."""

    def __init__(self, flavour):
        self.flavour = flavour


def _aliases(nodes):
    """Map each name bound by an import (anywhere) to its qualified name;
    names bound to a prefix factory map to a :class:`_Factory`."""
    aliases = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    head = alias.name.split('.')[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == '*':
                    continue
                bound = alias.asname or alias.name
                if node.level or not node.module:
                    aliases[bound] = None      # relative: not ours to know
                else:
                    aliases[bound] = '%s.%s' % (node.module, alias.name)
    for node in nodes:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)):
            qualified = _qualify(node.value.func, aliases)
            if qualified in _FACTORIES:
                aliases[node.targets[0].id] = _Factory(
                    _FACTORIES[qualified])
    return aliases


def _qualify(func, aliases):
    dotted = _dotted(func)
    if dotted is None:
        return None
    head, _, rest = dotted.partition('.')
    target = aliases.get(head)
    if isinstance(target, _Factory):
        return target if not rest else None
    if target is None:
        return None
    return target + ('.' + rest if rest else '')


class _Scope:
    """A module, class or function, with what binds names in it."""

    def __init__(self, kind, node, name, parent=None):
        self.kind = kind
        self.node = node
        self.name = name
        self.parent = parent
        self.params = set()
        self._bindings = None
        if kind == 'function':
            args = node.args
            for arg in (args.posonlyargs + args.args + args.kwonlyargs):
                self.params.add(arg.arg)
            for arg in (args.vararg, args.kwarg):
                if arg is not None:
                    self.params.add(arg.arg)

    @property
    def qualname(self):
        names = []
        scope = self
        while scope is not None and scope.kind != 'module':
            names.append(scope.name)
            scope = scope.parent
        return '.'.join(reversed(names)) or '<module>'

    def bindings(self):
        """name -> list of assigned value nodes (None for a binding that
        is not a plain assignment: for, with-as, augmented, import...)."""
        if self._bindings is None:
            self._bindings = {}
            body = self.node.body
            for stmt in body:
                for node in _walk_no_scopes(stmt):
                    self._bind(node)
        return self._bindings

    def _bind(self, node):
        add = self._bindings.setdefault
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    add(target.id, []).append(
                        node.value if len(node.targets) == 1 else None)
                else:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            add(sub.id, []).append(None)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target,
                                                            ast.Name):
            add(node.target.id, []).append(node.value)
        elif isinstance(node, (ast.AugAssign, ast.For, ast.AsyncFor,
                               ast.NamedExpr, ast.comprehension)):
            target = node.target
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    add(sub.id, []).append(None)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    for sub in ast.walk(item.optional_vars):
                        if isinstance(sub, ast.Name):
                            add(sub.id, []).append(None)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                add((alias.asname or alias.name).split('.')[0],
                    []).append(None)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                               ast.ClassDef)):
            add(node.name, []).append(None)


def _walk_no_scopes(node):
    """ast.walk that does not enter nested functions, classes or lambdas
    (it yields their def node, not their body)."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        if current is not node and isinstance(
                current, (ast.FunctionDef, ast.AsyncFunctionDef,
                          ast.ClassDef, ast.Lambda)):
            continue
        todo.extend(ast.iter_child_nodes(current))


# -- lock names -------------------------------------------------------------

@dataclasses.dataclass
class _Dyn:
    """A dynamic part of a lock name."""

    node: ast.AST
    text: str                  # source of the expression, one line
    field: object              # str.format field for it, or None
    suffix: str = ''           # conversion and spec: '!r', ':>4'


_PERCENT = re.compile(
    r'%(?:\((?P<key>[^)]*)\))?(?P<flags>[-#0 +]*)(?P<width>\*|\d+)?'
    r'(?:\.(?P<prec>\*|\d+))?[hlL]?(?P<conv>[diouxXeEfFgGcrsa%])')


class _Names:
    """Rebuilds lock names from expressions of one module."""

    def __init__(self, source, module_scope):
        self.source = source
        self.module = module_scope
        self._lines = None

    def segment(self, node):
        """ast.get_source_segment, without splitting the source at every
        call."""
        if getattr(node, 'end_lineno', None) is None:
            return None
        if self._lines is None:
            self._lines = self.source.split('\n')
        first, last = node.lineno - 1, node.end_lineno - 1
        if first == last:
            data = self._lines[first].encode('utf-8')
            return data[node.col_offset:node.end_col_offset].decode('utf-8')
        head = self._lines[first].encode('utf-8')[node.col_offset:]
        tail = self._lines[last].encode('utf-8')[:node.end_col_offset]
        return '\n'.join([head.decode('utf-8')] + self._lines[first + 1:last]
                         + [tail.decode('utf-8')])

    def text(self, node):
        segment = self.segment(node)
        if segment is None:
            segment = ast.unparse(node)
        return ' '.join(segment.split())

    def field(self, node):
        """The str.format field for a Name/attribute/subscript chain."""
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            base = self.field(node.value)
            return None if base is None else '%s.%s' % (base, node.attr)
        if isinstance(node, ast.Subscript):
            base = self.field(node.value)
            key = node.slice
            if base is None or not isinstance(key, ast.Constant):
                return None
            if isinstance(key.value, bool):
                return None
            if isinstance(key.value, int) and key.value >= 0:
                return '%s[%d]' % (base, key.value)
            if (isinstance(key.value, str) and key.value
                    and not key.value.isdigit()
                    and not set(key.value) & set('[]{}.!:')):
                return '%s[%s]' % (base, key.value)
        return None

    def dyn(self, node, suffix=''):
        return _Dyn(node, self.text(node), self.field(node), suffix)

    def constant(self, name, scope):
        """The str a name evaluated in ``scope`` is bound to once, in the
        class body evaluating it or at module level, or None."""
        if scope.kind == 'class' and name in scope.bindings():
            values = scope.bindings()[name]
        elif _lookup(scope, name) is None:
            values = self.module.bindings().get(name)
        else:
            return None
        if values and len(values) == 1 and isinstance(values[0],
                                                      ast.Constant):
            if isinstance(values[0].value, str):
                return values[0].value
        return None

    def value(self, node, scope, suffix=''):
        """A part for a value inserted into a name: its text when it is a
        constant name, else a _Dyn."""
        if isinstance(node, ast.Name) and not suffix:
            constant = self.constant(node.id, scope)
            if constant is not None:
                return constant
        return self.dyn(node, suffix)

    def parts(self, node, scope):
        """List of str and _Dyn that, joined, make the name ``node``
        evaluates to in ``scope``."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return [node.value]
            return [self.dyn(node)]
        if isinstance(node, ast.JoinedStr):
            out = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    out.append(value.value)
                else:
                    suffix = ''
                    if value.conversion != -1:
                        suffix = '!' + chr(value.conversion)
                    if value.format_spec is not None:
                        spec = self._literal(value.format_spec)
                        if spec is None:
                            out.append(_Dyn(value.value,
                                            self.text(value.value), None))
                            continue
                        suffix += ':' + spec
                    out.append(self.value(value.value, scope, suffix))
            return out
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.parts(node.left, scope) + self.parts(node.right,
                                                             scope)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            template = self._literal(node.left)
            if template is not None:
                parsed = self._percent(template, node.right, scope)
                if parsed is not None:
                    return parsed
        if (isinstance(node, ast.Call) and isinstance(node.func,
                                                      ast.Attribute)):
            receiver = self._literal(node.func.value)
            if receiver is not None and node.func.attr == 'format':
                parsed = self._format(receiver, node, scope)
                if parsed is not None:
                    return parsed
            if (receiver is not None and node.func.attr == 'join'
                    and len(node.args) == 1 and not node.keywords
                    and isinstance(node.args[0], (ast.List, ast.Tuple))):
                out = []
                for i, element in enumerate(node.args[0].elts):
                    if i:
                        out.append(receiver)
                    out.extend(self.parts(element, scope))
                return out
        return [self.value(node, scope)]

    def _literal(self, node):
        """The str a node is, when it is made of constants only."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr) and all(
                isinstance(v, ast.Constant) for v in node.values):
            return ''.join(v.value for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._literal(node.left), self._literal(node.right)
            if left is not None and right is not None:
                return left + right
        return None

    def _percent(self, template, right, scope):
        if isinstance(right, ast.Tuple):
            values = list(right.elts)
        else:
            values = [right]
        out, position, index = [], 0, 0
        for match in _PERCENT.finditer(template):
            out.append(template[position:match.start()])
            position = match.end()
            conv, key = match.group('conv'), match.group('key')
            if conv == '%':
                out.append('%')
                continue
            if match.group('width') == '*' or match.group('prec') == '*':
                return None
            spec = (match.group('flags') or '') + (match.group('width') or '')
            if match.group('prec'):
                spec += '.' + match.group('prec')
            if key is not None:
                if isinstance(right, ast.Dict):
                    value = None
                    for k, v in zip(right.keys, right.values):
                        if isinstance(k, ast.Constant) and k.value == key:
                            value = v
                    if value is None:
                        return None
                    part = self.dyn(value)
                else:
                    text = '%s[%r]' % (self.text(right), key)
                    base = self.field(right)
                    field = None
                    if base is not None and key and not key.isdigit() and \
                            not set(key) & set('[]{}.!:'):
                        field = '%s[%s]' % (base, key)
                    part = _Dyn(right, text, field)
            else:
                if index >= len(values):
                    return None
                value = values[index]
                index += 1
                if conv == 's' and not spec:
                    part = self.value(value, scope)
                    if isinstance(part, str):
                        out.append(part)
                        continue
                part = self.dyn(value)
            if conv == 'r':
                part.suffix = '!r'
            elif spec or conv not in 'sdi':
                # printf and format specs differ (alignment, %x...): show
                # the part, but do not turn it into a template field.
                part.field = None
            out.append(part)
        out.append(template[position:])
        if index != len(values) and not isinstance(right, ast.Dict) and \
                isinstance(right, ast.Tuple):
            return None
        return [p for p in out if p != '']

    def _format(self, template, call, scope):
        out, auto = [], 0
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        try:
            pieces = list(string.Formatter().parse(template))
        except ValueError:
            return None
        for literal, field, spec, conv in pieces:
            if literal:
                out.append(literal)
            if field is None:
                continue
            match = re.match(r'([^.\[]*)(.*)$', field)
            head, accessor = match.group(1), match.group(2)
            if head == '':
                head, auto = str(auto), auto + 1
            if head.isdigit():
                if int(head) >= len(call.args):
                    return None
                value = call.args[int(head)]
            elif head in keywords:
                value = keywords[head]
            else:
                return None
            if isinstance(value, ast.Starred):
                return None
            base = self.field(value)
            text = self.text(value)
            if accessor:
                text += re.sub(r'\[([^\]]*)\]',
                               lambda m: '[%s]' % (
                                   m.group(1) if m.group(1).isdigit()
                                   else repr(m.group(1))), accessor)
            suffix = ('!' + conv if conv else '') + (':' + spec if spec
                                                     else '')
            out.append(_Dyn(value, text,
                            None if base is None else base + accessor,
                            suffix))
        return out


def _lookup(scope, name):
    """The function scope binding ``name`` as seen from ``scope`` (class
    scopes are skipped, as Python does for code inside functions), or
    None for a global/builtin."""
    current = scope
    while current is not None and current.kind != 'module':
        if current.kind == 'function' and (
                name in current.params or name in current.bindings()):
            return current
        current = current.parent
    return None


def _show(parts):
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            text = part.text if len(part.text) <= _MAX_EXPR else '...'
            out.append('{%s}' % text)
    return ''.join(out)


def _template(parts):
    """The hacluster template for ``parts``, or None."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part.replace('{', '{{').replace('}', '}}'))
        elif part.field is None:
            return None
        else:
            out.append('{%s%s}' % (part.field, part.suffix))
    return ''.join(out)


def _origin(parts, scope, depth=0):
    """Why a name is not derived from arguments: None when every name in
    its dynamic parts is an argument (not self/cls) of the function it is
    evaluated in (following plain local assignments), else a short
    explanation naming the first culprit."""
    for part in parts:
        if isinstance(part, str):
            continue
        for node in ast.walk(part.node):
            if not isinstance(node, ast.Name):
                continue
            why = _name_origin(node.id, scope, depth)
            if why:
                return why
    return None


def _name_origin(name, scope, depth):
    owner = _lookup(scope, name)
    if owner is None:
        if name in _SAFE_BUILTINS:
            return None
        return '%s, a global' % name
    if name in owner.params:
        if name in ('self', 'cls'):
            return '%s, instance state' % name
        return None
    values = owner.bindings().get(name, [])
    if depth < 5 and len(values) == 1 and values[0] is not None:
        return _origin([_Dyn(values[0], '', None)], owner, depth + 1)
    return '%s, a local variable' % name


# -- guarded code -----------------------------------------------------------

def _containers(nodes):
    """Names and attribute names the module assigns containers to."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if not _is_container(value):
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
    return names


def _is_container(value):
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp,
                          ast.ListComp, ast.SetComp)):
        return True
    return isinstance(value, ast.Call) and \
        _dotted(value.func) in _CONTAINER_FACTORIES


def _receiver_name(node):
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class _Guard:
    """Decides whether guarded code only touches in-process objects."""

    def __init__(self, names, containers):
        self.names = names
        self.containers = containers

    def first_outside_call(self, statements):
        """The first call (line, text) in ``statements`` that may reach
        beyond this process, or None."""
        skip = set()
        for statement in statements:
            for node in ast.walk(statement):
                if isinstance(node, ast.Raise):
                    skip.update(id(n) for n in ast.walk(node))
        found = []
        for statement in statements:
            for node in ast.walk(statement):
                if isinstance(node, ast.Call) and id(node) not in skip \
                        and not self._safe(node):
                    found.append((node.lineno, node.col_offset, node))
        if not found:
            return None
        line, _, node = min(found, key=lambda f: (f[0], f[1]))
        return line, self.names.text(node.func) + '()'

    def _safe(self, call):
        func = call.func
        if isinstance(func, ast.Name):
            return func.id in _SAFE_BUILTINS
        if not isinstance(func, ast.Attribute):
            return False
        dotted = _dotted(func)
        if dotted:
            if dotted.split('.')[0] in _LOGGERS:
                return True
            if dotted.startswith(_SAFE_DOTTED_PREFIXES):
                return True
        if func.attr in _CONDITION_METHODS:
            return True
        if isinstance(func.value, ast.Constant) and \
                func.attr in ('join', 'format'):
            return True
        if func.attr in _CONTAINER_METHODS:
            return _receiver_name(func.value) in self.containers
        return False

    @staticmethod
    def lazy_target(statements):
        """The attribute/name a lazy one-time set-up initializes
        (``if not self._x: self._x = ...; return self._x``), or None."""
        body = list(statements)
        if body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant):
            body = body[1:]
        if not body or not isinstance(body[0], ast.If) or body[0].orelse:
            return None
        test_targets = {_dotted(n) for n in ast.walk(body[0].test)
                        if isinstance(n, (ast.Name, ast.Attribute))}
        test_targets.discard(None)
        assigned = set()
        for statement in body[0].body:
            if isinstance(statement, ast.Assign):
                assigned.update(_dotted(t) for t in statement.targets)
        hits = sorted(t for t in test_targets & assigned if t)
        if not hits:
            return None
        for statement in body[1:]:
            if not isinstance(statement, ast.Return):
                return None
        return hits[0]


# -- the module walker ------------------------------------------------------

class _Auditor:

    def __init__(self, source, filename):
        self.source = source
        self.filename = filename
        self.tree = ast.parse(source, filename=filename)
        self.parents = {}
        self.sites = []
        self.stored_locks = []     # threading sites to finish

    def run(self):
        if not _CANDIDATE.search(self.source):
            return []
        nodes = []
        for node in ast.walk(self.tree):
            nodes.append(node)
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.aliases = _aliases(nodes)
        self.module = _Scope('module', self.tree, '<module>')
        self.names = _Names(self.source, self.module)
        self.guard = _Guard(self.names, _containers(nodes))
        self._visit_body(self.tree.body, self.module)
        for site, target, scope, key in self.stored_locks:
            self._finish_threading(site, target, scope, key)
        self.sites.sort(key=lambda s: s.line)
        return unify(self.sites)

    # Walk, keeping the scope each node is evaluated in.
    def _visit_body(self, statements, scope):
        for statement in statements:
            self._visit(statement, scope)

    def _visit(self, node, scope):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = _Scope('function', node, node.name, scope)
            for decorator in node.decorator_list:
                self._visit(decorator, scope)
            for default in node.args.defaults + [
                    d for d in node.args.kw_defaults if d is not None]:
                self._visit(default, scope)
            self._visit_body(node.body, inner)
            return
        if isinstance(node, ast.ClassDef):
            inner = _Scope('class', node, node.name, scope)
            for expr in node.decorator_list + node.bases + [
                    k.value for k in node.keywords]:
                self._visit(expr, scope)
            self._visit_body(node.body, inner)
            return
        if isinstance(node, ast.Call):
            self._call(node, scope)
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    # Classify one call.
    def _call(self, call, scope):
        form = self._form(call)
        if form is None:
            return
        family, flavour = form
        parent = self.parents.get(call)
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef,
                               ast.ClassDef)) and \
                call in parent.decorator_list:
            usage = 'decorator'
            region = None if isinstance(parent, ast.ClassDef) else \
                parent.body
            where = _Scope('class', parent, parent.name, scope).qualname
        elif isinstance(parent, ast.withitem) and parent.context_expr is call:
            usage, region = 'context', self.parents[parent].body
            where = scope.qualname
        else:
            usage, region, where = 'call', None, scope.qualname
        site = Site(file=self.filename, line=call.lineno, where=where,
                    kind='', usage=usage, name='', verdict='', reason='')
        if family == 'threading':
            self._threading(site, call, scope, usage)
        elif family == 'distributed':
            self._distributed(site, call, scope, flavour)
        else:
            self._oslo(site, call, scope, flavour, usage, region, parent)
        self.sites.append(site)

    def _form(self, call):
        qualified = _qualify(call.func, self.aliases)
        if isinstance(qualified, _Factory):
            return 'oslo', qualified.flavour
        if qualified in _FORMS:
            return _FORMS[qualified]
        if isinstance(call.func, ast.Call):
            inner = _qualify(call.func.func, self.aliases)
            if inner in _FACTORIES:
                return 'oslo', _FACTORIES[inner]
        return None

    def _name_arg(self, call, keyword):
        if call.args and not isinstance(call.args[0], ast.Starred):
            return call.args[0]
        for kw in call.keywords:
            if kw.arg == keyword:
                return kw.value
        return None

    # -- distributed
    def _distributed(self, site, call, scope, flavour):
        site.kind = 'distributed'
        site.verdict = 'already-distributed'
        if flavour == 'hacluster':
            names = [a for a in call.args if not isinstance(a, ast.Starred)]
            site.name = ', '.join(_show(self.names.parts(n, scope))
                                  for n in names)
            site.reason = 'hacluster lock on etcd'
        else:
            name = self._name_arg(call, 'lock_name')
            if name is not None:
                site.name = _show(self.names.parts(name, scope))
            site.reason = ("manila coordination (tooz) lock: distributed "
                           "once [coordination] backend_url is shared")

    # -- oslo
    def _oslo(self, site, call, scope, flavour, usage, region, parent):
        external = self._external(call, flavour)
        site.external = external
        site.kind = 'internal' if external is False else 'external'
        name_node = self._name_arg(call, 'name')
        if name_node is None:
            site.verdict = 'review'
            site.reason = 'no lock name given as written: cannot tell'
            return
        # The scope the name is evaluated in: for a decorator, the one
        # enclosing the decorated function (already ``scope``).
        parts = self.names.parts(name_node, scope)
        display = parts
        if isinstance(name_node, ast.Name):
            owner = _lookup(scope, name_node.id)
            values = owner.bindings().get(name_node.id) if owner else None
            if owner is not None and name_node.id not in owner.params and \
                    values and len(values) == 1 and values[0] is not None:
                display = self.names.parts(values[0], owner)
        site.name = _show(display)
        origin = _origin(parts, scope)
        function = scope if scope.kind == 'function' else None
        suggestion, fix_text = self._suggest(
            call, name_node, parts, usage, parent, function, external)
        site.proposal = (suggestion, (call.lineno, call.col_offset,
                                      call.end_lineno, call.end_col_offset,
                                      fix_text) if fix_text else None)
        outside = None
        if external is not True and region is not None:
            lazy = _Guard.lazy_target(region)
            if lazy:
                site.verdict = 'keep'
                site.reason = ('lazy one-time set-up of %s: each process '
                               'builds its own' % lazy)
                return
            outside = self.guard.first_outside_call(region)
            if outside is None:
                site.verdict = 'keep'
                site.reason = ('guards only in-process objects (containers, '
                               'attributes, logging)')
                return
        if external is None:
            site.verdict = 'review'
            site.reason = 'external= is not a literal: cannot tell the kind'
            return
        if origin:
            site.verdict = 'review'
            site.reason = ('named from %s: check it names the same resource '
                           'on every node' % origin)
            return
        resource = any(not isinstance(p, str) for p in parts)
        if external:
            site.verdict = 'replace'
            site.reason = 'file lock: excludes processes of this node only'
        elif resource or self._in_driver(scope, parent, usage):
            site.verdict = 'replace'
            site.reason = ('in-process lock %s: other nodes run the same '
                           'code at the same time' % (
                               'named after a resource' if resource
                               else 'in a driver method'))
        else:
            site.verdict = 'review'
            if outside:
                site.reason = (
                    'in-process lock around %s (line %d): replace it if '
                    'that changes backend or DB state, keep it if it only '
                    'uses this process\'s own objects' % (outside[1],
                                                          outside[0]))
            else:
                site.reason = ('in-process lock object: cannot see what '
                               'it guards')
            return

    def _external(self, call, flavour):
        if flavour == 'external':
            return True
        if flavour == 'internal':
            return False
        value = None
        for kw in call.keywords:
            if kw.arg == 'external':
                value = kw.value
        if value is None and flavour in ('synchronized', 'lock') and \
                len(call.args) > 2:
            value = call.args[2]
        if value is None:
            return False
        if isinstance(value, ast.Constant) and isinstance(value.value,
                                                          bool):
            return value.value
        return None

    def _in_driver(self, scope, parent, usage):
        names = []
        if usage == 'decorator':
            names.append(parent.name)
        current = scope
        while current is not None:
            if current.kind == 'function':
                names.append(current.name)
            if current.kind == 'class' and current.name.endswith('Driver'):
                return True
            current = current.parent
        return any(n in _DRIVER_OPERATIONS for n in names)

    def _moved_segment(self, call, node):
        """The source of ``node``, its continuation lines re-indented for
        it to start right after ``ha_synchronized(`` where ``call``
        starts."""
        segment = self.names.segment(node)
        if segment is None:
            return ast.unparse(node)
        lines = segment.split('\n')
        if len(lines) == 1:
            return segment
        source_lines = self.source.split('\n')
        old = _byte_to_char(source_lines[node.lineno - 1], node.col_offset)
        new = _byte_to_char(source_lines[call.lineno - 1],
                            call.col_offset) + len(_FIX_NAME) + 1
        delta = new - old
        for i in range(1, len(lines)):
            line = lines[i]
            if delta >= 0:
                lines[i] = ' ' * delta + line
            else:
                spaces = len(line) - len(line.lstrip(' '))
                lines[i] = line[min(spaces, -delta):]
        return '\n'.join(lines)

    def _suggest(self, call, name_node, parts, usage, parent, function,
                 external):
        """(suggestion text, decorator replacement text or None)."""
        extra = ''
        if external is False:
            extra += ', external=False'
        for kw in call.keywords:
            if kw.arg == 'blocking':
                extra += ', blocking=%s' % self.names.text(kw.value)
        template = _template(parts)
        literal = all(isinstance(p, str) for p in parts)
        if usage == 'decorator':
            if literal:
                argument = repr(template)
            else:
                argument = self._moved_segment(call, name_node)
            fix = '%s(%s%s)' % (_FIX_NAME, argument, extra)
            return ('hacluster.synchronized(%s%s)'
                    % (' '.join(argument.split()), extra), fix)
        expression = self.names.text(name_node)
        if usage == 'context':
            text = 'with coord.get_lock(%s)' % expression
            if function is not None and template is not None and \
                    _origin(parts, function) is None:
                text = ('hacluster.synchronized(%r%s) on %s, or %s'
                        % (template, extra, function.name, text))
            return text, None
        if isinstance(self._form(call), tuple) and \
                'synchronized' in self._form(call)[1]:
            return 'hacluster.synchronized(%s%s)' % (expression, extra), None
        return 'coord.get_lock(%s)' % expression, None

    # -- threading
    def _threading(self, site, call, scope, usage):
        site.kind = 'threading'
        parent = self.parents.get(call)
        target = None
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            target = parent.targets[0]
        elif isinstance(parent, ast.AnnAssign):
            target = parent.target
        key = None
        if isinstance(target, ast.Name):
            # A class attribute is used as self.X / cls.X.
            key = ('attr' if scope.kind == 'class' else 'name', target.id)
        elif isinstance(target, ast.Attribute) and \
                isinstance(target.value, ast.Name) and \
                target.value.id in ('self', 'cls'):
            key = ('attr', target.attr)
        if usage == 'context':
            site.verdict = 'review'
            site.reason = 'a new lock at every entry: it excludes nothing'
            return
        if key is None:
            site.verdict = 'review'
            site.reason = ('lock object stored in a container or passed on: '
                           'cannot see what it guards')
            return
        self.stored_locks.append((site, target, scope, key))

    def _finish_threading(self, site, target, scope, key):
        shown = self.names.text(target)
        if key[0] == 'attr':
            area = scope
            while area is not None and area.kind != 'class':
                area = area.parent
            if area is None:
                site.verdict = 'review'
                site.reason = ('%s is set outside a class: cannot see what '
                               'it guards' % shown)
                return

            def matches(node):
                return isinstance(node, ast.Attribute) and \
                    node.attr == key[1] and \
                    isinstance(node.value, ast.Name) and \
                    node.value.id in ('self', 'cls', area.name)
        else:
            area = scope

            def matches(node):
                return isinstance(node, ast.Name) and node.id == key[1] and \
                    isinstance(node.ctx, ast.Load)
        regions, lines = [], []
        for node in ast.walk(area.node):
            if not matches(node):
                continue
            holder = self.parents.get(node)
            if isinstance(holder, ast.withitem) and \
                    holder.context_expr is node:
                regions.append(self.parents[holder].body)
                lines.append(node.lineno)
            elif isinstance(holder, ast.Attribute) and \
                    holder.attr in _CONDITION_METHODS | {'locked'}:
                continue
            elif isinstance(holder, ast.Attribute) and \
                    holder.attr in ('acquire', 'release'):
                site.verdict = 'review'
                site.reason = ('%s is acquired by hand (line %d): cannot see '
                               'what it guards' % (shown, node.lineno))
                return
            elif not isinstance(node.ctx, ast.Load):
                continue
            else:
                site.verdict = 'review'
                site.reason = ('%s is passed on (line %d): cannot see what '
                               'it guards' % (shown, node.lineno))
                return
        if not regions:
            site.verdict = 'review'
            site.reason = '%s is never used in a with block here' % shown
            return
        for region, line in zip(regions, lines):
            if _Guard.lazy_target(region):
                continue
            outside = self.guard.first_outside_call(region)
            if outside:
                site.verdict = 'review'
                site.reason = (
                    '%s guards a call to %s (line %d): if that changes '
                    'backend state, other nodes may do it at the same time'
                    % (shown, outside[1], outside[0]))
                return
        site.verdict = 'keep'
        site.reason = ('%s guards only in-process objects (with blocks at '
                       'line %s)' % (shown,
                                     ', '.join(map(str, sorted(lines)))))


# -- public API -------------------------------------------------------------

def audit_source(source, filename='<string>'):
    """Find the lock sites in Python source text.

    :param source: the module's text.
    :param filename: what to put in each site's ``file``.
    :returns: a list of :class:`Site`, by line.
    :raises SyntaxError: when the source does not parse (also ValueError
        for a NUL byte).

    Pure: nothing is imported, run or written. Thread-safe.
    """
    return _Auditor(source, filename).run()


def audit_file(path, display=None):
    """:func:`audit_source` over a file, decoded as Python would (PEP 263
    coding cookie, else UTF-8).

    :raises OSError, UnicodeDecodeError, SyntaxError, ValueError: when the
        file cannot be read or parsed.
    """
    with open(path, 'rb') as stream:
        data = stream.read()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return audit_source(data.decode(encoding), display or path)


def python_files(path):
    """The ``*.py`` files under ``path`` (itself, if it is a file), sorted;
    hidden directories and ``__pycache__`` are skipped.

    :raises FileNotFoundError: when ``path`` does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError('no such file or directory: %s' % path)
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith('.') and d != '__pycache__')
        found.extend(os.path.join(root, f) for f in sorted(files)
                     if f.endswith('.py'))
    return found


def error_site(path, exc):
    """A :class:`Site` with verdict ``error`` for a file not audited."""
    line = getattr(exc, 'lineno', None) or 0
    if isinstance(exc, SyntaxError):
        reason = 'syntax error: %s' % exc.msg
    elif isinstance(exc, UnicodeDecodeError):
        reason = 'cannot decode: %s' % exc
    elif isinstance(exc, OSError):
        reason = 'cannot read: %s' % (exc.strerror or exc)
    else:
        reason = '%s: %s' % (type(exc).__name__, exc)
    return Site(file=path, line=line, where='', kind='', usage='', name='',
                verdict='error', reason=reason)


def audit_paths(paths):
    """Audit files and directories (walked for ``*.py``).

    :returns: ``(sites, files)``: every site, by file then line -- a file
        that cannot be read or parsed is one site with verdict ``error`` --
        and the number of files looked at.
    :raises FileNotFoundError: before reading anything, when a path does
        not exist.
    """
    files = []
    for path in paths:
        files.extend(python_files(path))
    sites = []
    for path in files:
        try:
            sites.extend(audit_file(path))
        except (OSError, SyntaxError, ValueError) as exc:
            sites.append(error_site(path, exc))
    return unify(sites), len(files)


_STRICTNESS = {'keep': 0, 'review': 1, 'replace': 2}


def unify(sites):
    """Give oslo sites that share a fixed lock name one verdict, and set
    ``suggestion``/``fix`` from ``proposal`` by the final verdict.

    Sites sharing a name exclude each other (whatever their kinds), so a
    lock cannot be replaced at one and kept at another: all get the
    strictest verdict among them (replace > review > keep), with a note.

    :param sites: sites of one audit (any number of files); changed in
        place.
    :returns: ``sites``.
    """
    groups = {}
    for site in sites:
        if site.proposal is not None and site.verdict in _STRICTNESS and \
                site.name and '{' not in site.name:
            groups.setdefault(site.name, []).append(site)
    for group in groups.values():
        strictest = max(group, key=lambda s: _STRICTNESS[s.verdict])
        for site in group:
            if _STRICTNESS[site.verdict] < _STRICTNESS[strictest.verdict]:
                where = ('line %d' % strictest.line
                         if strictest.file == site.file else
                         '%s:%d' % (strictest.file, strictest.line))
                site.reason = ('shares its name with %s (%s there); on its '
                               'own: %s' % (where, strictest.verdict,
                                            site.reason))
                site.verdict = strictest.verdict
    _note_other_systems(sites)
    for site in sites:
        if site.proposal is None:
            continue
        suggestion, fix = site.proposal
        site.suggestion = suggestion if site.verdict != 'keep' else ''
        site.fix = fix if site.verdict == 'replace' else None
    return sites


def _note_other_systems(sites):
    """Say so where an oslo lock and a distributed one have the same name:
    they look alike and exclude nothing of each other."""
    distributed, local = {}, {}
    for site in sites:
        if site.name and site.kind == 'distributed':
            distributed.setdefault(site.name, []).append(site)
        elif site.name and site.kind in ('external', 'internal'):
            local.setdefault(site.name, []).append(site)
    for name in set(distributed) & set(local):
        for group, others in ((distributed[name], local[name]),
                              (local[name], distributed[name])):
            for site in group:
                other = others[0]
                where = ('line %d' % other.line if other.file == site.file
                         else '%s:%d' % (other.file, other.line))
                note = ('; the %s lock at %s has the same name: the two do '
                        'not exclude each other' % (other.kind, where))
                if note not in site.reason:
                    site.reason += note


def summarize(sites):
    """Counts: ``{'sites': n, 'kind': {...}, 'verdict': {...}}`` (error
    rows count under verdict only)."""
    kinds = {k: 0 for k in KINDS}
    verdicts = {v: 0 for v in VERDICTS}
    for site in sites:
        if site.kind:
            kinds[site.kind] += 1
        verdicts[site.verdict] += 1
    return {'sites': sum(kinds.values()), 'kind': kinds, 'verdict': verdicts}


def _byte_to_char(line, column):
    return len(line.encode('utf-8')[:column].decode('utf-8', 'replace'))


def fix_source(source, sites):
    """Source with every ``replace`` decorator switched to
    ``ha_synchronized(...)`` and :data:`FIX_IMPORT` added (once).

    :param sites: sites of this source, from :func:`audit_source`.
    :returns: the new text (the same text when there is nothing to fix).
    """
    fixes = [s.fix for s in sites if s.fix and s.verdict == 'replace']
    if not fixes:
        return source
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def absolute(lineno, column):
        return offsets[lineno - 1] + _byte_to_char(lines[lineno - 1], column)

    text = source
    for lineno, col, end_lineno, end_col, new in sorted(fixes,
                                                        reverse=True):
        start, end = absolute(lineno, col), absolute(end_lineno, end_col)
        text = text[:start] + new + text[end:]
    if FIX_IMPORT not in text:
        text = _add_import(text)
    return text


def _add_import(text):
    """Insert FIX_IMPORT where OpenStack's import order wants it: before
    the first top-level third-party/project import that sorts after it,
    else after the last top-level import (else after the docstring)."""
    tree = ast.parse(text)
    body = tree.body
    after = 0
    if body and isinstance(body[0], ast.Expr) and \
            isinstance(body[0].value, ast.Constant) and \
            isinstance(body[0].value.value, str):
        after = body[0].end_lineno
    before = None
    stdlib = getattr(sys, 'stdlib_module_names', frozenset())
    for statement in body:
        if not isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        after = statement.end_lineno
        if isinstance(statement, ast.Import):
            module = statement.names[0].name
        else:
            module = '.' * statement.level + (statement.module or '')
        top = module.split('.')[0]
        if before is None and top and top not in stdlib and \
                top != '__future__' and module.lower() > 'hacluster':
            before = statement.lineno - 1
    where = before if before is not None else after
    lines = text.splitlines(keepends=True)
    if where and not lines[where - 1].endswith('\n'):
        lines[where - 1] += '\n'
    lines.insert(where, FIX_IMPORT + '\n')
    return ''.join(lines)


def fix_diff(path, source, sites, label=None):
    """A unified diff (str, empty when nothing to fix) of
    :func:`fix_source`, with ``a/<label>`` and ``b/<label>`` headers."""
    fixed = fix_source(source, sites)
    if fixed == source:
        return ''
    label = label or path
    return ''.join(difflib.unified_diff(
        source.splitlines(keepends=True), fixed.splitlines(keepends=True),
        'a/' + label, 'b/' + label))
