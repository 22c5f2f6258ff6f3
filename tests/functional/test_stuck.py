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

"""``hacluster stuck`` against real manila records (PostgreSQL, manila's
schema by ``manila-manage db sync``, records written with manila's own
database API) and a real etcd.

The records, all in a transitional status but the last, two hours old
unless said otherwise:

* on backend ``dead-<id>@dummy`` (its cluster has no member): a share
  creating (stuck), one extending (stuck), a snapshot creating (stuck), a
  share creating with an open claim in etcd (not stuck), a share creating
  a minute ago (not stuck), a share available (not transitional);
* on ``live-<id>@dummy``: a share creating, its cluster has a live member
  (not stuck);
* on ``other-<id>@dummy``: a share migrating (stuck, no recovery handler).

The command runs as an operator runs it, a process reading a manila.conf.
"""

import datetime
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import hacluster
from hacluster import claims as _hclaims
from hacluster import etcd as _etcd
from hacluster import keys
from hacluster.testing import manila_rig
from hacluster.testing import process
from hacluster import url

HACLUSTER = os.path.join(os.path.dirname(sys.executable), 'hacluster')

# Writes the records with manila's database API: argv config file, JSON
# list of {name, host, status[, snapshot]}; prints {name: ids}.
MAKE_RECORDS = textwrap.dedent('''
    import json
    import sys

    from oslo_config import cfg

    from manila.common import config  # noqa: F401
    from manila import context
    from manila import db

    cfg.CONF([], project='manila', default_config_files=[sys.argv[1]])
    ctx = context.get_admin_context()
    out = {}
    for spec in json.loads(sys.argv[2]):
        share = db.share_create(ctx, {
            'user_id': 'u', 'project_id': 'p', 'size': 1,
            'share_proto': 'NFS', 'display_name': spec['name'],
            'status': spec['status'], 'host': spec['host'],
            'is_public': False})
        ids = {'share_id': share['id'], 'instance_id': share.instance['id']}
        if spec.get('snapshot'):
            snap = db.share_snapshot_create(ctx, {
                'share_id': share['id'], 'status': spec['snapshot'],
                'size': 1, 'share_size': 1, 'share_proto': 'NFS',
                'user_id': 'u', 'project_id': 'p', 'progress': '0%'})
            ids['snapshot_id'] = snap['id']
            ids['snapshot_instance_id'] = snap.instance['id']
        out[spec['name']] = ids
    print(json.dumps(out))
''')


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Manila:
    """A manila database (a copy of the template) and a manila.conf."""

    def __init__(self, postgres, etcd, workdir):
        self.pg = postgres
        self.name = 'stuck_' + uuid.uuid4().hex[:10]
        postgres.create_database(self.name, template=manila_rig.TEMPLATE_DB)
        self.workdir = workdir
        self.suffix = uuid.uuid4().hex[:8]
        self.dead = 'dead-%s@dummy' % self.suffix
        self.live = 'live-%s@dummy' % self.suffix
        self.other = 'other-%s@dummy' % self.suffix
        self.conf = self.write_conf('manila.conf', {
            'DEFAULT': {'host': 'dead-' + self.suffix,
                        'enabled_share_backends': 'dummy',
                        'state_path': str(workdir)},
            'database': {'connection': postgres.url(self.name)},
            'hacluster': {'backend_url': etcd.url}})
        self._engine = None

    def write_conf(self, name, sections):
        path = self.workdir / name
        lines = []
        for section, values in sections.items():
            lines.append('[%s]' % section)
            lines.extend('%s = %s' % kv for kv in values.items())
        path.write_text('\n'.join(lines) + '\n')
        return path

    def create(self, specs):
        proc = subprocess.run(
            [sys.executable, '-W', 'ignore', '-c', MAKE_RECORDS,
             str(self.conf), json.dumps(specs)],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    @property
    def engine(self):
        import sqlalchemy
        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                self.pg.url(self.name), poolclass=sqlalchemy.pool.NullPool)
        return self._engine

    def backdate(self, table, ids, when):
        import sqlalchemy
        with self.engine.begin() as conn:
            for row_id in ids:
                conn.execute(sqlalchemy.text(
                    'UPDATE %s SET updated_at = :t, created_at = :t '
                    'WHERE id = :id' % table), {'t': when, 'id': row_id})

    def rows(self, table):
        """``{id: (status, updated_at)}`` of a table."""
        import sqlalchemy
        with self.engine.connect() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(sqlalchemy.text(
                'SELECT id, status, updated_at FROM %s' % table))}

    def snapshot(self):
        return {t: self.rows(t) for t in ('share_instances',
                                          'share_snapshot_instances')}

    def close(self):
        if self._engine is not None:
            self._engine.dispose()
        self.pg.drop_database(self.name)


