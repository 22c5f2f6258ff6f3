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

"""Finding and parsing the source to audit: the ``*.py`` files under the
given paths, each read and decoded as Python would and parsed with
:mod:`ast` (never imported or run), for :mod:`hacluster.audit.calls` to
walk; a file that cannot be read, decoded or parsed becomes one ``error``
site instead, and the audit goes on.
"""

import ast
import io
import os
import re
import tokenize

from hacluster.audit.calls import _Auditor
from hacluster.audit.results import Site
from hacluster.audit.results import unify

# Sources with none of these cannot have a lock site: no need to walk them.
_CANDIDATE = re.compile(r'synchroni|[lL]ock|Semaphore|Condition')


def audit_source(source, filename='<string>'):
    """Find the lock sites in Python source text.

    :param source: the module's text.
    :param filename: what to put in each site's ``file``.
    :returns: a list of :class:`Site`, by line.
    :raises SyntaxError: when the source does not parse (also ValueError
        for a NUL byte).

    Pure: nothing is imported, run or written. Thread-safe.
    """
    # Parsed before the quick check, so that a file that does not parse
    # is an error row even when it could not hold a lock.
    tree = ast.parse(source, filename=filename)
    if not _CANDIDATE.search(source):
        return []
    return _Auditor(source, filename, tree).run()


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
