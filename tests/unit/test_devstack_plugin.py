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

"""devstack/plugin.sh run by bash with devstack's helpers stood in for.

The stand-ins for ``iniset``/``iniget`` edit the file with Python's
configparser; the resulting manila.conf is then read by oslo.config with
hacluster's options, as manila-share would read it.
"""

import configparser
import os
import pathlib
import subprocess
import sys

from oslo_config import cfg
import pytest

from hacluster import opts

ROOT = pathlib.Path(__file__).resolve().parents[2]

STUBS = r'''
set -eu
PY=%(py)s
function iniset { $PY - "$@" <<'PYEOF'
import configparser, sys
path, section, key, value = sys.argv[1:5]
c = configparser.RawConfigParser(); c.optionxform = str; c.read(path)
if section != 'DEFAULT' and not c.has_section(section): c.add_section(section)
c.set(section, key, value)
with open(path, 'w') as f: c.write(f)
PYEOF
}
function iniget { $PY - "$@" <<'PYEOF'
import configparser, sys
path, section, key = sys.argv[1:4]
c = configparser.RawConfigParser(); c.optionxform = str; c.read(path)
print(c.get(section, key, fallback=''))
PYEOF
}
function is_service_enabled { return 0; }
function echo_summary { echo "summary: $*"; }
function setup_develop { echo "setup_develop $*"; }
function define_plugin { :; }
function plugin_requires { :; }
function trueorfalse {
    local default=$1 var=$2; local v=${!var:-$default}
    case "$v" in [Tt]rue|1|yes) echo True;; *) echo False;; esac
}
function hostname { echo devnode; }
DEST=/opt/stack
SERVICE_HOST=10.1.2.3
ETCD_PORT=2379
MANILA_CONF=%(conf)s
source %(root)s/devstack/settings
source %(root)s/devstack/plugin.sh "$@"
'''


def _run(tmp_path, *phase, env=None):
    conf = tmp_path / 'manila.conf'
    script = tmp_path / 'run.sh'
    script.write_text(STUBS % {'py': sys.executable, 'conf': conf,
                               'root': ROOT})
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run(['bash', str(script)] + list(phase),
                         capture_output=True, text=True, env=full_env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def manila_conf(tmp_path):
    conf = tmp_path / 'manila.conf'
    conf.write_text('[DEFAULT]\nenabled_share_backends = london,paris\n'
                    '[london]\nshare_driver = '
                    'manila.tests.share.drivers.dummy.DummyDriver\n'
                    '[paris]\nshare_driver = '
                    'manila.share.drivers.generic.GenericShareDriver\n')
    return conf


def test_post_config_points_manila_at_the_ha_manager(tmp_path, manila_conf):
    _run(tmp_path, 'stack', 'post-config',
         env={'HACLUSTER_MANILA_HOST': 'hagroup'})
    c = configparser.RawConfigParser()
    c.read(manila_conf)
    assert c.get('DEFAULT', 'share_manager') == \
        'hacluster.manila.manager.HAShareManager'
    assert c.get('DEFAULT', 'host') == 'hagroup'
    assert c.get('coordination', 'backend_url') == \
        'etcd3+http://10.1.2.3:2379'
    assert c.get('hacluster', 'node_name') == 'devnode'
    # the DummyDriver backend gets the active-active one; another driver is
    # left alone (the manager will refuse it, by name, if it has not
    # opted in)
    assert c.get('london', 'share_driver') == \
        'hacluster.testing.manila_driver.HADummyDriver'
    assert c.get('paris', 'share_driver') == \
        'manila.share.drivers.generic.GenericShareDriver'

    # and what it wrote is a valid hacluster configuration
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[str(manila_conf)])
    coord = opts.coordinator_from_conf(conf, cluster='hagroup@london')
    assert coord.node == 'devnode'
    assert coord.session.lease_ttl == 10


def test_install_phase_installs_from_the_checkout(tmp_path, manila_conf):
    out = _run(tmp_path, 'stack', 'install')
    assert 'setup_develop /opt/stack/hacluster' in out


def test_host_is_left_alone_unless_asked(tmp_path, manila_conf):
    _run(tmp_path, 'stack', 'post-config',
         env={'HACLUSTER_HA_DUMMY_DRIVER': 'False'})
    c = configparser.RawConfigParser()
    c.read(manila_conf)
    assert not c.has_option('DEFAULT', 'host')
    assert c.get('london', 'share_driver') == \
        'manila.tests.share.drivers.dummy.DummyDriver'