def stuck(*args, conf=None, env=None):
    """Run ``hacluster stuck``: (exit status, stdout, stderr)."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith('HACLUSTER_')}
    environment.update(env or {})
    command = [HACLUSTER, 'stuck'] + list(args)
    if conf is not None:
        command += ['--config-file', str(conf)]
    proc = subprocess.run(command, capture_output=True, text=True,
                          timeout=120, env=environment)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def manila(postgres, etcd, tmp_path):
    made = Manila(postgres, etcd, tmp_path)
    yield made
    made.close()


@pytest.fixture
def records(manila, etcd):
    """The records of the module doc, the claim in etcd, a live member of
    the live backend's cluster; ``{name: ids}``."""
    dead, live, other = (h + '#pool' for h in (manila.dead, manila.live,
                                               manila.other))
    ids = manila.create([
        {'name': 'stuck_create', 'host': dead, 'status': 'creating'},
        {'name': 'stuck_extend', 'host': dead, 'status': 'extending'},
        {'name': 'with_snapshot', 'host': dead, 'status': 'available',
         'snapshot': 'creating'},
        {'name': 'claimed', 'host': dead, 'status': 'creating'},
        {'name': 'young', 'host': dead, 'status': 'creating'},
        {'name': 'available', 'host': dead, 'status': 'available'},
        {'name': 'live_owner', 'host': live, 'status': 'creating'},
        {'name': 'migrating', 'host': other, 'status': 'migrating'},
    ])
    old = _utcnow() - datetime.timedelta(hours=2)
    manila.backdate('share_instances', [
        v['instance_id'] for k, v in ids.items() if k != 'young'], old)
    manila.backdate('share_snapshot_instances',
                    [ids['with_snapshot']['snapshot_instance_id']], old)
    manila.backdate('share_instances', [ids['young']['instance_id']],
                    _utcnow() - datetime.timedelta(minutes=1))
    # an open claim of a node that died (its lease is gone): recovery's
    # business, not the operator's
    layout = keys.Layout(manila.dead)
    record = _hclaims.new_claim_record(
        'node-gone', 'node-gone-1234', 'share_instance',
        ids['claimed']['instance_id'], 'create')
    client = _etcd.Client(url.parse(etcd.url))
    client.put(layout.claim('node-gone', 'share_instance',
                            ids['claimed']['instance_id'], 'create',
                            record['claim_id']), json.dumps(record))
    member = hacluster.get_coordinator(
        etcd.url, manila.live, 'node-live', lease_ttl=3, renew_deadline=2,
        renew_interval=0.5)
    with member:
        yield ids


