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
from cliff import lister
from cliff import show

from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import status as _status
from hacluster import url as _url

LOG = logging.getLogger(__name__)


def _add_target_options(parser):
    parser.add_argument('--config-file', action='append', default=[],
                        metavar='PATH',
                        help='an oslo.config file to read [coordination] '
                             'backend_url and [hacluster] cluster from '
                             '(e.g. /etc/manila/manila.conf); repeatable')
    parser.add_argument('--backend-url', metavar='URL',
                        default=os.environ.get('HACLUSTER_BACKEND_URL'),
                        help='etcd URL (overrides [coordination] '
                             'backend_url; default: $HACLUSTER_BACKEND_URL). '
                             'A password written here shows in the process '
                             'list (/proc/PID/cmdline): give user@host and '
                             'put the password in --password-file or '
                             '$HACLUSTER_ETCD_PASSWORD, or the whole URL in '
                             '$HACLUSTER_BACKEND_URL')
    parser.add_argument('--password-file', metavar='PATH',
                        help='a file whose first line is the etcd password '
                             'of the user named in the backend URL (default: '
                             '$HACLUSTER_ETCD_PASSWORD, if set)')
    parser.add_argument('--cluster', metavar='NAME',
                        help='cluster name (overrides [hacluster] cluster)')
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


def _target(args):
    """``(client or None, cluster, parsed url)`` from the arguments.

    :raises ConfigurationError: no cluster or no URL, naming the options.
    """
    backend_url, cluster = args.backend_url, args.cluster
    if args.config_file and (backend_url is None or cluster is None):
        from oslo_config import cfg

        from hacluster import opts
        conf = cfg.ConfigOpts()
        opts.register_opts(conf)
        try:
            conf([], project='hacluster', default_config_files=list(
                args.config_file))
        except cfg.Error as exc:
            raise exceptions.ConfigurationError(
                'cannot read %s: %s' % (', '.join(args.config_file), exc),
                cause=exc) from exc
        backend_url = backend_url or conf.coordination.backend_url
        cluster = cluster or conf.hacluster.cluster
    if not cluster:
        raise exceptions.ConfigurationError(
            'no cluster given: use --cluster NAME or set [hacluster] cluster '
            'in a --config-file')
    parsed = _url.parse(backend_url, option='--backend-url / [coordination] '
                                            'backend_url')
    if parsed.kind != 'etcd':
        return None, cluster, parsed
    password = _password(args)
    if password is not None:
        if not parsed.username:
            raise exceptions.ConfigurationError(
                'a password was given (--password-file or '
                '$HACLUSTER_ETCD_PASSWORD) but the backend URL %s names no '
                'user: write it as etcd3+http://USER@HOST:PORT' % parsed.safe)
        parsed.password = password
    return _etcd.Client(parsed, timeout=args.timeout), cluster, parsed


def _etcd_target(args, why_not):
    """``(client, cluster)`` for a command that needs etcd.

    :raises ConfigurationError: single-node mode (``why_not`` says what the
        operator should know instead)."""
    client, cluster, _ = _target(args)
    if client is None:
        raise exceptions.ConfigurationError('single-node mode: ' + why_not)
    return client, cluster


def _single_node_state(cluster, parsed):
    return {'cluster': cluster, 'mode': 'single-node', 'members': [],
            'leader': None, 'tasks': [], 'locks': [], 'claims': [],
            'late_results': [],
            'warnings': [{'level': 'OK', 'text': 'single-node mode (no '
                          'etcd configured): nothing to coordinate'}],
            'health': _status.OK, 'health_name': 'OK', 'revision': None,
            'lock_path': parsed.path}


def _collect(args):
    client, cluster, parsed = _target(args)
    if client is None:
        return _single_node_state(cluster, parsed)
    state = _status.collect(client, cluster)
    state['mode'] = 'etcd'
    state['backend'] = parsed.safe
    return state


