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

"""The operator command against real etcd with live members."""

import io
import json
import logging
import time

import pytest

import hacluster
from hacluster.cli import main as cli_main
from hacluster.periodic import EVERY
from hacluster.periodic import periodic_task
from hacluster.periodic import PeriodicRunner
from helpers import wait_for

FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cluster(etcd, cluster_name):
    """Two live members (a leads), a lock, a claim, a running task."""
    ticks = []

    class Tasks:
        @periodic_task(spacing=0.2, mode=EVERY, initial_delay=0)
        def tick(self, ctx):
            ticks.append(time.monotonic())

    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a',
                                  config={'x': 1}, **FAST).start()
    a.campaign()
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b',
                                  config={'x': 1}, **FAST).start()
    wait_for(lambda: a.is_leader, 5, 'a to lead')
    lock = b.get_lock('share-42')
    lock.acquire()
    other = a.get_lock('pool-1', shared=True)
    other.acquire()
    claim = b.claim('share', 'share-42', 'extend')
    claim.__enter__()
    runner = PeriodicRunner(b)
    runner.add_all(Tasks())
    runner.start()
    wait_for(lambda: len(ticks) >= 2, 5, 'the task to run')
    try:
        yield dict(a=a, b=b, runner=runner, ticks=ticks, lock=lock,
                   claim=claim, args=['--backend-url', etcd.url,
                                      '--cluster', cluster_name])
    finally:
        runner.stop()
        claim.__exit__(None, None, None)
        b.stop()
        a.stop()


def test_status_json_carries_the_right_values(cluster):
    code, out, err = run('status', '-f', 'json', *cluster['args'])
    assert code == 0, err
    state = json.loads(out)
    assert [m['node'] for m in state['members']] == ['a', 'b']
    assert state['leader']['node'] == 'a'
    assert state['leader']['term'] == cluster['a'].term
    assert {(lk['name'], lk['mode'], lk['holder']) for lk in
            state['locks']} == {('share-42', 'exclusive', 'b'),
                                ('pool-1', 'shared', 'a')}
    assert [(c['resource_id'], c['state']) for c in state['claims']] == [
        ('share-42', 'active')]
    task = [t for t in state['tasks'] if t['name'] == 'tick'][0]
    assert task['mode'] == 'every' and task['runs'] >= 1
    assert task['last_run_on'] == 'b'
    assert state['health_name'] == 'OK'


def test_status_table_is_readable(cluster):
    code, out, _ = run('status', *cluster['args'])
    assert code == 0
    for words in ('health OK', 'leader  a (member', 'members (2)',
                  'share-42', 'tick', 'claims (1)'):
        assert words in out


def test_list_commands(cluster):
    code, out, _ = run('member', 'list', '-f', 'json', *cluster['args'])
    members = json.loads(out)
    assert {m['node'] for m in members} == {'a', 'b'}
    assert all(m['version'] == hacluster.__version__ for m in members)
    code, out, _ = run('leader', 'show', '-f', 'json', *cluster['args'])
    leader = json.loads(out)
    assert leader['node'] == 'a' and leader['member_id'] == \
        cluster['a'].member_id
    code, out, _ = run('lock', 'list', '--name', 'share-*', '-f', 'json',
                       *cluster['args'])
    locks = json.loads(out)
    assert [(lk['name'], lk['holder'], lk['token']) for lk in locks] == [
        ('share-42', 'b', cluster['lock'].fencing_token)]
    code, out, _ = run('claim', 'list', '-f', 'json', *cluster['args'])
    assert [c['claim_id'] for c in json.loads(out)] == [
        cluster['claim'].claim_id]
    code, out, _ = run('task', 'list', '-f', 'value', '-c', 'name',
                       *cluster['args'])
    assert out.split() == ['tick']


def test_check_follows_the_nagios_convention(etcd, cluster_name, cluster):
    args = cluster['args']
    code, out, _ = run('check', *args)
    assert code == 0 and out.startswith('OK: cluster')
    drift = hacluster.get_coordinator(etcd.url, cluster_name, 'c',
                                      config={'x': 2}, **FAST).start()
    try:
        code, out, _ = run('check', *args)
        assert code == 1 and 'configuration drift' in out
    finally:
        drift.stop()


