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

"""Scopes and names of an audited module, what every later stage asks: the
dotted name an expression spells, which module, class or function it is
evaluated in, what binds each name there (plain single assignments are
kept so that a name can be followed to its value), and whether a name is
then an argument, a local variable or a global.
"""

import ast

# Builtins that neither keep state nor reach beyond the process: a call to
# one in guarded code stays in-process, and one in a lock name is not a
# global that the name depends on.
_SAFE_BUILTINS = frozenset('''
    abs all any bool bytes dict divmod enumerate filter float format
    frozenset getattr hasattr hash id int isinstance issubclass iter len list
    map max min next object print range repr reversed round set setattr
    sorted str sum tuple type zip _
'''.split())


def _dotted(node):
    """``a.b.c`` for a chain of names and attributes, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return '.'.join(reversed(parts))


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
