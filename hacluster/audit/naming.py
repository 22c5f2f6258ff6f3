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

"""Rendering lock names: the expression a lock is named by becomes literal
text and dynamic parts, rebuilt through concatenation, ``%``,
``.format()``, ``'-'.join([...])``, f-strings and names bound once to a
constant; from the parts come the name as shown (``nfs-{share['id']}``),
the hacluster template a suggestion uses (``nfs-{share[id]}``), and where
the dynamic parts come from (the function's arguments, or instance state,
a global, a local).
"""

import ast
import dataclasses
import re
import string

from hacluster.audit.scopes import _lookup
from hacluster.audit.scopes import _SAFE_BUILTINS

# A dynamic part longer than this is shown as ``{...}``: the name column
# stays readable.
_MAX_EXPR = 40


def _name_arg(call, keyword):
    """The expression a lock call is named by: its first positional
    argument, else its ``keyword`` argument, else None."""
    if call.args and not isinstance(call.args[0], ast.Starred):
        return call.args[0]
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return None


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
