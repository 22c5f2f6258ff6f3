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

"""devstack/upgrade/ (the grenade plugin) run by bash with devstack's and
grenade's helpers stood in for.

The stand-in helpers (``iniset``, ``resource_save``, ``stop_process``,
``die``...) are small bash functions; the commands the scripts run --
``openstack``, ``hacluster``, ``etcdctl``, ``systemctl`` -- are one Python
script on PATH that records its argv and answers from a JSON state file
the test writes (shares, snapshots and rules it creates and deletes as
manila would; canned ``hacluster status -f json`` per cluster, a list of
them played in turn to show a cluster changing between polls; etcd's
keys).
"""

import configparser
import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
UPGRADE = ROOT / 'devstack' / 'upgrade'
CLUSTER = 'hagroup@london'
NODE = 'devnode'

STUB = r'''#!%(py)s -S
import json, os, sys

name = os.path.basename(sys.argv[0])
argv = sys.argv[1:]
state_path = os.environ['HG_STATE']
with open(state_path) as f:
    state = json.load(f)
recording = name == 'record'
if recording:
    name, argv = argv[0], argv[1:]
with open(os.environ['HG_CALLS'], 'a') as f:
    f.write(json.dumps({'cmd': name, 'argv': argv, 'path': sys.argv[0],
                        'etcdctl_api': os.environ.get('ETCDCTL_API')}) + '\n')


def save():
    with open(state_path, 'w') as f:
        json.dump(state, f)


def opts(args):
    """(positionals, {option: [values]}, flags)"""
    flags = {'--force', '--keys-only', '--prefix'}
    pos, kw, fl = [], {}, set()
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags:
            fl.add(a)
        elif a.startswith('--') and '=' in a:
            k, v = a.split('=', 1)
            kw.setdefault(k, []).append(v)
        elif a.startswith('-'):
            kw.setdefault(a, []).append(args[i + 1])
            i += 1
        else:
            pos.append(a)
        i += 1
    return pos, kw, fl


def fail(msg, code=1):
    sys.stderr.write(msg + '\n')
    sys.exit(code)


if recording:
    sys.exit(0)

if name == 'systemctl':
    sys.exit(0)

if name == 'hacluster':
    if argv == ['--version']:
        print('hacluster ' + state['version'])
        sys.exit(0)
    pos, kw, _ = opts(argv)
    assert pos == ['status'] and kw['-f'] == ['json'], argv
    assert kw['--config-file'] == [os.environ['MANILA_CONF']], argv
    if state.get('status_fails'):
        fail('etcd is unavailable: ' + state['status_fails'])
    seq = state['clusters'][kw['--cluster'][0]]
    print(json.dumps(seq[0]))
    if len(seq) > 1:
        seq.pop(0)
        save()
    sys.exit(0)

if name == 'etcdctl':
    pos, kw, fl = opts(argv)
    if state.get('etcd_down'):
        fail('context deadline exceeded')
    if pos[:2] == ['snapshot', 'save']:
        with open(pos[2], 'w') as f:
            f.write('etcd snapshot\n')
        print('Snapshot saved at ' + pos[2])
        sys.exit(0)
    if pos[0] == 'get' and '--keys-only' in fl:
        keys = state.get('etcd_keys')
        if keys is None:
            keys = []
            for cluster, seq in sorted(state['clusters'].items()):
                if seq[0].get('leader'):
                    keys.append('/hacluster/v1/%%s/leader/7a-1-w' %% cluster)
                for m in seq[0].get('members', []):
                    keys.append('/hacluster/v1/%%s/members/%%s'
                                %% (cluster, m['node']))
        for k in keys:
            print(k)
            print()
        sys.exit(0)
    fail('etcdctl stand-in: unexpected %%r' %% argv, 2)

assert name == 'openstack', name
m = state['manila']
pos, kw, fl = opts(argv)
fields = kw.get('-c', [])


def show(record):
    for c in fields:
        print(record[c])


def find(kind, ident):
    for key, r in m[kind].items():
        if ident in (key, r['id']):
            return key, r
    fail("No %%s with a name or ID of '%%s' exists." %% (kind[:-1], ident))


if pos[:2] == ['share', 'type']:
    verb, tname = pos[2], pos[3]
    if verb == 'show':
        find('types', tname)
        print(tname)
    elif verb == 'create':
        m['types'][tname] = {'id': 'type-' + tname, 'dhss': pos[4],
                             'extra_specs': kw.get('--extra-specs', []),
                             'snapshot_support': kw.get('--snapshot-support')}
    elif verb == 'delete':
        key, _ = find('types', tname)
        del m['types'][key]
elif pos[:2] == ['share', 'snapshot']:
    verb = pos[2]
    if verb == 'create':
        sname = kw['--name'][0]
        find('shares', pos[3])
        m['snapshots'][sname] = {'id': 'id-' + sname, 'share': pos[3],
                                 'status': 'available'}
    elif verb == 'show':
        show(find('snapshots', pos[3])[1])
    elif verb == 'delete':
        key, _ = find('snapshots', pos[3])
        del m['snapshots'][key]
elif pos[:2] == ['share', 'access']:
    verb, share = pos[2], pos[3]
    find('shares', share)
    rules = m['rules'].setdefault(share, [])
    if verb == 'create':
        rules.append({'access_type': pos[4], 'access_to': pos[5],
                      'state': m.get('rule_state', 'active')})
    elif verb == 'list':
        for r in rules:
            if r['access_type'] == kw['--access-type'][0] and \
                    r['access_to'] == kw['--access-to'][0]:
                show(r)
elif pos[:3] == ['share', 'export', 'location']:
    for path in find('shares', pos[4])[1]['exports']:
        print(path)
elif pos[:3] == ['share', 'instance', 'list']:
    for inst in find('shares', kw['--share'][0])[1]['instances']:
        print(inst)
elif pos[:2] == ['share', 'create']:
    sname = kw['--name'][0]
    sid = 'id-' + sname
    m['shares'][sname] = {
        'id': sid, 'name': sname, 'proto': pos[2],
        'share_type': kw.get('--share-type', [None])[0],
        'status': m.get('create_status', {}).get(sname, 'available'),
        'exports': ['10.0.0.2:/shares/%%s' %% sid,
                    '10.0.0.1:/shares/%%s' %% sid],
        'instances': ['inst-' + sname]}
elif pos[:2] == ['share', 'show']:
    show(find('shares', pos[2])[1])
elif pos[:2] == ['share', 'delete']:
    key, r = find('shares', pos[2])
    if key in m.get('delete_fails', []):
        fail('Share %%s cannot be deleted (status %%s)' %% (key, r['status']))
    del m['shares'][key]
else:
    fail('openstack stand-in: unexpected %%r' %% argv, 2)
save()
'''

