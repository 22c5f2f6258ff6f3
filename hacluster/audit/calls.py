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

"""Recognising lock calls in a parsed module: its import aliases (so that
``from manila import utils as u`` then ``u.synchronized`` is found, and an
unrelated ``zfs_utils.synchronized`` is not) and the prefix factories it
assigns tell which calls make a lock, of which family and flavour; a walk
visits every call in the scope Python evaluates it in (a decorator in the
scope around the function it decorates) and makes each lock call a
:class:`~hacluster.audit.results.Site`, with its usage -- decorator,
context or call -- and its ``where``, for its family's rules to judge.
"""

import ast

from hacluster.audit.guarded import _containers
from hacluster.audit.guarded import _Guard
from hacluster.audit.naming import _Names
from hacluster.audit.results import Site
from hacluster.audit.results import unify
from hacluster.audit.rules import _judge_distributed
from hacluster.audit.rules import _judge_oslo
from hacluster.audit.rules import _judge_threading
from hacluster.audit.scopes import _dotted
from hacluster.audit.scopes import _Scope

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


class _Factory:
    """A name bound to ``lockutils.*_with_prefix(...)`` (``prefix``: its
    literal prefix, else None)."""

    def __init__(self, flavour, prefix=None):
        self.flavour = flavour
        self.prefix = prefix


def _literal_arg(call, index, keyword):
    """The str constant given as argument ``index`` or ``keyword`` of
    ``call``, or None."""
    value = None
    if len(call.args) > index and not any(
            isinstance(a, ast.Starred) for a in call.args[:index + 1]):
        value = call.args[index]
    for kw in call.keywords:
        if kw.arg == keyword:
            value = kw.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    return None


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
                    _FACTORIES[qualified],
                    _literal_arg(node.value, 0, 'lock_file_prefix'))
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


def _form(call, aliases):
    """The ``(family, flavour)`` of the lock that ``call`` makes, or
    None when it makes none. ``HAShareDriverMixin.ha_lock`` is any call of
    an attribute named ``ha_lock`` (``self.ha_lock(...)``)."""
    qualified = _qualify(call.func, aliases)
    if isinstance(qualified, _Factory):
        return 'oslo', qualified.flavour
    if qualified in _FORMS:
        return _FORMS[qualified]
    if isinstance(call.func, ast.Call):
        inner = _qualify(call.func.func, aliases)
        if inner in _FACTORIES:
            return 'oslo', _FACTORIES[inner]
    if isinstance(call.func, ast.Attribute) and call.func.attr == 'ha_lock':
        return 'distributed', 'ha_lock'
    return None


def _file_prefix(call, aliases):
    """The lock file prefix of an oslo lock ``call``: ``manila-`` for
    manila's utils.synchronized, a prefix factory's, or the literal
    ``lock_file_prefix`` argument (None when there is none or it is not a
    literal)."""
    qualified = _qualify(call.func, aliases)
    if qualified == 'manila.utils.synchronized':
        return 'manila-'
    if isinstance(qualified, _Factory):
        return qualified.prefix
    if isinstance(call.func, ast.Call):
        return _literal_arg(call.func, 0, 'lock_file_prefix')
    if qualified in ('oslo_concurrency.lockutils.synchronized',
                     'oslo_concurrency.lockutils.lock',
                     'oslo_concurrency.lockutils.external_lock'):
        return _literal_arg(call, 1, 'lock_file_prefix')
    return None


def _swappable(call, aliases):
    """Whether ``call`` is ``manila.utils.synchronized`` looked up on the
    module (``utils.synchronized``), which the HA manager replaces: a name
    bound by ``from manila.utils import synchronized`` is not."""
    return isinstance(call.func, ast.Attribute) and \
        _qualify(call.func, aliases) == 'manila.utils.synchronized'


class _Auditor:
    """The lock sites of one parsed module; :meth:`run` finds them.

    The rules read ``parents`` (node -> parent node), ``names`` (a
    :class:`~hacluster.audit.naming._Names`) and ``guard`` (a
    :class:`~hacluster.audit.guarded._Guard`), set up by :meth:`run`.
    """

    def __init__(self, source, filename, tree):
        self.source = source
        self.filename = filename
        self.tree = tree
        self.parents = {}
        self.sites = []

    def run(self):
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
        form = _form(call, self.aliases)
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
            _judge_threading(self, site, call, scope, usage)
        elif family == 'distributed':
            _judge_distributed(self, site, call, scope, flavour)
        else:
            _judge_oslo(self, site, call, scope, flavour, usage, region,
                        parent, swappable=_swappable(call, self.aliases),
                        prefix=_file_prefix(call, self.aliases))
        self.sites.append(site)
