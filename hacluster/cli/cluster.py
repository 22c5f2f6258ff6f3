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

"""Operator commands: status, member list, leader show, lock list, claim
list, task list, check, task pause|resume, claim recover|late-list|
late-clear.

Every command takes the cluster from ``--cluster`` or ``[hacluster] cluster``
and etcd from ``--backend-url`` or manila's ``[coordination] backend_url``
(``--config-file /etc/manila/manila.conf``). Read-only commands need only read
access to etcd and never join the cluster. Nothing printed contains a
password: URLs are scrubbed in every output and error.
"""

import json
import logging
import os
import time

from cliff import command
from cliff.formatters import table
from cliff import lister
from cliff import show

from hacluster.cli import columns as _cols
from hacluster.cli import epilog as _epilog
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import status as _status
from hacluster import url as _url

LOG = logging.getLogger(__name__)


#: The configuration read when no ``--config-file`` is given (if it
#: exists): a manila node's own.
DEFAULT_CONFIG_FILES = ('/etc/manila/manila.conf',)


def _add_target_options(parser, cluster=True):
    parser.add_argument('--config-file', action='append', default=[],
                        metavar='PATH',
                        help='an oslo.config file to read the backend URL '
                             '([hacluster] backend_url, else [coordination] '
                             'backend_url) and the cluster ([hacluster] '
                             'cluster, else host@backend) from; repeatable '
                             '(default: %s, if it exists)'
                             % ', '.join(DEFAULT_CONFIG_FILES))
    parser.add_argument('--backend-url', metavar='URL',
                        default=os.environ.get('HACLUSTER_BACKEND_URL'),
                        help='etcd URL (overrides [hacluster] backend_url '
                             'and [coordination] backend_url; default: '
                             '$HACLUSTER_BACKEND_URL). '
                             'A password written here shows in the process '
                             'list (/proc/PID/cmdline): give user@host and '
                             'put the password in --password-file or '
                             '$HACLUSTER_ETCD_PASSWORD, or the whole URL in '
                             '$HACLUSTER_BACKEND_URL')
    parser.add_argument('--password-file', metavar='PATH',
                        help='a file whose first line is the etcd password '
                             'of the user named in the backend URL (default: '
                             '$HACLUSTER_ETCD_PASSWORD, if set)')
    if cluster:
        parser.add_argument(
            '--cluster', metavar='NAME',
            help='cluster name (default: [hacluster] cluster, else the '
                 'backend\'s manila host host@backend as the HA share '
                 'manager names it: [DEFAULT] host and the one backend of '
                 '[DEFAULT] enabled_share_backends)')
    parser.add_argument('--timeout', type=float, default=5.0,
                        help='seconds per etcd request (default 5)')
    return parser


def _password(args):
    """The etcd password from --password-file or $HACLUSTER_ETCD_PASSWORD,
    or None. :raises ConfigurationError: the file cannot be read."""
    if args.password_file:
        try:
            with open(args.password_file) as f:
                return f.readline().rstrip('\r\n')
        except OSError as exc:
            raise exceptions.ConfigurationError(
                '--password-file %s cannot be read: %s'
                % (args.password_file, exc.strerror), cause=exc) from exc
    return os.environ.get('HACLUSTER_ETCD_PASSWORD')


def _config_files(args):
    if args.config_file:
        return list(args.config_file)
    return [f for f in DEFAULT_CONFIG_FILES if os.path.exists(f)]


def _manila_opts():
    """manila's options that hacluster's are derived from (the cluster
    name) or refer to (``$state_path``), registered as manila registers
    them (the command does not import manila)."""
    import socket

    from oslo_config import cfg
    return [
        cfg.StrOpt('state_path', default='/var/lib/manila',
                   help='manila\'s state directory ($state_path)'),
        cfg.StrOpt('host', default=socket.gethostname(),
                   help='manila\'s host (the same on every node of a '
                        'backend)'),
        cfg.ListOpt('enabled_share_backends',
                    help='manila\'s share backends'),
    ]


def _read_config(files):
    """A ConfigOpts with hacluster's and those of manila's options read from
    ``files``. :raises ConfigurationError: a file cannot be read."""
    from oslo_config import cfg

    from hacluster import opts
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf.register_opts(_manila_opts())
    try:
        conf([], project='hacluster', default_config_files=list(files))
    except cfg.Error as exc:
        raise exceptions.ConfigurationError(
            'cannot read %s: %s' % (', '.join(files), exc),
            cause=exc) from exc
    return conf