DEVSTACK_FUNCTIONS = r'''
# devstack's helpers, stood in for
function iniset { "$HG_PY" -S - "$@" <<'PYEOF'
import configparser, sys
path, section, key, value = (sys.argv[1:5] + [''])[:4]
c = configparser.RawConfigParser(); c.optionxform = str; c.read(path)
if section != 'DEFAULT' and not c.has_section(section): c.add_section(section)
c.set(section, key, value)
with open(path, 'w') as f: c.write(f)
PYEOF
}
function iniget { "$HG_PY" -S - "$@" <<'PYEOF'
import configparser, sys
path, section, key = sys.argv[1:4]
c = configparser.RawConfigParser(); c.optionxform = str; c.read(path)
print(c.get(section, key, fallback=''))
PYEOF
}
function is_service_enabled {
    local s
    for s in "$@"; do
        [[ " $HG_ENABLED " == *" $s "* ]] && return 0
    done
    return 1
}
function echo_summary { echo "summary: $*"; }
function setup_develop { record setup_develop "$@"; }
function stop_process { record stop_process "$@"; }
function run_process { record run_process "$@"; }
function define_plugin { :; }
function plugin_requires { :; }
function get_python_exec_prefix { echo "$HG_BIN"; }
function trueorfalse {
    local default=$1 var=$2; local v=${!var:-$default}
    case "$v" in [Tt]rue|1|yes) echo True;; *) echo False;; esac
}
function die {
    local line=$1; shift
    echo "die (line $line): $*" >&2
    exit 1
}
'''

GRENADE_FUNCTIONS = r'''
# grenade's helpers, stood in for (grenade's functions source the target
# devstack's)
source "$TARGET_DEVSTACK_DIR/functions"
GRENADE_DB=$SAVE_DIR/grenade_db.ini
function resource_save {
    mkdir -p "$SAVE_DIR"
    iniset "$GRENADE_DB" "$1" "$2" "$3"
}
function resource_get {
    iniget "$GRENADE_DB" "$1" "$2"
}
function register_project_for_upgrade {
    local settings_file dir
    settings_file=$(caller | awk '{print $2}')
    dir=$(dirname "$settings_file")
    UPGRADE_PROJECTS+=" $1"
    PLUGIN_DIR[$1]=$dir
}
function ensure_services_started { record ensure_services_started "$@"; }
function ensure_services_stopped { record ensure_services_stopped "$@"; }
function upgrade_project { record upgrade_project "$@"; }
'''

GRENADERC = r'''
SAVE_DIR=$HG_ROOT/save
BASE_DEVSTACK_DIR=$HG_ROOT/devstack
TARGET_DEVSTACK_DIR=$HG_ROOT/devstack
BASE_DEVSTACK_BRANCH=stable/2025.1
TARGET_DEVSTACK_BRANCH=master
declare -A PLUGIN_DIR
UPGRADE_PROJECTS=${HG_UPGRADE_PROJECTS:-}
'''

