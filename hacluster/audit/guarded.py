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

"""What guarded code touches: the statements an in-process lock guards
(a decorated function's body, a ``with`` block) are checked for calls that
may reach beyond this process -- anything but builtins, logging, a few
``threading``/``time``/``copy`` helpers and container methods on the
containers the module makes -- and for a lazy one-time set-up, which each
process does for itself; the ``keep`` verdict rests on this.
"""

import ast

from hacluster.audit.scopes import _dotted
from hacluster.audit.scopes import _SAFE_BUILTINS

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
