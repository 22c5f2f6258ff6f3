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

"""Fix suggestions: for each oslo site that is to be replaced or reviewed,
the cluster lock to use instead -- always ``manila-`` + the name as
written, the name manila's own locks take under the HA manager: for a
decorator ``hacluster.synchronized('manila-...')`` (a template when the
name allows), for a ``with`` in a share driver's method
``self.ha_lock(<name>)`` (which adds the prefix itself), elsewhere
``hacluster.synchronized`` on the function or on a nested function holding
the block -- and, for a ``replace`` decorator (and a ``with`` in a driver
that mixes in ``HAShareDriverMixin``), the text that replaces the lock
call; :func:`fix_source` applies those to the source and :func:`fix_diff`
shows the result as the unified diff ``hacluster audit --fix-suggestions``
prints. Nothing is written.
"""
import ast
import difflib
import sys

from hacluster.audit.naming import _origin
from hacluster.audit.naming import _template
from hacluster.audit import runtime as _runtime
from hacluster.audit.scopes import _dotted

FIX_IMPORT = 'from hacluster import synchronized as ha_synchronized'
_FIX_NAME = 'ha_synchronized'


# ast gives UTF-8 byte columns; str indexes count characters.
def _byte_to_char(line, column):
    return len(line.encode('utf-8')[:column].decode('utf-8', 'replace'))


def _moved_segment(names, call, node, head):
    """The source of ``node``, its continuation lines re-indented for
    it to start right after ``head`` (the text the replacement puts before
    it) where ``call`` starts."""
    segment = names.segment(node)
    if segment is None:
        return ast.unparse(node)
    lines = segment.split('\n')
    if len(lines) == 1:
        return segment
    source_lines = names.source.split('\n')
    old = _byte_to_char(source_lines[node.lineno - 1], node.col_offset)
    new = _byte_to_char(source_lines[call.lineno - 1],
                        call.col_offset) + len(head)
    delta = new - old
    for i in range(1, len(lines)):
        line = lines[i]
        if delta >= 0:
            lines[i] = ' ' * delta + line
        else:
            spaces = len(line) - len(line.lstrip(' '))
            lines[i] = line[min(spaces, -delta):]
    return '\n'.join(lines)


# Expressions that bind at least as tightly as ``+`` on their right: no
# parentheses needed after ``'manila-' + ``.
_TIGHT = (ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Call,
          ast.JoinedStr)


def _prefixed(names, call, node, head):
    """``'manila-' + <node>`` as source, for a replacement that puts
    ``head`` before it."""
    plus = '%r + ' % _runtime.PREFIX
    tight = isinstance(node, _TIGHT) or (
        isinstance(node, ast.BinOp) and not isinstance(
            node.op, (ast.BitOr, ast.BitXor, ast.BitAnd, ast.LShift,
                      ast.RShift)))
    if tight:
        return plus + _moved_segment(names, call, node, head + plus)
    return plus + '(' + _moved_segment(names, call, node,
                                       head + plus + '(') + ')'


def _driver_method(scope):
    """``(class scope, has the mixin)`` when ``scope`` is inside a method
    (first argument ``self``) of a share driver class -- named ...Driver,
    or with a base named ...ShareDriver or HAShareDriverMixin -- else
    None: there ``self.ha_lock`` exists (with the mixin)."""
    current, method = scope, None
    while current is not None and current.kind != 'class':
        if current.kind == 'module':
            return None
        method = current
        current = current.parent
    if current is None or method is None:
        return None
    args = method.node.args
    first = (args.posonlyargs + args.args)[:1]
    if not first or first[0].arg != 'self':
        return None
    for decorator in method.node.decorator_list:
        if _dotted(decorator) in ('staticmethod', 'classmethod'):
            return None
    bases = [(_dotted(b) or '').rsplit('.', 1)[-1]
             for b in current.node.bases]
    mixin = 'HAShareDriverMixin' in bases
    if not (current.name.endswith('Driver') or mixin or
            any(b.endswith('ShareDriver') for b in bases)):
        return None
    return current, mixin


def _suggest(auditor, call, name_node, parts, usage, scope, external,
             flavour):
    """``(suggestion text, fix or None)`` for an oslo lock ``call`` of
    ``flavour`` named by ``name_node`` (``parts`` rendered by
    ``auditor.names``), evaluated in ``scope``. The fix is ``(lineno, col,
    end_lineno, end_col, text)``: the call's span and what replaces it.

    The cluster lock is always ``manila-`` + the name as written
    (:func:`hacluster.audit.runtime.cluster_name`), the name manila's own
    swapped locks and ``ha_lock`` use."""
    names = auditor.names
    span = (call.lineno, call.col_offset, call.end_lineno,
            call.end_col_offset)
    extra = ''
    if external is False:
        extra += ', external=False'
    blocking = None
    for kw in call.keywords:
        if kw.arg == 'blocking':
            blocking = names.text(kw.value)
            extra += ', blocking=%s' % blocking
    template = _template(parts)
    literal = all(isinstance(p, str) for p in parts)
    function = scope if scope.kind == 'function' else None
    if usage == 'decorator':
        head = _FIX_NAME + '('
        if literal:
            argument = repr(_runtime.PREFIX + template)
        else:
            argument = _prefixed(names, call, name_node, head)
        fix = '%s%s%s)' % (head, argument, extra)
        return ('hacluster.synchronized(%s%s)'
                % (' '.join(argument.split()), extra), span + (fix,))
    expression = names.text(name_node)
    method = _driver_method(scope)
    if method is not None and usage == 'context':
        cls, mixin = method
        text = 'with self.ha_lock(%s)' % expression
        if blocking is not None:
            return (text + ' (it always waits: blocking=%s is not kept)'
                    % blocking, None)
        if not mixin:
            return (text + ' (mix hacluster.manila.driver.HAShareDriverMixin '
                    'into %s)' % cls.name, None)
        head = 'self.ha_lock('
        return text, span + ('%s%s)' % (head, _moved_segment(
            names, call, name_node, head)),)
    nested = ('@hacluster.synchronized(%r + %s%s) on a nested function '
              'holding the block' % (_runtime.PREFIX, expression, extra))
    if usage == 'context':
        if function is not None and template is not None and \
                _origin(parts, function) is None:
            return ('hacluster.synchronized(%r%s) on %s, or %s'
                    % (_runtime.PREFIX + template, extra, function.name,
                       nested), None)
        return nested, None
    if 'synchronized' in flavour:
        return ('hacluster.synchronized(%r + %s%s)'
                % (_runtime.PREFIX, expression, extra), None)
    if method is not None:
        return 'self.ha_lock(%s)' % expression, None
    return nested, None


def fix_source(source, sites):
    """Source with every ``replace`` decorator switched to
    ``ha_synchronized('manila-...')`` and :data:`FIX_IMPORT` added (once,
    when a decorator was switched), and every ``replace`` ``with`` lock in
    a method of a driver with ``HAShareDriverMixin`` switched to
    ``self.ha_lock(...)``.

    :param sites: sites of this source, from
        :func:`hacluster.audit.audit_source`.
    :returns: the new text (the same text when there is nothing to fix).
    """
    fixes = [s.fix for s in sites if s.fix and s.verdict == 'replace']
    if not fixes:
        return source
    needs_import = any(_FIX_NAME + '(' in fix[4] for fix in fixes)
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
    if needs_import and FIX_IMPORT not in text:
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