STACKRC = r'''
DEST=$HG_ROOT/opt
SERVICE_HOST=10.9.9.9
ETCD_PORT=2379
SYSTEMCTL="$HG_BIN/systemctl --no-ask-password"
'''

OPENRC = r'''
record openrc "$@"
source "$TOP_DIR/stackrc"
'''

MANILA_CONF = '''[DEFAULT]
host = hagroup
enabled_share_backends = london
enabled_share_protocols = NFS,CIFS

[london]
share_driver = hacluster.testing.manila_driver.HADummyDriver
driver_handles_share_servers = False
share_backend_name = LONDON

[coordination]
backend_url = etcd3+http://user@10.1.2.3:2379,10.1.2.4:2379?timeout=5

[hacluster]
node_name = devnode
'''


def member(node=NODE, version='1.0.0', ready=True, state='active'):
    return {'node': node, 'member_id': node + '-1', 'version': version,
            'ready': ready, 'state': state, 'pid': 4242}


def cluster(members=None, leader=NODE, term=10, claims=(), locks=(),
            cycle='done', failed=0):
    if members is None:
        members = [member()]
    lead = None
    if leader:
        lead = {'node': leader, 'member_id': leader + '-1', 'term': term,
                'candidates': len(members)}
    tasks = [{'name': 'report_driver_status', 'mode': 'leader',
              'last_cycle': None},
             {'name': 'periodic_share_status_update', 'mode': 'fanout',
              'last_cycle': None if cycle is None else {
                  'cycle_id': '1-abc', 'status': cycle, 'node': leader,
                  'failed': failed}}]
    return {'cluster': CLUSTER, 'mode': 'etcd', 'members': members,
            'leader': lead, 'tasks': tasks, 'locks': list(locks),
            'claims': list(claims), 'warnings': [], 'health': 0}


def claim(resource_id, state='active', operation='create', node=NODE):
    return {'claim_id': 'c-' + resource_id, 'resource_type':
            'share_instance', 'resource_id': resource_id,
            'operation': operation, 'node': node, 'state': state}


SLOW = 'slow600-hacluster_grenade_inflight'
SLOW_INSTANCE = 'inst-' + SLOW


class Rig:
    """A devstack + grenade stand-in tree and the command stand-ins."""

    def __init__(self, root):
        self.root = root
        self.bin = root / 'bin'
        self.bin.mkdir()
        stub = self.bin / 'stub'
        stub.write_text(STUB % {'py': sys.executable})
        stub.chmod(0o755)
        for cmd in ('openstack', 'hacluster', 'etcdctl', 'systemctl',
                    'record'):
            (self.bin / cmd).symlink_to(stub)
        # the Python the checks read JSON with (no site: starts faster)
        py = self.bin / 'python3'
        py.write_text('#!/bin/sh\nexec %s -S "$@"\n' % sys.executable)
        py.chmod(0o755)
        devstack = root / 'devstack'
        devstack.mkdir()
        (devstack / 'functions').write_text(DEVSTACK_FUNCTIONS)
        (devstack / 'stackrc').write_text(STACKRC)
        (devstack / 'openrc').write_text(OPENRC)
        self.grenade = root / 'grenade'
        self.grenade.mkdir()
        (self.grenade / 'functions').write_text(GRENADE_FUNCTIONS)
        (self.grenade / 'grenaderc').write_text(GRENADERC)
        self.save = root / 'save'
        self.conf = root / 'manila.conf'
        self.conf.write_text(MANILA_CONF)
        self.calls_path = root / 'calls.jsonl'
        self.state_path = root / 'state.json'
        self.state = {
            'version': '1.0.0',
            'clusters': {CLUSTER: [cluster()]},
            'manila': {'shares': {}, 'snapshots': {}, 'types': {},
                       'rules': {}, 'create_status': {SLOW: 'creating'}},
        }
        self.write()

    # -- state ----------------------------------------------------------------

    def write(self):
        self.state_path.write_text(json.dumps(self.state))

    def read(self):
        self.state = json.loads(self.state_path.read_text())
        return self.state

    def statuses(self, *states):
        """The status JSON the next looks at the cluster see, in turn (the
        last one for good)."""
        self.read()
        self.state['clusters'][CLUSTER] = [copy.deepcopy(s) for s in states]
        self.write()

    def manila(self):
        return self.read()['manila']

    def calls(self, cmd=None):
        if not self.calls_path.exists():
            return []
        calls = [json.loads(line) for line in
                 self.calls_path.read_text().splitlines()]
        return [c for c in calls if cmd is None or c['cmd'] == cmd]

    def reset_calls(self):
        if self.calls_path.exists():
            self.calls_path.unlink()

    def saved(self):
        c = configparser.RawConfigParser()
        c.read(self.save / 'grenade_db.ini')
        return dict(c['hacluster']) if c.has_section('hacluster') else {}

    # -- running --------------------------------------------------------------

    def env(self, **extra):
        env = dict(os.environ)
        env.update({
            'PATH': '%s:%s' % (self.bin, env.get('PATH', '')),
            'HG_ROOT': str(self.root), 'HG_BIN': str(self.bin),
            'HG_PY': sys.executable, 'HG_STATE': str(self.state_path),
            'HG_CALLS': str(self.calls_path), 'HG_ENABLED': 'manila m-shr',
            'GRENADE_DIR': str(self.grenade),
            'TOP_DIR': str(self.root / 'devstack'),
            'MANILA_CONF': str(self.conf),
            'HACLUSTER_GRENADE_PYTHON': str(self.bin / 'python3'),
            'HACLUSTER_GRENADE_WAIT_TIMEOUT': '0',
            'HACLUSTER_GRENADE_WAIT_STEP': '0',
        })
        env.update(extra)
        return env

    def run(self, script, *args, ok=True, **env):
        out = subprocess.run(['bash', str(UPGRADE / script)] + list(args),
                             capture_output=True, text=True,
                             env=self.env(**env), timeout=120)
        if ok is not None:
            assert (out.returncode == 0) == ok, (
                'rc %d\nstdout:\n%s\nstderr:\n%s' % (
                    out.returncode, out.stdout[-3000:], out.stderr[-5000:]))
        return out

    def resources(self, *args, ok=True, **env):
        return self.run('resources.sh', *args, ok=ok, **env)


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


