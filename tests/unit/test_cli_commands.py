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

"""The hacluster command without etcd: exit codes, where the cluster and
the backend URL come from, and how tables show what they show (a state
made up here stands in for one read from etcd)."""

import io
import json
import subprocess
import sys

import pytest

from hacluster.cli import cluster as cli_cluster
from hacluster.cli import main as cli_main

ACCESS_LOCK = ('manila-locked_access_rules_operation_by_share_instance_'
               '4c0dc0f6-9f2c-4b0e-8d58-0f3c2b1c2d9a')


@pytest.fixture(autouse=True)
def no_default_config(monkeypatch):
    """This machine's /etc/manila/manila.conf, if any, stays out of it."""
    monkeypatch.setattr(cli_cluster, 'DEFAULT_CONFIG_FILES', ())
    monkeypatch.delenv('HACLUSTER_BACKEND_URL', raising=False)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path, text):
    path = tmp_path / 'manila.conf'
    path.write_text(text)
    return str(path)


# -- exit codes ---------------------------------------------------------------

def test_help_exits_0():
    code, out, _ = run('--help')
    assert code == 0 and 'cluster list' in out and 'status' in out
    assert run('help')[0] == 0
    assert run('status', '--help')[0] == 0
    proc = subprocess.run([sys.executable, '-m', 'hacluster.cli.main',
                           '--help'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_usage_errors_exit_2_and_3_for_check():
    assert run('status', '--no-such-option')[0] == 2
    assert run('check', '--no-such-option')[0] == 3


def test_check_without_etcd_configured_is_unknown():
    code, out, _ = run('check', '--cluster', 'x')
    assert code == 3
    assert out.startswith('UNKNOWN: cluster x: no etcd configured')
    assert 'OK' not in out.replace('UNKNOWN', '')


def test_check_in_single_node_mode_is_unknown_naming_the_option(tmp_path):
    conf = write(tmp_path, '[coordination]\nbackend_url = file:///var/lib/'
                           'manila\n[hacluster]\ncluster = c1\n')
    code, out, _ = run('check', '--config-file', conf)
    assert code == 3
    assert out.startswith('UNKNOWN: cluster c1: single-node mode '
                          '([coordination] backend_url = file:///var/lib/'
                          'manila)')


def test_status_without_etcd_says_so_and_is_not_ok():
    code, out, _ = run('status', '--cluster', 'x')
    assert code == 0
    assert 'health UNKNOWN' in out and 'no etcd configured' in out
    code, out, _ = run('status', '--cluster', 'x', '-f', 'json')
    state = json.loads(out)
    assert (state['health_name'], state['mode']) == ('UNKNOWN', 'single-node')


# -- where the cluster and the URL come from ----------------------------------

def test_the_cluster_is_host_at_backend_from_manila_conf(tmp_path):
    conf = write(tmp_path, '[DEFAULT]\nhost = hagroup\n'
                           'enabled_share_backends = dummy\n')
    code, out, err = run('status', '-f', 'json', '--config-file', conf)
    assert code == 0, err
    assert json.loads(out)['cluster'] == 'hagroup@dummy'
    conf = write(tmp_path, '[DEFAULT]\nhost = hagroup\n'
                           'enabled_share_backends = dummy\n[hacluster]\n'
                           'cluster = mine\n')
    assert json.loads(run('status', '-f', 'json', '--config-file',
                          conf)[1])['cluster'] == 'mine'
    assert json.loads(run('status', '-f', 'json', '--config-file', conf,
                          '--cluster', 'given')[1])['cluster'] == 'given'


def test_several_backends_ask_for_the_cluster_naming_the_choices(tmp_path):
    conf = write(tmp_path, '[DEFAULT]\nhost = hagroup\n'
                           'enabled_share_backends = a,b\n')
    code, _, err = run('status', '--config-file', conf)
    assert code != 0 and 'hagroup@a, hagroup@b' in err


def test_the_default_config_file_is_read_when_it_exists(tmp_path,
                                                        monkeypatch):
    conf = write(tmp_path, '[DEFAULT]\nhost = h\nenabled_share_backends = '
                           'be\n')
    monkeypatch.setattr(cli_cluster, 'DEFAULT_CONFIG_FILES',
                        (str(tmp_path / 'missing.conf'), conf))
    code, out, err = run('status', '-f', 'json')
    assert code == 0, err
    assert json.loads(out)['cluster'] == 'h@be'


def test_state_path_and_other_references_are_interpolated(tmp_path):
    conf = write(tmp_path, '[DEFAULT]\nstate_path = %s\n[coordination]\n'
                           'backend_url = file://$state_path/locks\n'
                           '[hacluster]\ncluster = c\n' % tmp_path)
    code, out, err = run('status', '-f', 'json', '--config-file', conf)
    assert code == 0, err
    assert json.loads(out)['lock_path'] == '%s/locks' % tmp_path
    # manila's default state_path when the file does not set it
    conf = write(tmp_path, '[coordination]\nbackend_url = '
                           'file://$state_path\n[hacluster]\ncluster = c\n')
    assert json.loads(run('status', '-f', 'json', '--config-file',
                          conf)[1])['lock_path'] == '/var/lib/manila'


def test_a_reference_to_nothing_is_a_clear_error(tmp_path):
    conf = write(tmp_path, '[coordination]\nbackend_url = '
                           'file://$nowhere/locks\n[hacluster]\ncluster = c\n')
    code, _, err = run('status', '--config-file', conf)
    assert code != 0 and 'nowhere' in err and conf in err


def test_hacluster_backend_url_wins_and_toozs_options_pass(tmp_path):
    # [coordination] as tooz wants it (tooz's own option included), and
    # hacluster's URL: the one the command uses
    conf = write(tmp_path, '[coordination]\nbackend_url = '
                           'etcd3+http://127.0.0.1:1?lock_timeout=30\n'
                           '[hacluster]\ncluster = c\nbackend_url = '
                           'file://%s\n' % tmp_path)
    code, out, err = run('status', '-f', 'json', '--config-file', conf)
    assert code == 0, err
    assert json.loads(out)['lock_path'] == str(tmp_path)


def test_a_bad_url_names_its_option(tmp_path):
    conf = write(tmp_path, '[hacluster]\ncluster = c\nbackend_url = '
                           'etcd3+http://h:x\n')
    code, _, err = run('status', '--config-file', conf)
    assert code != 0 and '[hacluster] backend_url' in err
    code, _, err = run('status', '--cluster', 'c', '--backend-url',
                       'etcd3+http://h:1?lock_timeout=3')
    assert code != 0 and '--backend-url' in err and 'lock_timeout' in err


def test_cluster_list_needs_etcd():
    code, _, err = run('cluster', 'list')
    assert code != 0 and 'no etcd configured' in err


# -- tables ------------------------------------------------------------------

NOW = 1700000000.0


def made_up_state():
    return {
        'cluster': 'hagroup@dummy', 'mode': 'etcd', 'revision': 9,
        'backend': 'etcd3+http://10.0.0.1:2379', 'collected_at': NOW,
        'health': 0, 'health_name': 'OK',
        'members': [
            {'node': 'node1', 'member_id': 'node1-1', 'host': 'vm',
             'pid': 10, 'version': '0.1.0', 'rpc_version': None,
             'config_fingerprint': None, 'joined_at': NOW - 185,
             'joined_for_s': 185.0, 'since_renewal_s': None,
             'lease_remaining_s': 9, 'state': 'active'}],
        'leader': {'node': 'node1', 'member_id': 'node1-1', 'term': 7,
                   'host': 'vm', 'pid': 10, 'version': '0.1.0',
                   'candidates': 1, 'joined_at': NOW - 185},
        'tasks': [{'name': 'report_driver_status', 'mode': None,
                   'spacing': None, 'paused': True, 'last_run_at': None,
                   'last_run_ago_s': None, 'last_run_on': None,
                   'last_duration_s': None, 'runs': 0, 'skips': 0,
                   'failures': 0, 'last_error': None, 'items_handled': 0,
                   'last_cycle': None}],
        'locks': [{'name': ACCESS_LOCK, 'mode': 'exclusive',
                   'holder': 'node1', 'member_id': 'node1-1', 'pid': 10,
                   'token': 42, 'age_s': None, 'waiters': 0}],
        'claims': [{'claim_id': 'c0ffee', 'node': 'node1',
                    'member_id': None,
                    'resource_type': 'share_instance',
                    'resource_id': '4c0dc0f6-9f2c-4b0e-8d58-0f3c2b1c2d9a',
                    'operation': 'create', 'state': 'active', 'age_s': 3.0,
                    'attempt': 0, 'recoverer': None, 'last_error': None}],
        'late_results': [{'claim_id': 'beef', 'node': 'node2',
                          'resource_type': 'share_instance',
                          'resource_id': 'x', 'operation': 'create',
                          'recovered_by': None, 'at': NOW - 60,
                          'message': 'node node2 finished late'}],
        'warnings': [{'level': 'WARNING', 'text': 'task report_driver_status '
                      'is paused for the cluster'}],
    }


@pytest.fixture
def state(monkeypatch):
    monkeypatch.setattr(cli_cluster, '_collect',
                        lambda args, **kw: made_up_state())


def test_status_draws_cliff_tables_without_cutting_or_none(state):
    code, out, _ = run('status', '--cluster', 'x')
    assert code == 0
    assert ACCESS_LOCK in out                      # whole, not 32 chars
    assert '4c0dc0f6-9f2c-4b0e-8d58-0f3c2b1c2d9a' in out
    assert 'None' not in out
    assert '| node  | member id |' in out            # cliff's table
    assert '3m 05s ago' in out                     # joined, relative
    assert '2023-11-14T22:12:20Z (1m 00s ago)' in out   # a late result
    assert 'PAUSED' in out
    for heading in ('members (1)', 'periodic tasks (1)', 'locks held (1)',
                    'claims (1)', 'late results (1)', 'warnings (1)'):
        assert heading in out


def test_list_tables_show_times_and_no_none(state):
    code, out, _ = run('member', 'list', '--cluster', 'x')
    assert code == 0
    assert '2023-11-14T22:10:15Z (3m 05s ago)' in out
    assert 'None' not in out and str(int(NOW - 185)) not in out
    for argv in (('lock', 'list'), ('claim', 'list'), ('task', 'list'),
                 ('claim', 'late-list'), ('leader', 'show')):
        code, out, _ = run(*argv, '--cluster', 'x')
        assert code == 0 and 'None' not in out, (argv, out)
    code, out, _ = run('lock', 'list', '--cluster', 'x', '-f', 'value',
                       '-c', 'name')
    assert out.strip() == ACCESS_LOCK


@pytest.mark.parametrize('fmt', ['value', 'csv'])
def test_value_and_csv_leave_unset_fields_empty(state, fmt):
    code, out, _ = run('member', 'list', '--cluster', 'x', '-f', fmt)
    assert code == 0 and 'None' not in out
    assert '2023-11-14T22:10:15Z' in out


def test_json_has_iso_times_and_nulls(state):
    code, out, _ = run('member', 'list', '--cluster', 'x', '-f', 'json')
    [member] = json.loads(out)
    assert member['joined_at'] == '2023-11-14T22:10:15Z'
    assert member['since_renewal_s'] is None
    assert member['lease_remaining_s'] == 9 and member['pid'] == 10
    code, out, _ = run('leader', 'show', '--cluster', 'x', '-f', 'json')
    assert json.loads(out)['term'] == 7


def test_sorting_by_a_column_with_unset_values(state, monkeypatch):
    two = made_up_state()
    two['members'].append(dict(two['members'][0], node='node0',
                               since_renewal_s=1.0))
    monkeypatch.setattr(cli_cluster, '_collect', lambda args, **kw: two)
    code, out, err = run('member', 'list', '--cluster', 'x', '-f', 'value',
                         '-c', 'node', '--sort-column', 'since_renewal_s')
    assert code == 0 and out.split() == ['node1', 'node0'], err