def test_check_is_critical_with_no_member_and_unknown_without_etcd(
        etcd, cluster_name):
    code, out, _ = run('check', '--backend-url', etcd.url, '--cluster',
                       cluster_name)
    assert code == 2 and 'no member is alive' in out
    from hacluster.testing.servers import free_port
    code, out, _ = run('check', '--backend-url',
                       'etcd3+http://127.0.0.1:%d' % free_port(),
                       '--cluster', cluster_name, '--timeout', '0.5')
    assert code == 3 and out.startswith('UNKNOWN:') and '127.0.0.1' in out


@pytest.mark.parametrize('pause,resume', [('pause', 'resume'),
                                          ('stop', 'start')])   # deprecated
def test_task_pause_and_resume_take_effect_on_the_running_members(
        cluster, pause, resume):
    ticks, runner = cluster['ticks'], cluster['runner']
    code, out, _ = run('task', pause, 'tick', *cluster['args'])
    assert code == 0 and 'paused' in out
    wait_for(lambda: runner.stats('tick')['paused'], 3, 'the pause')
    time.sleep(0.3)
    n = len(ticks)
    time.sleep(0.8)
    assert len(ticks) == n
    code, _, _ = run('task', resume, 'tick', *cluster['args'])
    assert code == 0
    wait_for(lambda: len(ticks) >= n + 2, 5, 'ticks again')


def test_claim_recover_refuses_a_live_node(cluster):
    code, out, err = run('claim', 'recover', '--node', 'b',
                         *cluster['args'])
    assert code != 0 and 'live member' in err


def test_the_cluster_can_come_from_a_config_file(cluster, tmp_path):
    conf = tmp_path / 'manila.conf'
    backend = cluster['args'][1]
    conf.write_text('[coordination]\nbackend_url = %s\n[hacluster]\n'
                    'cluster = %s\n' % (backend, cluster['args'][3]))
    code, out, _ = run('member', 'list', '-f', 'value', '-c', 'node',
                       '--config-file', str(conf))
    assert code == 0 and out.split() == ['a', 'b']


def test_no_cluster_is_a_clear_error():
    code, out, err = run('status', '--backend-url', 'etcd3+http://h:1')
    assert code != 0 and '--cluster' in err


def test_a_password_never_appears_in_any_output(fresh_etcd, cluster_name,
                                                caplog):
    import subprocess
    env = {'ETCDCTL_API': '3', 'PATH': '/usr/bin:/bin'}
    for cmd in (['user', 'add', 'root:rootpw'], ['role', 'add', 'root'],
                ['user', 'grant-role', 'root', 'root'],
                ['user', 'add', 'ops:Sup3rSecret'], ['role', 'add', 'ro'],
                ['role', 'grant-permission', 'ro', '--prefix', 'read',
                 '/hacluster/'], ['user', 'grant-role', 'ops', 'ro'],
                ['auth', 'enable']):
        subprocess.run(['etcdctl', '--endpoints', fresh_etcd.client_url] +
                       cmd, check=True, capture_output=True, env=env)
    caplog.set_level(logging.DEBUG)
    good = 'etcd3+http://ops:Sup3rSecret@%s' % fresh_etcd.endpoint
    bad = 'etcd3+http://ops:Sup3rSecretWRONG@%s' % fresh_etcd.endpoint
    from hacluster.testing.servers import free_port
    gone = 'etcd3+http://ops:Sup3rSecret@127.0.0.1:%d' % free_port()
    seen = []
    for url in (good, bad, gone):
        for argv in (['status', '-f', 'json'], ['status'], ['check'],
                     ['member', 'list'], ['status', '--debug']):
            if argv[-1] == '--debug':
                argv = ['--debug', 'status']
            code, out, err = run(*argv, '--backend-url', url, '--cluster',
                                 cluster_name, '--timeout', '0.5')
            seen.append((url, argv, code))
            for text in (out, err, caplog.text):
                assert 'Sup3rSecret' not in text, (argv, text[-500:])
    # the read-only user could read: a real answer, not only errors
    assert any(code == 2 for url, argv, code in seen
               if url == good and argv == ['check'])