@pytest.fixture(scope='module')
def created_once(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp('created'))
    rig.statuses(cluster(), cluster(claims=[claim(SLOW_INSTANCE)]))
    rig.resources('create', HACLUSTER_GRENADE_WAIT_TIMEOUT='5')
    return rig


@pytest.fixture
def created(tmp_path, created_once):
    """After create: its slow create in flight (manila-share held the claim
    from the second look on). Run once; each test gets a copy."""
    rig = Rig(tmp_path)
    shutil.copy(created_once.state_path, rig.state_path)
    shutil.copy(created_once.calls_path, rig.calls_path)
    shutil.copytree(created_once.save, rig.save)
    rig.read()
    return rig


def upgraded(rig, **kwargs):
    """The state after a good upgrade: this node at 2.0.0 again a ready
    member, its cut-short create recovered into error, no claim left."""
    rig.read()
    rig.state['version'] = '2.0.0'
    rig.state['manila']['shares'][SLOW]['status'] = 'error'
    rig.write()
    kwargs = dict(dict(members=[member(version='2.0.0')], term=14), **kwargs)
    rig.statuses(cluster(**kwargs))


def fails(out, *texts):
    assert out.returncode != 0
    for text in texts:
        assert text in out.stderr, out.stderr[-3000:]


# -- settings -----------------------------------------------------------------


def _settings(rig, plugins, projects):
    script = rig.root / 'load.sh'
    script.write_text(
        'source "$GRENADE_DIR/grenaderc"\nsource "$GRENADE_DIR/functions"\n'
        'GRENADE_PLUGINS=%s\nsource %s\n'
        'echo "projects:$UPGRADE_PROJECTS dir:${PLUGIN_DIR[hacluster]}"\n'
        % (plugins, UPGRADE / 'settings'))
    return subprocess.run(['bash', str(script)], capture_output=True,
                          text=True, env=rig.env(HG_UPGRADE_PROJECTS=projects))


def test_settings_register_hacluster_after_manila(rig):
    out = _settings(rig, ',manila,hacluster', ' manila')
    assert out.returncode == 0, out.stderr
    assert 'projects: manila hacluster dir:%s' % UPGRADE in out.stdout


def test_settings_refuse_hacluster_before_manila(rig):
    out = _settings(rig, ',hacluster,manila', '')
    fails(out, "must be enabled after manila's")
    assert 'projects:' not in out.stdout


def test_settings_without_manila_grenade_plugin(rig):
    out = _settings(rig, ',hacluster', '')
    assert out.returncode == 0, out.stderr
    assert 'projects: hacluster' in out.stdout


# -- shutdown.sh --------------------------------------------------------------