def test_lists_what_is_stuck_and_nothing_else(manila, records):
    status, out, err = stuck('-f', 'json', conf=manila.conf)
    assert status == 1, err
    rows = json.loads(out)
    got = {(r['resource'], r['id']): r for r in rows}
    assert set(got) == {
        ('share_instance', records['stuck_create']['instance_id']),
        ('share_instance', records['stuck_extend']['instance_id']),
        ('snapshot_instance',
         records['with_snapshot']['snapshot_instance_id']),
        ('share_instance', records['migrating']['instance_id'])}
    create = got[('share_instance', records['stuck_create']['instance_id'])]
    assert create['status'] == 'creating'
    assert create['share_id'] == records['stuck_create']['share_id']
    assert create['host'] == manila.dead + '#pool'
    assert create['cluster'] == manila.dead
    assert create['repair'] == 'status error'
    assert 7100 < create['age_s'] < 7400
    assert create['updated_at'].endswith('Z')
    assert got[('share_instance', records['stuck_extend']['instance_id'])][
        'repair'] == 'status extending_error'
    migrating = got[('share_instance', records['migrating']['instance_id'])]
    assert (migrating['cluster'], migrating['repair']) == (manila.other, '')
    assert err.splitlines()[-1] == (
        'hacluster stuck: 4 stuck (transitional, unchanged for more than '
        '30m, no open claim, no live member); not stuck: 1 live owner, 1 '
        'open claim, 1 younger than the threshold')
    # --all: the others too, and why they are not stuck
    status, out, _ = stuck('--all', '-f', 'json', conf=manila.conf)
    assert status == 1
    why = {r['id']: r['why'] for r in json.loads(out)}
    assert len(why) == 7
    assert why[records['live_owner']['instance_id']] == (
        'live owner: node-live of cluster %s' % manila.live)
    assert why[records['claimed']['instance_id']].startswith('open claim ')
    assert why[records['claimed']['instance_id']].endswith(
        '(create of share_instance %s by node-gone, active)'
        % records['claimed']['instance_id'])
    assert why[records['young']['instance_id']].startswith('changed ')
    assert why[records['stuck_create']['instance_id']] is None
    # the threshold: the young one is stuck after 30 s
    status, out, _ = stuck('-f', 'json', '--older-than', '30s',
                           '--host', manila.dead, conf=manila.conf)
    assert records['young']['instance_id'] in {r['id']
                                               for r in json.loads(out)}


def test_repair_is_a_dry_run_until_yes_and_then_moves_only_the_stuck(
        manila, records):
    before = manila.snapshot()
    status, out, err = stuck('--repair', '-f', 'json', conf=manila.conf)
    assert status == 1, err
    results = {r['id']: r['result'] for r in json.loads(out)}
    assert results[records['stuck_create']['instance_id']] == \
        'would set error'
    assert results[records['migrating']['instance_id']] == (
        'not repaired: no recovery handler for share_instance migrating')
    assert 'dry run (--yes to repair)' in err
    assert manila.snapshot() == before, 'the dry run wrote'

    status, out, err = stuck('--repair', '--yes', '-f', 'json', '--host',
                             manila.dead, conf=manila.conf)
    assert status == 0, (out, err)
    results = {r['id']: r['result'] for r in json.loads(out)}
    snapshot_instance = records['with_snapshot']['snapshot_instance_id']
    assert results == {
        records['stuck_create']['instance_id']: 'set status error',
        records['stuck_extend']['instance_id']: 'set status extending_error',
        snapshot_instance: 'set status error'}
    after = manila.snapshot()
    changed = {
        (table, row_id): (before[table][row_id][0], after[table][row_id][0])
        for table in after for row_id in after[table]
        if after[table][row_id] != before[table][row_id]}
    assert changed == {
        ('share_instances', records['stuck_create']['instance_id']):
            ('creating', 'error'),
        ('share_instances', records['stuck_extend']['instance_id']):
            ('extending', 'extending_error'),
        ('share_snapshot_instances', snapshot_instance):
            ('creating', 'error')}
    # nothing stuck there any more
    status, out, _ = stuck('-f', 'json', '--host', manila.dead,
                           conf=manila.conf)
    assert (status, json.loads(out)) == (0, [])


def test_a_live_member_keeps_its_backends_resources_out(
        manila, records, etcd):
    # (what etcd says right before each write is tested below, with
    # stand-ins: here a node of the backend serves again)
    late = hacluster.get_coordinator(
        etcd.url, manila.other, 'node-back', lease_ttl=3, renew_deadline=2,
        renew_interval=0.5)
    with late:
        status, out, _ = stuck('--repair', '--yes', '-f', 'json', '--host',
                               manila.other, conf=manila.conf)
    assert (status, json.loads(out)) == (0, [])
    # a backend whose cluster is not named after it ([hacluster] cluster):
    # here the live backend's cluster, which has a member
    status, out, _ = stuck('-f', 'json', '--host', manila.other,
                           '--cluster', manila.live, conf=manila.conf)
    assert (status, json.loads(out)) == (0, [])
    status, out, _ = stuck('-f', 'json', '--host', manila.other,
                           conf=manila.conf)
    assert (status, [r['id'] for r in json.loads(out)]) == (
        1, [records['migrating']['instance_id']])