def _resolve(args, need_cluster=True):
    """``(cluster or None, parsed url, why not etcd)`` from the arguments
    and the configuration file(s); ``why`` says, for a URL that is not
    etcd's, where that came from.

    :raises ConfigurationError: no cluster (``need_cluster``), or a bad
        URL or file, naming the option or file.
    """
    from oslo_config import cfg

    from hacluster import opts
    files = _config_files(args)
    cluster = getattr(args, 'cluster', None) if need_cluster else None
    conf = None
    if files and (args.backend_url is None or (need_cluster and
                                               not cluster)):
        conf = _read_config(files)
    try:
        if args.backend_url is not None:
            parsed = _url.parse(args.backend_url, option='--backend-url')
        elif conf is not None:
            parsed = opts.backend_url(conf)
        else:
            parsed = _url.parse(None, option='--backend-url')
        if need_cluster and not cluster:
            if conf is None:
                raise exceptions.ConfigurationError(
                    'no cluster given: use --cluster NAME, or a '
                    '--config-file (manila.conf) with [hacluster] cluster or '
                    '[DEFAULT] host and enabled_share_backends')
            cluster = opts.cluster_name(conf)
    except cfg.Error as exc:        # e.g. a $variable nobody defines
        raise exceptions.ConfigurationError(
            'cannot read %s: %s' % (', '.join(files), exc),
            cause=exc) from exc
    why = None
    if parsed.kind != 'etcd':
        if parsed.path:
            why = 'single-node mode (%s = %s)' % (parsed.option, parsed.safe)
        else:
            why = ('no etcd configured (no --backend-url, $HACLUSTER_BACKEND_'
                   'URL, [hacluster] backend_url or [coordination] '
                   'backend_url%s)' % (
                       ' in ' + ', '.join(files) if files else
                       '; no --config-file'))
    return cluster, parsed, why


def _target(args, need_cluster=True):
    """``(client or None, cluster, parsed url)`` from the arguments.

    :raises ConfigurationError: no cluster or a bad URL, naming the
        options.
    """
    return _connect(args, need_cluster)[:3]


def _connect(args, need_cluster=True):
    """:func:`_target`, and the reason there is no client (or None)."""
    cluster, parsed, why = _resolve(args, need_cluster)
    if parsed.kind != 'etcd':
        return None, cluster, parsed, why
    password = _password(args)
    if password is not None:
        if not parsed.username:
            raise exceptions.ConfigurationError(
                'a password was given (--password-file or '
                '$HACLUSTER_ETCD_PASSWORD) but the backend URL %s names no '
                'user: write it as etcd3+http://USER@HOST:PORT' % parsed.safe)
        parsed.password = password
    return _etcd.Client(parsed, timeout=args.timeout), cluster, parsed, None


def _etcd_target(args, why_not):
    """``(client, cluster)`` for a command that needs etcd.

    :raises ConfigurationError: single-node mode (``why_not`` says what the
        operator should know instead)."""
    client, cluster, _ = _target(args)
    if client is None:
        raise exceptions.ConfigurationError('single-node mode: ' + why_not)
    return client, cluster


def _single_node_state(cluster, why):
    # UNKNOWN, not OK: nothing here says the cluster is healthy (a monitor
    # that lost its configuration must not stay green)
    return {'cluster': cluster, 'mode': 'single-node', 'members': [],
            'leader': None, 'tasks': [], 'locks': [], 'claims': [],
            'late_results': [], 'collected_at': time.time(),
            'warnings': [{'level': 'UNKNOWN', 'text': why + ': nothing to '
                          'coordinate or check'}],
            'health': _status.UNKNOWN, 'health_name': 'UNKNOWN',
            'revision': None, 'why_not_etcd': why}


#: Rows of locks and of claims the status table shows (then a pointer to
#: the list command that shows them all).
_SHOWN = 20


def _collect(args, lock_values=True, lock_rows_shown=None):
    """The cluster's state (see hacluster.status.collect). With
    ``lock_values=False`` the lock queues are read keys only, and only the
    first ``lock_rows_shown`` lock rows get their holder, pid and age (what
    a view that counts the rest shows)."""
    client, cluster, parsed, why = _connect(args)
    if client is None:
        state = _single_node_state(cluster, why)
        state['lock_path'] = parsed.path
        return state
    state = _status.collect(client, cluster, lock_values=lock_values)
    if not lock_values and lock_rows_shown:
        _status.fill_lock_rows(client, state,
                               state['locks'][:lock_rows_shown])
    state['mode'] = 'etcd'
    state['backend'] = parsed.safe
    return state