def test_shutdown_saves_status_and_snapshot_then_stops_m_shr(rig):
    rig.run('shutdown.sh')
    saved = json.loads((rig.save / 'hacluster' /
                        'status-hagroup_london.before-shutdown.json')
                       .read_text())
    assert saved == cluster()
    assert (rig.save / 'hacluster' / 'etcd-snapshot.db').read_text() == \
        'etcd snapshot\n'
    assert (rig.save / 'hacluster' /
            'status-hagroup_london.after-shutdown.json').exists()
    calls = [(c['cmd'], c['argv'][0] if c['argv'] else None)
             for c in rig.calls()]
    order = [calls.index(('hacluster', 'status')),
             calls.index(('etcdctl', '--endpoints=http://10.1.2.3:2379,'
                                     'http://10.1.2.4:2379')),
             calls.index(('stop_process', 'm-shr')),
             calls.index(('ensure_services_stopped', 'm-shr'))]
    assert order == sorted(order), calls
    snap = rig.calls('etcdctl')[0]
    assert snap['etcdctl_api'] == '3'
    assert snap['argv'][1:] == ['snapshot', 'save', str(
        rig.save / 'hacluster' / 'etcd-snapshot.db')]


def test_shutdown_dies_without_a_snapshot_and_leaves_m_shr_alone(rig):
    rig.state['etcd_down'] = True
    rig.write()
    out = rig.run('shutdown.sh', ok=False)
    fails(out, 'cannot take an etcd snapshot')
    assert not rig.calls('stop_process')


def test_shutdown_uses_devstacks_etcdctl_and_extra_options(rig):
    # lib/etcd3 installs etcdctl into $DEST/bin
    etcdctl = rig.root / 'opt' / 'bin' / 'etcdctl'
    etcdctl.parent.mkdir(parents=True)
    etcdctl.symlink_to(rig.bin / 'stub')
    rig.run('shutdown.sh',
            HACLUSTER_ETCDCTL_ARGS='--user root --cacert /etc/ca.pem')
    snap = rig.calls('etcdctl')[0]
    assert snap['path'] == str(etcdctl)
    assert snap['argv'][1:5] == ['--user', 'root', '--cacert', '/etc/ca.pem']


# -- upgrade.sh ---------------------------------------------------------------


def test_upgrade_installs_restarts_and_waits_for_the_new_version(rig):
    rig.state['version'] = '2.0.0'
    rig.write()
    # the restart takes a moment: the old incarnation, the new one not yet
    # serving, then ready
    rig.statuses(cluster(),
                 cluster(members=[member(version='2.0.0', ready=False)]),
                 cluster(members=[member(version='2.0.0')]))
    out = rig.run('upgrade.sh', HACLUSTER_GRENADE_WAIT_TIMEOUT='10',
                  HACLUSTER_GRENADE_WAIT_STEP='0.01')
    assert 'SUCCESS: End' in out.stdout
    assert 'not the installed 2.0.0' in out.stdout     # it waited
    calls = rig.calls()
    names = [c['cmd'] for c in calls]
    assert calls[names.index('setup_develop')]['argv'] == [
        str(rig.root / 'opt' / 'hacluster')]
    systemctl = [c['argv'] for c in rig.calls('systemctl')]
    assert systemctl == [['--no-ask-password', 'enable',
                          'devstack@m-shr.service'],
                         ['--no-ask-password', 'restart',
                          'devstack@m-shr.service']]
    assert rig.calls('ensure_services_started')[0]['argv'] == ['m-shr']
    assert rig.calls('upgrade_project')[0]['argv'] == [
        'hacluster', str(UPGRADE), 'stable/2025.1', 'master']
    assert names.index('setup_develop') < names.index('systemctl') < \
        names.index('ensure_services_started') < \
        len(names) - names[::-1].index('hacluster')
    assert len(rig.calls('hacluster')) >= 4     # --version + 3 looks


def test_upgrade_dies_if_the_node_does_not_come_back_at_the_new_version(rig):
    rig.state['version'] = '2.0.0'
    rig.write()
    out = rig.run('upgrade.sh', ok=False)
    fails(out, 'manila-share on devnode to be a ready member of '
          'hagroup@london at hacluster 2.0.0',
          'member: this node (devnode): version 1.0.0, not the installed '
          '2.0.0')
    assert 'SUCCESS' not in out.stdout


def test_upgrade_dies_if_the_node_is_not_a_member(rig):
    rig.state['version'] = '2.0.0'
    rig.write()
    rig.statuses(cluster(members=[member('othernode', '2.0.0')],
                         leader='othernode'))
    fails(rig.run('upgrade.sh', ok=False),
          'this node (devnode) is not a member (members: othernode)')


def test_upgrade_without_m_shr_here_only_installs(rig):
    rig.run('upgrade.sh', HG_ENABLED='manila')
    assert rig.calls('setup_develop')
    assert not rig.calls('systemctl')
    assert not rig.calls('hacluster')


# -- resources.sh create ------------------------------------------------------


