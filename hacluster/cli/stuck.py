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

"""``hacluster stuck``: manila resources stuck in a transitional status,
found in manila's database and etcd, and their repair
(:mod:`hacluster.manila.stuck`)."""

import os

from cliff import lister

from hacluster.cli import epilog as _epilog
from hacluster import exceptions
from hacluster import url as _url

#: The configuration read when no ``--config-file`` is given (if it
#: exists): a manila node's own.
DEFAULT_CONFIG_FILES = ('/etc/manila/manila.conf',)


class StuckError(exceptions.ConfigurationError):
    """The command cannot run: bad input, an unreachable database or etcd
    (the message names the option)."""


def _age(seconds):
    if seconds % 86400 == 0:
        return '%dd' % (seconds // 86400)
    if seconds % 3600 == 0:
        return '%dh' % (seconds // 3600)
    if seconds % 60 == 0:
        return '%dm' % (seconds // 60)
    return '%ds' % seconds


def _quiet():
    """Keep the libraries manila loads from talking on stderr at the
    command's INFO level (oslo.service's backend, eventlet's deprecation);
    the repairs' own warnings stay."""
    import logging
    import warnings
    for name in ('oslo_service', 'oslo_db', 'stevedore'):
        logging.getLogger(name).setLevel(logging.WARNING)
    # each repair says what it set at WARNING; what it left alone is the
    # result column's business
    logging.getLogger('hacluster.manila.recovery').setLevel(logging.WARNING)
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    warnings.filterwarnings('ignore', message='.*Eventlet is deprecated')


def _outcome(result):
    """A repair result, counted: repaired, skipped, would repair, ..."""
    for prefix, name in (('set ', 'repaired'), ('would set', 'would repair'),
                         ('would skip', 'would skip'),
                         ('skipped', 'skipped'),
                         ('not repaired', 'no recovery handler'),
                         ('failed', 'failed')):
        if result.startswith(prefix):
            return name
    return result


def _safe_db_url(connection):
    try:
        from sqlalchemy.engine import make_url
        return make_url(connection).render_as_string(hide_password=True)
    except Exception:
        return '<unparsable>'


class Stuck(_epilog.OwnEpilog, lister.Lister):
    """List manila resources stuck in a transitional status, and repair them.

    Reads manila's database through manila.conf ([database] connection) and
    the hacluster clusters in etcd, read-only. A share instance, snapshot
    instance or access rule is stuck when it is in a transitional status
    (creating, deleting, extending, shrinking, reverting, restoring,
    migrating, applying, ...), no open claim in etcd names it (nor its
    share, share instance or snapshot), the cluster of its backend
    (host@backend, as the HA share manager names it, or [hacluster]
    cluster) has no live member, and it has not changed for longer than
    --older-than (updated_at). --all lists every resource in a
    transitional status, and why each of the others is not stuck: a live
    member may be running an operation hacluster does not claim (manage,
    migration, access rules) or one that started while etcd was down.

    --repair applies what the recovery handlers do (creating -> error,
    extending -> extending_error, shrinking -> shrinking_error, deleting ->
    error_deleting, reverting -> reverting_error, snapshot restoring ->
    available, a replica's creating -> error); other statuses are listed
    and left alone. It is a dry run that says what it would do unless
    --yes is given. Right before each write etcd is read again for that
    resource (no claim, no live member), and the write is one conditional
    UPDATE: only if the row is still in its status and unchanged since the
    listing.

    Columns: resource, id, share_id, status, host, cluster, updated_at
    (UTC), age_s, repair (what a repair sets), result (with --repair), why
    (with --all). A
    summary goes to stderr. Exit status: 0 nothing stuck (or everything
    listed repaired), 1 stuck resources remain, 2 the command could not run
    (the message names the option: [database] connection, the etcd URL).
    """

    def get_parser(self, prog_name):
        from hacluster.cli import audit as _audit
        parser = super().get_parser(prog_name)
        parser.formatter_class = _audit._paragraphs(parser.formatter_class)
        parser.add_argument(
            '--config-file', action='append', default=[], metavar='PATH',
            help='manila.conf to read [database] connection, the etcd URL '
                 '([hacluster] backend_url, else [coordination] '
                 'backend_url) and [DEFAULT] host, enabled_share_backends, '
                 '[hacluster] cluster from; repeatable (default: %s)'
                 % ', '.join(DEFAULT_CONFIG_FILES))
        parser.add_argument(
            '--backend-url', metavar='URL',
            default=os.environ.get('HACLUSTER_BACKEND_URL'),
            help='etcd URL (overrides the configuration; default: '
                 '$HACLUSTER_BACKEND_URL). Put a password in '
                 '--password-file or $HACLUSTER_ETCD_PASSWORD, not here')
        parser.add_argument(
            '--password-file', metavar='PATH',
            help='a file whose first line is the etcd password of the user '
                 'named in the backend URL (default: '
                 '$HACLUSTER_ETCD_PASSWORD, if set)')
        parser.add_argument(
            '--host', metavar='HOST@BACKEND',
            help='only resources of this backend (any pool)')
        parser.add_argument(
            '--cluster', metavar='NAME',
            help='the cluster of the backend --host names (default: '
                 '[hacluster] cluster, for the backend of [DEFAULT] host '
                 'and enabled_share_backends); every other backend\'s '
                 'cluster is its host@backend')
        parser.add_argument(
            '--older-than', metavar='AGE', default='30m',
            help='unchanged for longer than this: seconds, or a number '
                 'with s, m, h or d (default 30m)')
        parser.add_argument(
            '--all', action='store_true',
            help='list every resource in a transitional status, with why '
                 'one is not stuck (column why: a live member of its '
                 'cluster, an open claim, younger than --older-than)')
        parser.add_argument(
            '--repair', action='store_true',
            help='repair the stuck resources as the recovery handlers '
                 'would: a dry run unless --yes is given')
        parser.add_argument(
            '--yes', action='store_true',
            help='with --repair: write the repairs')
        parser.add_argument(
            '--timeout', type=float, default=5.0,
            help='seconds per etcd request (default 5)')
        return parser

    def run(self, parsed_args):
        self._exit = 0
        try:
            super().run(parsed_args)
        except exceptions.HAClusterError as exc:
            self.app.stderr.write('hacluster stuck: %s\n'
                                  % _url.scrub(str(exc)))
            return 2
        return self._exit

    def take_action(self, args):
        from hacluster.manila import stuck as _stuck
        _quiet()
        if args.yes and not args.repair:
            raise StuckError('--yes is for --repair: give both to repair')
        older_than = _stuck.parse_age(args.older_than)
        conf, files = self._conf(args)
        client = self._etcd(args, conf, files)
        clusters = self._clusters(args, conf)
        from manila import context
        from manila import db
        from oslo_db import exception as db_exception
        import sqlalchemy.exc
        finder = _stuck.Finder(context.get_admin_context(),
                               _stuck.EtcdState(client),
                               older_than=older_than, clusters=clusters,
                               host=args.host)
        try:
            rows = finder.find(everything=args.all)
            if args.repair:
                finder.repair(rows, db, dry_run=not args.yes)
        except (db_exception.DBError, sqlalchemy.exc.SQLAlchemyError) as exc:
            raise StuckError(
                "cannot read manila's database ([database] connection = %s "
                "in %s): %s" % (_safe_db_url(conf.database.connection),
                                ', '.join(files),
                                str(exc).strip().splitlines()[0]),
                cause=exc) from exc
        stuck = [r for r in rows if r.why is None]
        self._summary(stuck, finder, args, older_than)
        done = args.repair and args.yes and all(
            r.result.startswith('set ') for r in stuck)
        self._exit = 0 if not stuck or done else 1
        from hacluster.cli import cluster as _cluster
        from hacluster.cli import columns as _cols
        columns = _stuck.ALL_COLUMNS if args.all else _stuck.COLUMNS
        return columns, _cluster._cells(
            columns, [r.as_dict() for r in rows],
            {'updated_at': _cols.Timestamp, 'age_s': _cols.Seconds},
            _stuck.epoch(finder.now), args)

    # -- input ----------------------------------------------------------------

    def _conf(self, args):
        """manila's configuration (``cfg.CONF``, with manila's and
        hacluster's options) and the files it was read from."""
        files = list(args.config_file) or [
            f for f in DEFAULT_CONFIG_FILES if os.path.exists(f)]
        if not files:
            raise StuckError(
                'no --config-file given and no %s: hacluster stuck reads '
                "manila's database through [database] connection in "
                'manila.conf' % ', '.join(DEFAULT_CONFIG_FILES))
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise StuckError('--config-file %s: no such file'
                             % ', '.join(missing))
        from oslo_config import cfg

        from manila.common import config  # noqa: F401  (manila's options)
        from manila.db.sqlalchemy import api  # noqa: F401  ([database])

        from hacluster import opts
        conf = cfg.CONF
        opts.register_opts(conf)
        try:
            conf([], project='manila', default_config_files=files)
        except cfg.Error as exc:
            raise StuckError('cannot read %s: %s' % (', '.join(files), exc),
                             cause=exc) from exc
        connection = conf.database.connection
        if not connection or connection == 'sqlite://':
            raise StuckError(
                "[database] connection is not set in %s: hacluster stuck "
                "reads manila's database through it (manila.conf's, e.g. "
                "mysql+pymysql://manila:PASSWORD@HOST/manila)"
                % ', '.join(files))
        # one attempt: an unreachable database is an error now, not after
        # oslo.db's 10 retries of 10 s
        conf.set_override('max_retries', 1, group='database')
        conf.set_override('retry_interval', 1, group='database')
        return conf, files

    def _etcd(self, args, conf, files):
        from hacluster.cli import cluster as _cluster
        from hacluster import etcd as _etcd
        from hacluster import opts
        if args.backend_url is not None:
            parsed = _url.parse(args.backend_url, option='--backend-url')
        else:
            # [hacluster] backend_url, else [coordination] backend_url
            parsed = opts.backend_url(conf)
        if parsed.kind != 'etcd':
            raise StuckError(
                'no etcd configured (%s in %s): hacluster stuck reads the '
                'claims and members of the clusters from etcd; set '
                '[hacluster] backend_url (or [coordination] backend_url) '
                'or give --backend-url'
                % ('file:// single-node mode' if parsed.path else 'unset',
                   ', '.join(files)))
        password = _cluster._password(args)
        if password is not None:
            if not parsed.username:
                raise StuckError(
                    'a password was given (--password-file or '
                    '$HACLUSTER_ETCD_PASSWORD) but the backend URL %s names '
                    'no user: write it as etcd3+http://USER@HOST:PORT'
                    % parsed.safe)
            parsed.password = password
        return _etcd.Client(parsed, timeout=args.timeout)

    def _clusters(self, args, conf):
        """``{host@backend: cluster}`` for the backend whose cluster is not
        named after it."""
        override = args.cluster or conf.hacluster.cluster
        if not override:
            return {}
        host = args.host
        if host is None:
            backends = conf.enabled_share_backends or []
            if len(backends) != 1:
                raise StuckError(
                    'the cluster %s (%s) names the cluster of one backend; '
                    'enabled_share_backends names %d: give --host '
                    'HOST@BACKEND' % (override, '--cluster' if args.cluster
                                      else '[hacluster] cluster',
                                      len(backends)))
            host = '%s@%s' % (conf.host, backends[0].strip())
        return {host.split('#', 1)[0]: override}

    # -- output ---------------------------------------------------------------

    def _summary(self, rows, finder, args, older_than):
        text = ('hacluster stuck: %d stuck (transitional, unchanged for more '
                'than %s, no open claim, no live member)'
                % (len(rows), _age(int(older_than))))
        if finder.not_stuck:
            text += '; not stuck: ' + ', '.join(
                '%d %s' % (n, why) for why, n in
                sorted(finder.not_stuck.items()))
        if args.repair:
            results = {}
            for row in rows:
                key = _outcome(row.result)
                results[key] = results.get(key, 0) + 1
            text += '; %s: %s' % (
                'repair' if args.yes else 'dry run (--yes to repair)',
                ', '.join('%s %d' % kv for kv in sorted(results.items()))
                or 'nothing to do')
        self.app.stderr.write(text + '\n')