def _scrub_state(state):
    """Scrub the fields that can carry text from outside hacluster (error
    messages, warnings, the backend URL). They are scrubbed where they are
    made too; this is the last line of defence, cheap enough for 10,000
    locks (a regex over the whole output is not)."""
    if state.get('backend'):
        state['backend'] = _url.scrub(state['backend'])
    for w in state.get('warnings', ()):
        w['text'] = _url.scrub(w['text'])
    for row in state.get('claims', ()):
        if row.get('last_error'):
            row['last_error'] = _url.scrub(row['last_error'])
    for row in state.get('late_results', ()):
        if row.get('message'):
            row['message'] = _url.scrub(row['message'])
    for row in state.get('tasks', ()):
        if row.get('last_error'):
            row['last_error'] = _url.scrub(row['last_error'])


class Status(_epilog.OwnEpilog, command.Command):
    """Show one cluster on one screen: members, leader and term, periodic
    tasks, locks held, claims (open, orphaned, in recovery), warnings
    (configuration drift, mixed versions, no leader, stuck claims, a member
    late renewing its lease) and overall health."""

    def get_parser(self, prog_name):
        parser = _add_target_options(super().get_parser(prog_name))
        parser.add_argument('-f', '--format', choices=['table', 'json',
                                                       'yaml'],
                            default='table', help='output format')
        parser.add_argument('--watch', type=float, nargs='?', const=2.0,
                            metavar='SECONDS',
                            help='refresh every SECONDS (default 2) until '
                                 'interrupted')
        return parser

    def take_action(self, args):
        # The table shows _SHOWN locks and counts the others: their values
        # (holder, pid, age) are read for those rows only, not for 100,000.
        table = args.format == 'table'
        while True:
            state = _collect(args, lock_values=not table,
                             lock_rows_shown=_SHOWN)
            if args.watch:
                self.app.stdout.write('\x1b[2J\x1b[H')
            self._print(state, args.format)
            if not args.watch:
                return 0
            try:
                time.sleep(args.watch)
            except KeyboardInterrupt:
                return 0

    def _print(self, state, fmt):
        out = self.app.stdout
        _scrub_state(state)
        if fmt == 'json':
            # Indented for a person; compact (and C-encoded: 10,000 locks
            # print in 0.1 s instead of 0.6 s) for a program.
            pretty = hasattr(out, 'isatty') and out.isatty()
            out.write(json.dumps(state, indent=2 if pretty else None,
                                 default=str) + '\n')
            return
        if fmt == 'yaml':
            import yaml
            out.write(yaml.safe_dump(json.loads(json.dumps(
                state, default=str)), sort_keys=False))
            return
        w = out.write
        now = state.get('collected_at')
        leader = state['leader']
        w('cluster %s  (%s%s)  health %s\n' % (
            state['cluster'], state['mode'],
            ', %s' % state['backend'] if state.get('backend') else '',
            state['health_name']))
        w('leader  %s\n' % ('%s (member %s), term %d, %d candidates' % (
            leader.get('node'), leader.get('member_id'), leader['term'],
            leader.get('candidates', 1)) if leader else 'none'))
        self._section('members', state['members'], (
            ('node', lambda m: m['node']),
            ('member id', lambda m: _cols.Cell(m.get('member_id'))),
            ('host', lambda m: _cols.Cell(m.get('host'))),
            ('pid', lambda m: _cols.Cell(m.get('pid'))),
            ('version', lambda m: _cols.Cell(m.get('version'))),
            ('joined', lambda m: _cols.Ago(m.get('joined_for_s'))),
            ('renewed', lambda m: _cols.Ago(m.get('since_renewal_s'))),
            ('config', lambda m: _cols.Cell(m.get('config_fingerprint')))))
        self._section('periodic tasks', state['tasks'], (
            ('task', lambda t: t['name']),
            ('mode', lambda t: _cols.Cell(t['mode'])),
            ('spacing', lambda t: _cols.Seconds(t['spacing'])),
            ('last run', lambda t: _cols.Ago(t['last_run_ago_s'])),
            ('where', lambda t: _cols.Cell(t['last_run_on'])),
            ('duration', lambda t: _cols.Seconds(t['last_duration_s'])),
            ('runs', lambda t: t['runs']),
            ('skips', lambda t: t['skips']),
            ('fails', lambda t: t['failures']),
            ('paused', lambda t: 'PAUSED' if t['paused'] else '')))
        self._section('locks held', state['locks'], (
            ('name', lambda lk: lk['name']),
            ('mode', lambda lk: lk['mode']),
            ('holder', lambda lk: _cols.Cell(lk['holder'])),
            ('token', lambda lk: lk['token']),
            ('held for', lambda lk: _cols.Seconds(lk['age_s'])),
            ('waiting', lambda lk: lk['waiters'])),
            limit=_SHOWN, more='hacluster lock list')
        self._section('claims', state['claims'], (
            ('type', lambda c: _cols.Cell(c['resource_type'])),
            ('resource', lambda c: _cols.Cell(c['resource_id'])),
            ('operation', lambda c: _cols.Cell(c['operation'])),
            ('node', lambda c: _cols.Cell(c['node'])),
            ('state', lambda c: _cols.Cell(c['state'])),
            ('age', lambda c: _cols.Seconds(c['age_s'])),
            ('attempt', lambda c: c['attempt']),
            ('last error', lambda c: _cols.Cell(c['last_error']))),
            limit=_SHOWN, more='hacluster claim list')
        late = state.get('late_results') or []
        if late:
            self._section('late results', late[-10:], (
                ('at', lambda r: _cols.Timestamp(r.get('at'), now)),
                ('claim', lambda r: _cols.Cell(r.get('claim_id'))),
                ('message', lambda r: _url.scrub(r.get('message') or
                                                 _cols.NONE))),
                count=len(late), more='hacluster claim late-list')
        note = _status.upgrade_note(state)
        if note:
            self.app.stdout.write('\n%s\n' % note)
        self._section('warnings', state['warnings'], (
            ('level', lambda warn: warn['level']),
            ('warning', lambda warn: _url.scrub(warn['text']))))

    def _section(self, title, rows, columns, limit=None, more=None,
                 count=None):
        """One titled table, drawn by cliff's table formatter: ``columns``
        is ``((heading, row -> cell), ...)``; at most ``limit`` rows, then
        a line pointing at the command (``more``) that lists them all."""
        out = self.app.stdout
        count = len(rows) if count is None else count
        out.write('\n%s (%d)\n' % (title, count))
        shown = rows if limit is None else rows[:limit]
        if shown:
            _TABLE.emit_list([h for h, _ in columns],
                             [[cell(r) for _, cell in columns]
                              for r in shown], out, _table_args())
        if count > len(shown):
            out.write('... %d more (%s)\n' % (count - len(shown), more))