def test_create(created):
    rig = created
    m = rig.manila()
    assert set(m['shares']) == {'hacluster_grenade_share1',
                                'hacluster_grenade_share2', SLOW}
    assert m['types']['hacluster_grenade'] == {
        'id': 'type-hacluster_grenade', 'dhss': 'False',
        'extra_specs': ['share_backend_name=LONDON'],
        'snapshot_support': ['True']}
    assert all(s['proto'] == 'NFS' and s['share_type'] == 'hacluster_grenade'
               for s in m['shares'].values())
    assert m['snapshots']['hacluster_grenade_snapshot']['share'] == \
        'hacluster_grenade_share1'
    assert m['rules']['hacluster_grenade_share2'][0]['access_to'] == \
        '0.0.0.0/0'
    saved = rig.saved()
    assert saved['exports_share1'] == (
        '10.0.0.1:/shares/id-hacluster_grenade_share1,'
        '10.0.0.2:/shares/id-hacluster_grenade_share1')
    assert saved['term_hagroup_london'] == '10'
    assert saved['slow_share'] == 'id-' + SLOW
    assert saved['slow_instances'] == SLOW_INSTANCE
    assert saved['share_type_created'] == 'True'
    # the slow create comes last, and is not waited for (it is still
    # creating): only until manila-share holds its claim
    creates = [c['argv'] for c in rig.calls('openstack')
               if c['argv'][:2] in (['share', 'create'],
                                    ['share', 'snapshot'],
                                    ['share', 'access'])
               and c['argv'][2] in ('create', 'NFS')]
    assert creates[-1][:5] == ['share', 'create', 'NFS', '1', '--name']
    assert creates[-1][5] == SLOW
    assert m['shares'][SLOW]['status'] == 'creating'
    assert rig.calls('openrc')[0]['argv'] == ['admin', 'demo']


def test_create_dies_on_a_share_in_error(rig):
    rig.state['manila']['create_status']['hacluster_grenade_share2'] = 'error'
    rig.write()
    fails(rig.resources('create', ok=False),
          'share hacluster_grenade_share2 to be available: never will be: '
          'share hacluster_grenade_share2 is error')


def test_create_waits_for_a_leader(rig):
    rig.statuses(cluster(leader=None))
    fails(rig.resources('create', ok=False),
          'cluster hagroup@london: no leader: 1 members alive')
    assert not rig.manila()['shares']


def test_create_dies_if_the_slow_create_never_reaches_manila_share(rig):
    fails(rig.resources('create', ok=False),
          'the create of share id-%s to reach manila-share' % SLOW,
          'no claim on %s yet' % SLOW_INSTANCE)


# -- resources.sh verify ------------------------------------------------------


def test_verify_pre_upgrade_allows_the_slow_create_in_flight(created):
    created.resources('verify', 'pre-upgrade')
    created.resources('verify', 'pre-upgrade')


def test_verify_post_upgrade_twice(created):
    rig = created
    upgraded(rig)
    before = rig.manila()
    rig.reset_calls()
    out = rig.resources('verify', 'post-upgrade')
    assert "hacluster 'verify post-upgrade': SUCCESS" in out.stdout
    out = rig.resources('verify', 'post-upgrade')
    assert "hacluster 'verify post-upgrade': SUCCESS" in out.stdout
    # and it changed nothing
    assert rig.manila() == before
    assert not [c for c in rig.calls('openstack')
                if {'create', 'delete', 'set'} & set(c['argv'])]


def test_verify_post_upgrade_waits_for_the_cluster_to_settle(created):
    rig = created
    upgraded(rig)
    rig.statuses(
        cluster(members=[member(version='2.0.0')], term=14,
                claims=[claim(SLOW_INSTANCE, state='recovering')]),
        cluster(members=[member(version='2.0.0')], term=14, cycle='running'),
        cluster(members=[member(version='2.0.0')], term=14))
    out = rig.resources('verify', 'post-upgrade',
                        HACLUSTER_GRENADE_WAIT_TIMEOUT='10',
                        HACLUSTER_GRENADE_WAIT_STEP='0.01')
    assert 'claims left' in out.stdout
    assert 'fan-out cycle not done' in out.stdout


CHECKS = {
    'a claim left': (
        dict(claims=[claim('inst-other', state='orphaned', node='n2')]),
        'claims left: 1: create share_instance inst-other of n2 (orphaned)'),
    'the slow create still claimed': (
        dict(claims=[claim(SLOW_INSTANCE)]), 'claims left'),
    'no leader': (dict(leader=None), 'no leader: 1 members alive'),
    'a leader that is not a member': (
        dict(leader='ghost'), 'no leader: the head of the election queue '
                              '(ghost, member ghost-1) is not a live member'),
    'term went down': (dict(term=3),
                       'leader term went down: term 3 (devnode) < 10'),
    'a lock held': (
        dict(locks=[{'name': 'manila-share-x', 'holder': NODE,
                     'token': 77}]),
        'locks held: 1: manila-share-x by devnode (token 77)'),
    'a fan-out cycle running': (
        dict(cycle='running'),
        'fan-out cycle not done: task periodic_share_status_update: cycle '
        '1-abc is running'),
    'a fan-out cycle that gave up items': (
        dict(failed=2), 'cycle 1-abc gave up 2 items'),
    'no fan-out cycle': (dict(cycle=None), 'has no cycle yet'),
}


