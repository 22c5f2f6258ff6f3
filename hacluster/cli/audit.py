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

"""``hacluster audit``: the lock audit as a cliff command."""

import os
import textwrap

from cliff import lister

from hacluster import audit
from hacluster.cli import epilog as _epilog


class Audit(_epilog.OwnEpilog, lister.Lister):
    """Find the lock sites of a share driver and say which to replace.

    Parses the given Python files (directories are walked for *.py; nothing
    is imported or run) and lists every lock: manila's utils.synchronized,
    oslo.concurrency lockutils locks, manila coordination locks, hacluster
    locks, HAShareDriverMixin.ha_lock and threading locks, through any
    import alias, and the lock each takes in manila-share under
    hacluster.manila.manager.HAShareManager with etcd (column runtime).

    Verdicts: "replace" (a node-local lock -- a file lock, or an in-process
    lock in a driver method or named after a resource -- that other nodes
    do not see: use the cluster lock of the suggestion, manila- + its name,
    the one manila's own locks take), "review" (cannot tell: a name built
    from instance state or a global, a lock object passed around, an
    in-process lock around unknown calls), "keep" (guards only this
    process's own objects, or this host's own state on purpose),
    "swapped" (manila's utils.synchronized looked up at each call: the HA
    manager makes it a cluster lock), "rewrapped" (an import-time lock the
    HA manager decorates again with a cluster lock),
    "already-distributed" (coordination locks, ha_lock, hacluster locks),
    "error" (a file that could not be read or parsed: also reported on
    stderr). Each row has a one-line reason; hacluster.audit's module
    documentation has the rules.

    Columns: file, line, where, kind (external, internal, distributed,
    threading), usage (decorator, context, call), name (dynamic parts as
    {expression}), runtime (etcd NAME, file NAME, in-process NAME), verdict,
    reason, suggestion.

    A summary goes to stderr. Exit status: 1 when a "replace" site remains
    or a file could not be audited, 2 when a path does not exist, else 0.

    --fix-suggestions prints, instead of the list, a unified diff (paths
    relative to the current directory, for "git apply" or "patch -p1") that
    switches every "replace" decorator to hacluster's synchronized with
    manila's cluster lock name, and every "replace" with-block in a driver
    with HAShareDriverMixin to self.ha_lock; it never writes a file.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.formatter_class = _paragraphs(parser.formatter_class)
        parser.add_argument(
            'paths', metavar='PATH', nargs='+',
            help='a Python file, or a directory to walk for *.py files')
        parser.add_argument(
            '--fix-suggestions', action='store_true',
            help='print a unified diff switching the "replace" decorators '
                 'to hacluster.synchronized (and with-blocks in a driver '
                 'with HAShareDriverMixin to self.ha_lock) instead of the '
                 'list (no file is written)')
        return parser

    def run(self, parsed_args):
        missing = [p for p in parsed_args.paths if not os.path.exists(p)]
        if missing:
            for path in missing:
                self.app.stderr.write(
                    'hacluster audit: no such file or directory: %s\n' % path)
            return 2
        if parsed_args.fix_suggestions:
            self._audit(parsed_args)
            self._print_fixes()
        else:
            super().run(parsed_args)
        for site in self._sites:
            if site.verdict == 'error':
                self.app.stderr.write('hacluster audit: %s:%s: %s\n'
                                      % (site.file, site.line, site.reason))
        self.app.stderr.write(self._summary() + '\n')
        counts = audit.summarize(self._sites)['verdict']
        return 1 if counts['replace'] or counts['error'] else 0

    def take_action(self, parsed_args):
        self._audit(parsed_args)
        return audit.COLUMNS, [site.row() for site in self._sites]

    def _audit(self, parsed_args):
        self._sites, self._files = audit.audit_paths(parsed_args.paths)

    def _summary(self):
        counts = audit.summarize(self._sites)
        return ('hacluster audit: %d lock sites in %d files; kind: %s; '
                'verdict: %s; %d files not audited' % (
                    counts['sites'], self._files,
                    ', '.join('%s %d' % kv for kv in counts['kind'].items()),
                    ', '.join('%s %d' % kv
                              for kv in counts['verdict'].items()
                              if kv[0] != 'error'),
                    counts['verdict']['error']))

    def _print_fixes(self):
        by_file = {}
        for site in self._sites:
            if site.fix:
                by_file.setdefault(site.file, []).append(site)
        for path, sites in by_file.items():
            with open(path, 'rb') as stream:
                source = stream.read().decode('utf-8-sig')
            label = os.path.relpath(path)
            if label.startswith(os.pardir + os.sep):
                label = os.path.abspath(path)
            self.app.stdout.write(audit.fix_diff(path, source, sites,
                                                 label=label))


def _paragraphs(formatter_class):
    """``formatter_class``, filling the description paragraph by paragraph
    (argparse would make one paragraph of it)."""

    class ParagraphFormatter(formatter_class):
        def _fill_text(self, text, width, indent):
            return '\n\n'.join(
                textwrap.fill(' '.join(p.split()), width,
                              initial_indent=indent, subsequent_indent=indent)
                for p in text.split('\n\n') if p.strip())

    return ParagraphFormatter