_TABLE = table.TableFormatter()


def _table_args():
    """The arguments cliff's table formatter reads, as ``-f table`` of a
    list command takes them by default."""
    import argparse
    return argparse.Namespace(
        max_width=int(os.environ.get('CLIFF_MAX_TERM_WIDTH', 0)),
        fit_width=bool(int(os.environ.get('CLIFF_FIT_WIDTH', 0))),
        print_empty=False)


def _cells(columns, rows, kinds, now, args):
    """cliff rows of ``rows`` (dicts): each value in its column's cell type
    (``kinds``: column -> :mod:`hacluster.cli.columns` class; the others
    :class:`~hacluster.cli.columns.Cell`), plain values for ``-f value``
    and ``-f csv`` (None as '')."""
    plain = getattr(args, 'formatter', None) in ('value', 'csv')
    out = []
    for r in rows:
        row = []
        for c in columns:
            kind = kinds.get(c, _cols.Cell)
            cell = kind(r.get(c), now) if kind is _cols.Timestamp \
                else kind(r.get(c))
            row.append(_cols.plain(cell) if plain else cell)
        out.append(tuple(row))
    return out


class _ListCommand(_epilog.OwnEpilog, lister.Lister):
    columns = ()
    section = None
    #: column -> cell type (hacluster.cli.columns); the others: Cell
    kinds = {}

    def get_parser(self, prog_name):
        return _add_target_options(super().get_parser(prog_name))

    def rows(self, state, args):
        return state[self.section]

    def take_action(self, args):
        state = _collect(args)
        _scrub_state(state)
        return self.columns, _cells(self.columns, self.rows(state, args),
                                    self.kinds, state.get('collected_at'),
                                    args)


