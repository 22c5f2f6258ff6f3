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

import subprocess
import sys

from oslo_config import cfg
import pytest

from hacluster import exceptions
from hacluster import opts


def test_list_opts_names_every_option_and_returns_copies():
    listed = dict(opts.list_opts())
    names = {o.name for o in listed['hacluster']}
    assert names == {'backend_url', 'node_name', 'cluster', 'lease_ttl',
                     'renew_deadline',
                     'renew_interval', 'request_timeout', 'task_spacing',
                     'fencing', 'watchdog_timeout', 'watchdog_device',
                     'metrics_port', 'metrics_host', 'metrics_textfile',
                     'metrics_textfile_interval'}
    assert [o.name for o in listed['coordination']] == ['backend_url']
    assert listed['hacluster'][0] is not opts.hacluster_opts[0]


def test_the_config_generator_writes_a_sample(tmp_path):
    out = tmp_path / 'hacluster.conf.sample'
    subprocess.run([sys.executable, '-m', 'oslo_config.generator',
                    '--namespace', 'hacluster', '--output-file', str(out)],
                   check=True, capture_output=True, timeout=60)
    text = out.read_text()
    assert '[hacluster]' in text and '#renew_deadline = 7.0' in text
    assert '[coordination]' in text and '#backend_url' in text


def conf_with(**hacluster):
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], project='test')
    for key, value in hacluster.items():
        conf.set_override(key, value, group='hacluster')
    return conf


def test_a_coordinator_is_built_from_config(tmp_path):
    conf = conf_with(node_name='n1', lease_ttl=6, renew_deadline=4,
                     renew_interval=1)
    conf.set_override('backend_url', 'etcd3+http://127.0.0.1:1,h:2',
                      group='coordination')
    c = opts.coordinator_from_conf(conf, cluster='host@backend')
    assert (c.cluster, c.node, c.session.lease_ttl) == ('host@backend',
                                                        'n1', 6)
    assert c.client.endpoints == ['127.0.0.1:1', 'h:2']


def test_bad_timings_in_config_name_the_option_as_written():
    conf = conf_with(node_name='n1', lease_ttl=5, renew_deadline=6)
    conf.set_override('backend_url', 'etcd3+http://h:1', group='coordination')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.coordinator_from_conf(conf, cluster='c')
    assert '[hacluster] lease_ttl' in str(e.value)
    assert '[hacluster] renew_deadline' in str(e.value)


def test_a_bad_url_in_config_names_the_option():
    conf = conf_with(node_name='n1')
    conf.set_override('backend_url', 'etcd3+http://u:pw@h:x',
                      group='coordination')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.coordinator_from_conf(conf, cluster='c')
    assert '[coordination] backend_url' in str(e.value)
    assert 'pw@' not in str(e.value)


def test_no_url_means_single_node_in_the_given_lock_path(tmp_path):
    conf = conf_with(node_name='n1')
    c = opts.coordinator_from_conf(conf, cluster='c', lock_path=str(tmp_path))
    assert c.single_node