ACCESS_LOCK = ('manila-locked_access_rules_operation_by_share_instance_'
               '4c0dc0f6-9f2c-4b0e-8d58-0f3c2b1c2d9a')


@pytest.fixture
def no_default_config(monkeypatch):
    from hacluster.cli import cluster as cli_cluster
    monkeypatch.setattr(cli_cluster, 'DEFAULT_CONFIG_FILES', ())


def test_the_cluster_and_etcd_come_from_manila_conf_as_the_manager_reads_it(
        etcd, cluster_name, tmp_path, no_default_config):
    """host@backend from [DEFAULT]; etcd from [hacluster] backend_url
    (several endpoints), not from [coordination] (tooz's, with tooz's own
    option, pointing nowhere: were it used, the command would fail)."""
    from hacluster.testing.servers import free_port
    backend = '%s@dummy' % cluster_name
    node = hacluster.get_coordinator(etcd.url, backend, 'n1', **FAST).start()
    node.campaign()
    try:
        wait_for(lambda: node.is_leader, 5, 'n1 to lead')
        conf = tmp_path / 'manila.conf'
        conf.write_text(
            '[DEFAULT]\nhost = %s\nenabled_share_backends = dummy\n'
            'state_path = %s\n'
            '[coordination]\nbackend_url = etcd3+http://127.0.0.1:%d'
            '?lock_timeout=30\n'
            '[hacluster]\nbackend_url = %s,127.0.0.1:%d\n'
            % (cluster_name, tmp_path, free_port(), etcd.url, free_port()))
        code, out, err = run('status', '-f', 'json', '--config-file',
                             str(conf))
        assert code == 0, err
        state = json.loads(out)
        assert state['cluster'] == backend
        assert [m['node'] for m in state['members']] == ['n1']
        code, out, _ = run('check', '--config-file', str(conf))
        assert code == 0 and out.startswith('OK: cluster %s:' % backend)
    finally:
        node.stop()


def test_tables_show_whole_names_readable_times_and_no_none(cluster):
    lock = cluster['b'].get_lock(ACCESS_LOCK)
    lock.acquire()
    try:
        code, out, _ = run('status', *cluster['args'])
        assert code == 0
        assert ACCESS_LOCK in out and 'None' not in out
        assert '| node | member id ' in out      # cliff's table formatter
        code, out, _ = run('lock', 'list', '-f', 'value', '-c', 'name',
                           *cluster['args'])
        assert ACCESS_LOCK in out.split()
        for argv in (('member', 'list'), ('lock', 'list'),
                     ('claim', 'list'), ('task', 'list'),
                     ('leader', 'show'), ('claim', 'late-list')):
            code, out, _ = run(*argv, *cluster['args'])
            assert code == 0 and 'None' not in out, (argv, out)
        code, out, _ = run('member', 'list', '-f', 'json', *cluster['args'])
        joined = {m['node']: m['joined_at'] for m in json.loads(out)}
        expected = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(
            cluster['a'].get_members()['a']['joined_at']))
        assert joined['a'] == expected
        code, out, _ = run('member', 'list', *cluster['args'])
        assert expected + ' (' in out and ' ago)' in out
    finally:
        lock.release()


def test_cluster_list_counts_each_cluster(etcd, cluster_name, cluster):
    other = hacluster.get_coordinator(etcd.url, cluster_name + '-other',
                                      'c', **FAST).start()
    try:
        code, out, err = run('cluster', 'list', '-f', 'json',
                             '--backend-url', etcd.url)
        assert code == 0, err
        rows = {r['cluster']: r for r in json.loads(out)}
        assert rows[cluster_name] == {
            'cluster': cluster_name, 'members': 2, 'leader': 'a',
            'term': cluster['a'].term, 'candidates': 1, 'locks': 2,
            'claims': 1}
        assert rows[cluster_name + '-other'] == {
            'cluster': cluster_name + '-other', 'members': 1,
            'leader': None, 'term': None, 'candidates': 0, 'locks': 0,
            'claims': 0}
        code, out, _ = run('cluster', 'list', '--backend-url', etcd.url)
        line = [ln for ln in out.splitlines()
                if ' %s-other ' % cluster_name in ln][0]
        assert 'None' not in line and ' - ' in line
    finally:
        other.stop()