class MemberList(_ListCommand):
    """List the live members of the cluster with their records."""

    section = 'members'
    columns = ('node', 'member_id', 'host', 'pid', 'version', 'rpc_version',
               'config_fingerprint', 'joined_at', 'since_renewal_s',
               'lease_remaining_s', 'state')
    kinds = {'joined_at': _cols.Timestamp, 'since_renewal_s': _cols.Ago,
             'lease_remaining_s': _cols.Seconds}


class LockList(_ListCommand):
    """List the locks held: holder, mode, fencing token, age, waiters."""

    columns = ('name', 'mode', 'holder', 'member_id', 'pid', 'token',
               'age_s', 'waiters')
    section = 'locks'
    kinds = {'age_s': _cols.Seconds}

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('--name', metavar='PATTERN',
                            help='only locks whose name matches this '
                                 'shell-style pattern (e.g. "share-*")')
        return parser

    def rows(self, state, args):
        import fnmatch
        return [r for r in state['locks'] if not args.name or
                fnmatch.fnmatchcase(r['name'], args.name)]


class ClaimList(_ListCommand):
    """List the claims on in-flight work: active, orphaned (owner gone,
    awaiting recovery), recovering, failed (with attempts and last
    error)."""

    section = 'claims'
    columns = ('resource_type', 'resource_id', 'operation', 'node', 'state',
               'age_s', 'attempt', 'recoverer', 'last_error', 'claim_id')
    kinds = {'age_s': _cols.Seconds}


class ClaimLateList(_ListCommand):
    """List the late results: operations that finished on a node after a
    survivor had recovered them (the node was thought dead). Their results
    were not written; what they made on the backend may be left over.
    Check, then clear them with ``claim late-clear``."""

    section = 'late_results'
    columns = ('resource_type', 'resource_id', 'operation', 'node',
               'recovered_by', 'at', 'claim_id', 'message')
    kinds = {'at': _cols.Timestamp}


class ClaimLateClear(_epilog.OwnEpilog, command.Command):
    """Forget late results once the backend was checked: one (--claim-id)
    or all (--all)."""

    def get_parser(self, prog_name):
        parser = _add_target_options(super().get_parser(prog_name))
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument('--claim-id', help='the late result to forget')
        which.add_argument('--all', action='store_true',
                           help='forget every late result of the cluster')
        return parser

    def take_action(self, args):
        client, cluster = _etcd_target(args, 'there are no late results')
        n = _status.clear_late(client, cluster,
                               None if args.all else args.claim_id)
        self.app.stdout.write('%d late results cleared in %s\n'
                              % (n, cluster))
        return 0


class TaskList(_ListCommand):
    """List the periodic tasks: mode, spacing, last run (when, where, how
    long), runs, skips, failures, paused."""

    section = 'tasks'
    columns = ('name', 'mode', 'spacing', 'paused', 'last_run_ago_s',
               'last_run_on', 'last_duration_s', 'runs', 'skips',
               'failures', 'items_handled', 'last_error')
    kinds = {'spacing': _cols.Seconds, 'last_run_ago_s': _cols.Ago,
             'last_duration_s': _cols.Seconds}


class ClusterList(_epilog.OwnEpilog, lister.Lister):
    """List the clusters in etcd (every cluster under /hacluster/v1/):
    live members, leader and term, candidates, locks held or waited for,
    open claims."""

    columns = ('cluster', 'members', 'leader', 'term', 'candidates', 'locks',
               'claims')

    def get_parser(self, prog_name):
        return _add_target_options(super().get_parser(prog_name),
                                   cluster=False)

    def take_action(self, args):
        client, _, _, why = _connect(args, need_cluster=False)
        if client is None:
            raise exceptions.ConfigurationError(
                '%s: there is no etcd to list clusters from' % why)
        return self.columns, _cells(self.columns,
                                    _status.list_clusters(client), {}, None,
                                    args)