def _age(seconds):
    if seconds is None:
        return '-'
    seconds = float(seconds)
    if seconds < 120:
        return '%.1fs' % seconds
    if seconds < 7200:
        return '%dm' % (seconds // 60)
    return '%.1fh' % (seconds / 3600)


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


class Status(command.Command):
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
        while True:
            state = _collect(args)
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
        leader = state['leader']
        w('cluster %s  (%s%s)  health %s\n' % (
            state['cluster'], state['mode'],
            ', %s' % state['backend'] if state.get('backend') else '',
            state['health_name']))
        w('leader  %s\n' % ('%s (member %s), term %d, %d candidates' % (
            leader.get('node'), leader.get('member_id'), leader['term'],
            leader.get('candidates', 1)) if leader else 'none'))
        w('\nmembers (%d)\n' % len(state['members']))
        w('  %-16s %-22s %-16s %-7s %-8s %-9s %-8s %s\n' % (
            'node', 'member id', 'host', 'pid', 'version', 'joined',
            'renewed', 'config'))
        for m in state['members']:
            w('  %-16s %-22s %-16s %-7s %-8s %-9s %-8s %s\n' % (
                m['node'], m.get('member_id'), (m.get('host') or '')[:16],
                m.get('pid'), m.get('version'), _age(m.get('joined_for_s')),
                _age(m.get('since_renewal_s')) + ' ago'
                if m.get('since_renewal_s') is not None else '-',
                m.get('config_fingerprint') or '-'))
        w('\nperiodic tasks (%d)\n' % len(state['tasks']))
        # as wide as the longest name (manila's go up to 38 characters)
        tw = max([28] + [len(t['name']) for t in state['tasks']])
        if state['tasks']:
            w('  %-*s %-7s %-8s %-10s %-12s %-9s %5s %5s %5s\n' % (
                tw, 'task', 'mode', 'spacing', 'last run', 'where',
                'duration', 'runs', 'skips', 'fails'))
        for t in state['tasks']:
            w('  %-*s %-7s %-8s %-10s %-12s %-9s %5s %5s %5s%s\n' % (
                tw, t['name'], t['mode'] or '-',
                '%gs' % t['spacing'] if t['spacing'] else '-',
                _age(t['last_run_ago_s']) + ' ago'
                if t['last_run_ago_s'] is not None else '-',
                t['last_run_on'] or '-', _age(t['last_duration_s']),
                t['runs'], t['skips'], t['failures'],
                '  PAUSED' if t['paused'] else ''))
        w('\nlocks held (%d)\n' % len(state['locks']))
        for lk in state['locks'][:20]:
            w('  %-32s %-9s by %-16s token %-8s %s, %d waiting\n' % (
                lk['name'][:32], lk['mode'], lk['holder'], lk['token'],
                _age(lk['age_s']), lk['waiters']))
        if len(state['locks']) > 20:
            w('  ... %d more (hacluster lock list)\n'
              % (len(state['locks']) - 20))
        w('\nclaims (%d)\n' % len(state['claims']))
        for c in state['claims'][:20]:
            w('  %-10s %-24s %-8s on %-14s %-28s attempt %s%s\n' % (
                c['resource_type'], c['resource_id'][:24], c['operation'],
                c['node'], c['state'], c['attempt'],
                ': %s' % c['last_error'] if c['last_error'] else ''))
        if len(state['claims']) > 20:
            w('  ... %d more (hacluster claim list)\n'
              % (len(state['claims']) - 20))
        late = state.get('late_results') or []
        if late:
            w('\nlate results (%d)\n' % len(late))
            for r in late[-10:]:
                w('  %s (claim %s)\n' % (_url.scrub(r['message']),
                                         r['claim_id']))
        w('\nwarnings (%d)\n' % len(state['warnings']))
        for warn in state['warnings']:
            w('  %-8s %s\n' % (warn['level'], _url.scrub(warn['text'])))


class _ListCommand(lister.Lister):
    columns = ()
    section = None

    def get_parser(self, prog_name):
        return _add_target_options(super().get_parser(prog_name))

    def rows(self, state, args):
        return state[self.section]

    def take_action(self, args):
        state = _collect(args)
        _scrub_state(state)
        return (self.columns, [tuple(r.get(c) for c in self.columns)
                               for r in self.rows(state, args)])


class MemberList(_ListCommand):
    """List the live members of the cluster with their records."""

    section = 'members'
    columns = ('node', 'member_id', 'host', 'pid', 'version', 'rpc_version',
               'config_fingerprint', 'joined_at', 'since_renewal_s',
               'lease_remaining_s', 'state')


class LockList(_ListCommand):
    """List the locks held: holder, mode, fencing token, age, waiters."""

    columns = ('name', 'mode', 'holder', 'member_id', 'pid', 'token',
               'age_s', 'waiters')
    section = 'locks'

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


class ClaimLateList(_ListCommand):
    """List the late results: operations that finished on a node after a
    survivor had recovered them (the node was thought dead). Their results
    were not written; what they made on the backend may be left over.
    Check, then clear them with ``claim late-clear``."""

    section = 'late_results'
    columns = ('resource_type', 'resource_id', 'operation', 'node',
               'recovered_by', 'at', 'claim_id', 'message')


class ClaimLateClear(command.Command):
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


class LeaderShow(show.ShowOne):
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
                  'candidates')
        return fields, tuple(leader.get(f) for f in fields)


class Check(command.Command):
    """Monitoring check (Nagios plugin convention): prints one line and exits
    0 OK, 1 WARNING (drift, mixed versions, claims awaiting recovery, failing
    or paused tasks), 2 CRITICAL (no member, or no leader), 3 UNKNOWN (etcd
    unreachable or misconfigured)."""

    def get_parser(self, prog_name):
        return _add_target_options(super().get_parser(prog_name))

    def take_action(self, args):
        try:
            state = _collect(args)
        except Exception as exc:
            # Whatever went wrong, a monitoring check says UNKNOWN (3), not
            # a WARNING or CRITICAL it did not establish.
            self.app.stdout.write('UNKNOWN: %s\n' % _url.scrub(exc))
            return _status.UNKNOWN
        self.app.stdout.write(_status.summary(state) + '\n')
        return state['health']


class _TaskControl(command.Command):
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


class ClaimRecover(command.Command):
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