@pytest.mark.parametrize('case', sorted(CHECKS))
def test_verify_fails_naming_the_check(created, case):
    changes, message = CHECKS[case]
    rig = created
    upgraded(rig, **changes)
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'cluster hagroup@london', message)


def test_verify_fails_on_two_leaders(created):
    # nodes of two key layouts elect apart: each queue has its leader, and
    # the status command of either version sees only its own
    rig = created
    upgraded(rig)
    rig.state['etcd_keys'] = [
        '/hacluster/v1/%s/leader/7a-1-w' % CLUSTER,
        '/hacluster/v1/%s/members/%s' % (CLUSTER, NODE),
        '/hacluster/v2/%s/leader/7b-1-w' % CLUSTER,
        '/hacluster/v2/%s/leader/7c-1-w' % CLUSTER,
        '/hacluster/v1/other@backend/leader/7d-1-w']
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'two leaders: election queues of hagroup@london under '
          '/hacluster/v1/ (1 candidates), /hacluster/v2/ (2 candidates)')


def test_verify_fails_when_etcd_cannot_be_read(created):
    rig = created
    upgraded(rig)
    rig.state['etcd_down'] = True
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'etcd: etcdctl get --prefix /hacluster/ failed (exit 1): '
          'context deadline exceeded')


def test_verify_fails_when_status_fails(created):
    rig = created
    upgraded(rig)
    rig.state['status_fails'] = 'no etcd at 10.1.2.3:2379'
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'status: hacluster status failed (exit 1): etcd is unavailable')


def test_verify_fails_when_this_node_runs_another_version(created):
    rig = created
    upgraded(rig)
    rig.statuses(cluster(members=[member(version='1.0.0')], term=14))
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'member: this node (devnode): version 1.0.0, not the installed '
          '2.0.0')


def test_verify_fails_when_this_node_is_not_ready(created):
    rig = created
    upgraded(rig)
    rig.statuses(cluster(members=[member(version='2.0.0', ready=False,
                                         state='leaving')], term=14))
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'state leaving, not ready')


def test_verify_fails_on_a_changed_export_location(created):
    rig = created
    upgraded(rig)
    rig.state['manila']['shares']['hacluster_grenade_share1']['exports'] = [
        '10.0.0.9:/elsewhere']
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'export locations of share hacluster_grenade_share1 changed: '
          "'10.0.0.1:/shares/id-hacluster_grenade_share1,10.0.0.2:/shares/"
          "id-hacluster_grenade_share1' when created, '10.0.0.9:/elsewhere' "
          'now')


def test_verify_fails_on_a_share_in_error(created):
    rig = created
    upgraded(rig)
    rig.state['manila']['shares']['hacluster_grenade_share2']['status'] = \
        'error'
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'share hacluster_grenade_share2 is error, not available')


def test_verify_fails_on_a_snapshot_or_rule_gone_wrong(created):
    rig = created
    upgraded(rig)
    rig.state['manila']['rules']['hacluster_grenade_share2'][0]['state'] = \
        'error'
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'access rule on hacluster_grenade_share2 is error, not active')
    rig.read()
    del rig.state['manila']['snapshots']['hacluster_grenade_snapshot']
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'snapshot hacluster_grenade_snapshot is gone')


def test_verify_fails_if_the_slow_create_never_settles(created):
    rig = created
    upgraded(rig)
    rig.state['manila']['shares'][SLOW]['status'] = 'creating'
    rig.write()
    fails(rig.resources('verify', 'post-upgrade', ok=False),
          'the slow create of share id-%s to settle: not so after 0s: '
          'share id-%s is creating' % (SLOW, SLOW))


def test_verify_pre_upgrade_fails_on_a_claim_of_a_settled_share(created):
    rig = created
    rig.state['manila']['shares'][SLOW]['status'] = 'available'
    rig.write()
    # its claim must be gone once the share is available
    rig.statuses(cluster(claims=[claim(SLOW_INSTANCE)]))
    fails(rig.resources('verify', 'pre-upgrade', ok=False), 'claims left')


# -- resources.sh verify_noapi ------------------------------------------------


def _shut_down(rig):
    rig.run('shutdown.sh')
    # this node left; its cut-short create awaits recovery
    rig.statuses(cluster(members=[], leader=None,
                         claims=[claim(SLOW_INSTANCE, state='orphaned')]))


def test_verify_noapi(created):
    rig = created
    _shut_down(rig)
    rig.reset_calls()
    rig.resources('verify_noapi', 'pre-upgrade')
    rig.resources('verify_noapi', 'pre-upgrade')
    # no API: not one openstack command
    assert not rig.calls('openstack')