class LeaderShow(_epilog.OwnEpilog, show.ShowOne):
    """Show the leader of the cluster: node, member, term (its fencing
    token), host, pid, version."""

    def get_parser(self, prog_name):
        return _add_target_options(super().get_parser(prog_name))

    def take_action(self, args):
        state = _collect(args)
        leader = state['leader']
        if leader is None:
            raise exceptions.HAClusterError(
                'cluster %s has no leader (%d members alive)'
                % (state['cluster'], len(state['members'])))
        fields = ('node', 'member_id', 'term', 'host', 'pid', 'version',
                  'candidates', 'joined_at')
        return fields, _cells(fields, [leader],
                              {'joined_at': _cols.Timestamp},
                              state.get('collected_at'), args)[0]


def _plugin_text(text):
    """Text for a plugin's output line: Nagios reads performance data after
    the first ``|``, so none may come before it."""
    return text.replace('|', '/').replace('\n', ' ')


class Check(_epilog.OwnEpilog, command.Command):
    """Monitoring check (Nagios plugin convention): prints one line, with
    performance data after ``|``, and exits 0 OK, 1 WARNING (drift, mixed
    versions, claims awaiting recovery, failing or paused tasks), 2 CRITICAL
    (no member, or no leader), 3 UNKNOWN (etcd unreachable, not configured,
    or misconfigured). With ``--node NAME``, the health of that member
    only: 2 CRITICAL when it is not a member, 1 WARNING when it is late
    renewing its lease, has claims stuck in recovery or late results, or a
    task failed on its last run there."""

    def get_parser(self, prog_name):
        parser = _add_target_options(super().get_parser(prog_name))
        parser.add_argument('--node', metavar='NAME',
                            help='check this member only (its node name, '
                                 '[hacluster] node_name)')
        return parser

    def take_action(self, args):
        try:
            # counts locks, shows none: their keys are enough
            state = _collect(args, lock_values=False)
        except Exception as exc:
            # Whatever went wrong, a monitoring check says UNKNOWN (3), not
            # a WARNING or CRITICAL it did not establish.
            self.app.stdout.write('UNKNOWN: %s\n' % _url.scrub(exc))
            return _status.UNKNOWN
        if state['mode'] != 'etcd':
            # no etcd to ask: nothing was checked (a check that lost its
            # configuration must not stay green)
            self.app.stdout.write('UNKNOWN: cluster %s: %s\n' % (
                state['cluster'], _url.scrub(state['why_not_etcd'])))
            return _status.UNKNOWN
        if args.node:
            health = _status.member_health(state, args.node)
            self.app.stdout.write('%s | %s\n' % (
                _plugin_text(_status.member_summary(health)),
                health['perfdata']))
            return health['health']
        self.app.stdout.write('%s | %s\n' % (
            _plugin_text(_status.summary(state)), _status.perfdata(state)))
        return state['health']


class _TaskControl(_epilog.OwnEpilog, command.Command):
    paused = None

    def get_parser(self, prog_name):
        parser = _add_target_options(super().get_parser(prog_name))
        parser.add_argument('name', help='the periodic task')
        return parser

    def take_action(self, args):
        client, cluster = _etcd_target(
            args, 'there is no cluster-wide task control')
        _status.set_task_paused(client, cluster, args.name, self.paused)
        self.app.stdout.write('task %s %s on every node of %s\n' % (
            args.name, 'paused' if self.paused else 'resumed', cluster))
        return 0


class TaskPause(_TaskControl):
    """Pause one periodic task on every node of the cluster (the running
    nodes stop its timer at once; the other tasks keep running)."""

    paused = True


class TaskResume(_TaskControl):
    """Resume a periodic task paused with ``task pause``, on every node."""

    paused = False


class TaskStop(TaskPause):
    """Deprecated spelling of ``task pause`` (it pauses the task on every
    node; kept so existing scripts go on working)."""


class TaskStart(TaskResume):
    """Deprecated spelling of ``task resume``."""


class ClaimRecover(_epilog.OwnEpilog, command.Command):
    """Force recovery of the claims of a node known to be dead: its failed
    claims are retried at once and the leader is woken. Refused while the
    node is a live member."""

    def get_parser(self, prog_name):
        parser = _add_target_options(super().get_parser(prog_name))
        parser.add_argument('--node', required=True,
                            help='the dead node whose claims to recover')
        return parser

    def take_action(self, args):
        client, cluster = _etcd_target(
            args, 'claims are recovered by the node itself when it starts '
            'again')
        n = _status.request_recovery(client, cluster, args.node)
        self.app.stdout.write('%d claims of %s handed to the leader of %s for '
                              'recovery\n' % (n, args.node, cluster))
        return 0