def test_bad_input_names_the_option_and_exits_2(manila, etcd, tmp_path):
    no_db = manila.write_conf('no-db.conf', {
        'DEFAULT': {'host': 'h'}, 'hacluster': {'backend_url': etcd.url}})
    status, out, err = stuck(conf=no_db)
    assert status == 2 and out == ''
    assert '[database] connection is not set in %s' % no_db in err

    port = process.free_port()
    unreachable = manila.write_conf('unreachable.conf', {
        'database': {'connection': 'postgresql+psycopg2://manila:s3cret@'
                                   '127.0.0.1:%d/manila' % port},
        'hacluster': {'backend_url': etcd.url}})
    began = time.monotonic()
    status, out, err = stuck(conf=unreachable)
    assert status == 2, err
    assert "cannot read manila's database ([database] connection = " \
        "postgresql+psycopg2://manila:***@127.0.0.1:%d/manila" % port in err
    assert 's3cret' not in err
    assert time.monotonic() - began < 60

    no_etcd = manila.write_conf('no-etcd.conf', {
        'database': {'connection': manila.pg.url(manila.name)}})
    status, _, err = stuck(conf=no_etcd)
    assert status == 2
    assert 'no etcd configured' in err and 'backend_url' in err

    status, _, err = stuck('--older-than', 'soon', conf=manila.conf)
    assert (status, 'older-than' in err) == (2, True)
    status, _, err = stuck('--yes', conf=manila.conf)
    assert (status, '--yes is for --repair' in err) == (2, True)
    status, _, err = stuck(conf=tmp_path / 'missing.conf')
    assert status == 2 and 'no such file' in err


# -- the re-check before each write, with stand-ins for etcd and the DB ------

class _DB:
    """manila.db's reads DatabaseRepair makes, over dicts."""

    def __init__(self, instances, shares):
        self.instances = instances
        self.shares = shares

    def share_instance_get(self, ctx, instance_id, with_share_data=False):
        return self.instances[instance_id]

    def share_get(self, ctx, share_id):
        class Share:
            instances = [self.instances[i] for i in self.shares[share_id]]
        return Share()


def _row(instance_id, share_id, status):
    from hacluster.manila import stuck as _stuck
    return _stuck.Stuck(
        resource='share_instance', id=instance_id, share_id=share_id,
        status=status, host='h@b#p', cluster='h@b',
        updated_at=_utcnow() - datetime.timedelta(hours=1), age_s=3600)


def test_etcd_is_read_again_right_before_each_write():
    from hacluster.manila import stuck as _stuck
    db = _DB({'i1': {'id': 'i1', 'status': 'creating'},
              'i2': {'id': 'i2', 'status': 'extending'},
              'i3': {'id': 'i3', 'status': 'extending'},
              'i4': {'id': 'i4', 'status': 'creating'}},
             {'s2': ['i2', 'i3']})
    claim = {'claim_id': 'c1', 'resource_type': 'share_instance',
             'resource_id': 'i1', 'operation': 'create', 'node': 'n',
             'state': 'active'}
    reads = []

    def state(cluster):
        # listing: nothing; right before the writes: a claim on i1
        reads.append(cluster)
        return ([], [claim])

    written = []

    def update(ctx, kind, row_id, from_status, values, cutoff):
        written.append((kind, row_id, tuple(from_status), values))
        return row_id != 'i4'          # i4 changed since the listing

    finder = _stuck.Finder(None, state, older_than=60,
                           snapshot_shares=lambda ctx, ids: {})
    rows = [_row('i1', 's1', 'creating'), _row('i2', 's2', 'extending'),
            _row('i4', 's4', 'creating')]
    finder.repair(rows, db, dry_run=False, update=update)
    assert [r.result for r in rows] == [
        'skipped: open claim c1 (create of share_instance i1 by n, active)',
        'set status extending_error',
        'skipped: changed since it was listed']
    # i3, the share's other instance, is not listed: not written
    assert written == [
        ('share_instance', 'i2', ('extending',),
         {'status': 'extending_error'}),
        ('share_instance', 'i4', ('creating',), {'status': 'error'})]
    assert len(reads) == 3

    # a live member: nothing written
    written.clear()
    finder = _stuck.Finder(None, lambda cluster: (['node-back'], []),
                           older_than=60)
    rows = [_row('i1', 's1', 'creating')]
    finder.repair(rows, db, dry_run=False, update=update)
    assert rows[0].result == 'skipped: live owner: node-back of cluster h@b'
    assert written == []