def test_verify_noapi_with_other_members_alive(created):
    rig = created
    rig.run('shutdown.sh')
    rig.statuses(cluster(members=[member('node2')], leader='node2', term=12))
    rig.resources('verify_noapi', 'pre-upgrade')


@pytest.mark.parametrize('status, message', [
    (cluster(), 'member: this node (devnode) is still a member (pid 4242)'),
    (cluster(members=[], leader=NODE),
     'no leader: the head of the election queue (devnode, member '
     'devnode-1) is not a live member'),
    (cluster(members=[], leader=None,
             claims=[claim('inst-other', state='orphaned')]), 'claims left'),
    (cluster(members=[member('node2')], leader=None),
     'no leader: 1 members alive'),
    (cluster(members=[member('node2')], leader='node2', term=2),
     'leader term went down'),
])
def test_verify_noapi_fails(created, status, message):
    rig = created
    rig.run('shutdown.sh')
    rig.statuses(status)
    fails(rig.resources('verify_noapi', 'pre-upgrade', ok=False), message)


def test_verify_noapi_needs_the_snapshot(created):
    rig = created
    rig.statuses(cluster(members=[], leader=None))
    fails(rig.resources('verify_noapi', 'pre-upgrade', ok=False),
          'no etcd snapshot at %s' % (rig.save / 'hacluster' /
                                      'etcd-snapshot.db'))


# -- resources.sh destroy -----------------------------------------------------


def test_destroy(created):
    rig = created
    upgraded(rig)
    rig.reset_calls()
    out = rig.resources('destroy')
    assert "hacluster 'destroy': SUCCESS" in out.stdout
    m = rig.manila()
    assert m['shares'] == {} and m['snapshots'] == {} and m['types'] == {}
    deletes = [c['argv'] for c in rig.calls('openstack')
               if 'delete' in c['argv']]
    assert deletes == [
        ['share', 'snapshot', 'delete', 'hacluster_grenade_snapshot'],
        ['share', 'delete', 'hacluster_grenade_share1'],
        ['share', 'delete', 'hacluster_grenade_share2'],
        ['share', 'delete', 'id-' + SLOW],
        ['share', 'type', 'delete', 'hacluster_grenade']]
    # each deletion waited for: the share looked up after its delete
    shows = [c['argv'][:3] for c in rig.calls('openstack')]
    i = shows.index(['share', 'delete', 'hacluster_grenade_share1'])
    assert shows[i + 1] == ['share', 'show', 'hacluster_grenade_share1']
    # again: nothing left to delete
    rig.reset_calls()
    rig.resources('destroy')
    assert not [c for c in rig.calls('openstack') if 'delete' in c['argv']]


def test_destroy_keeps_a_share_type_it_did_not_make(rig):
    rig.state['manila']['types']['hacluster_grenade'] = {'id': 't'}
    rig.write()
    rig.statuses(cluster(), cluster(claims=[claim(SLOW_INSTANCE)]))
    rig.resources('create', HACLUSTER_GRENADE_WAIT_TIMEOUT='5')
    assert 'share_type_created' not in rig.saved()
    rig.resources('destroy')
    assert 'hacluster_grenade' in rig.manila()['types']


def test_destroy_dies_when_a_delete_fails(created):
    rig = created
    rig.state['manila']['delete_fails'] = ['hacluster_grenade_share1']
    rig.write()
    fails(rig.resources('destroy', ok=False), 'cannot be deleted')
    assert 'hacluster_grenade_share2' in rig.manila()['shares']


def test_force_destroy_is_best_effort(created):
    rig = created
    rig.state['manila']['delete_fails'] = ['hacluster_grenade_share1']
    rig.write()
    out = rig.resources('force_destroy')
    assert 'WARNING: hacluster grenade: share hacluster_grenade_share1 to ' \
        'be deleted' in out.stdout
    m = rig.manila()
    assert set(m['shares']) == {'hacluster_grenade_share1'}
    assert m['types'] == {} and m['snapshots'] == {}
    deletes = [c['argv'] for c in rig.calls('openstack')
               if 'delete' in c['argv'] and c['argv'][1] != 'type']
    assert all('--force' in argv for argv in deletes), deletes


# -- shell hygiene ------------------------------------------------------------


def test_every_devstack_file_is_shellcheck_clean():
    shellcheck = shutil.which('shellcheck')
    if shellcheck is None:
        pytest.skip('shellcheck is not installed (tools/bootstrap installs '
                    'it with apt)')
    files = sorted(str(p) for p in (ROOT / 'devstack').rglob('*')
                   if p.is_file())
    assert str(UPGRADE / 'resources.sh') in files
    out = subprocess.run([shellcheck] + files, capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bootstrap_installs_shellcheck():
    text = (ROOT / 'tools' / 'bootstrap').read_text()
    assert 'command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)' \
        in text
