"""Fix suggestions: for each oslo site that is to be replaced or reviewed,
the hacluster lock to use instead (``hacluster.synchronized`` with the same
name, as a template when the name allows, or ``coord.get_lock`` for a
``with``), and, for a ``replace`` decorator, the text that replaces it;
:func:`fix_source` applies those to the source and :func:`fix_diff` shows
the result as the unified diff ``hacluster audit --fix-suggestions``
prints. Nothing is written.
"""

import ast
import difflib
import sys

from hacluster.audit.naming import _origin, _template

FIX_IMPORT = 'from hacluster import synchronized as ha_synchronized'
_FIX_NAME = 'ha_synchronized'


# ast gives UTF-8 byte columns; str indexes count characters.
def _byte_to_char(line, column):
    return len(line.encode('utf-8')[:column].decode('utf-8', 'replace'))


def _moved_segment(names, call, node):
    """The source of ``node``, its continuation lines re-indented for
    it to start right after ``ha_synchronized(`` where ``call``
    starts."""
    segment = names.segment(node)
    if segment is None:
        return ast.unparse(node)
    lines = segment.split('\n')
    if len(lines) == 1:
        return segment
    source_lines = names.source.split('\n')
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


def _suggest(names, call, name_node, parts, usage, function, external,
             flavour):
    """(suggestion text, decorator replacement text or None) for an oslo
    lock ``call`` of ``flavour`` named by ``name_node`` (``parts`` rendered
    by ``names``); ``function`` is the function scope it is evaluated in,
    or None."""
    extra = ''
    if external is False:
        extra += ', external=False'
    for kw in call.keywords:
        if kw.arg == 'blocking':
            extra += ', blocking=%s' % names.text(kw.value)
    template = _template(parts)
    literal = all(isinstance(p, str) for p in parts)
    if usage == 'decorator':
        if literal:
            argument = repr(template)
        else:
            argument = _moved_segment(names, call, name_node)
        fix = '%s(%s%s)' % (_FIX_NAME, argument, extra)
        return ('hacluster.synchronized(%s%s)'
                % (' '.join(argument.split()), extra), fix)
    expression = names.text(name_node)
    if usage == 'context':
        text = 'with coord.get_lock(%s)' % expression
        if function is not None and template is not None and \
                _origin(parts, function) is None:
            text = ('hacluster.synchronized(%r%s) on %s, or %s'
                    % (template, extra, function.name, text))
        return text, None
    if 'synchronized' in flavour:
        return 'hacluster.synchronized(%s%s)' % (expression, extra), None
    return 'coord.get_lock(%s)' % expression, None


def fix_source(source, sites):
    """Source with every ``replace`` decorator switched to
    ``ha_synchronized(...)`` and :data:`FIX_IMPORT` added (once).

    :param sites: sites of this source, from
        :func:`hacluster.audit.audit_source`.
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
