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

"""Where hacluster takes its etcd URL from: ``[hacluster] backend_url``,
else manila's ``[coordination] backend_url`` (hacluster.url.resolve), and
the manila.conf the README documents, parsed as manila and hacluster read
it."""

import logging
import pathlib
import re
import textwrap

from oslo_config import cfg
import pytest

from hacluster import exceptions
from hacluster import opts
from hacluster import url

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- the resolver ------------------------------------------------------------

def test_hacluster_backend_url_takes_precedence():
    u = url.resolve('etcd3+http://a:1,b:2,c:3', 'etcd3+http://a:1')
    assert u.endpoints == [('a', 1), ('b', 2), ('c', 3)]
    assert u.option == '[hacluster] backend_url'


def test_coordination_backend_url_is_the_fallback():
    for unset in (None, '', '   '):
        u = url.resolve(unset, 'etcd3+http://a:1')
        assert (u.kind, u.endpoints) == ('etcd', [('a', 1)])
        assert u.option == '[coordination] backend_url'


def test_neither_set_is_single_node_mode():
    u = url.resolve(None, None)
    assert (u.kind, u.path) == ('file', None)
    u = url.resolve(None, 'file:///var/lib/manila')
    assert (u.kind, u.path) == ('file', '/var/lib/manila')


def test_hacluster_may_be_single_node_while_manila_uses_etcd():
    u = url.resolve('file:///var/lib/manila/ha', 'etcd3+http://a:1')
    assert (u.kind, u.path) == ('file', '/var/lib/manila/ha')


def test_toozs_timing_options_are_ignored_in_coordination(caplog):
    caplog.set_level(logging.DEBUG, logger='hacluster.url')
    u = url.resolve(None, 'etcd3+https://a:1?lock_timeout=30&timeout=30&'
                          'membership_timeout=20&ca_cert=/ca.pem')
    assert u.ignored == {'lock_timeout': '30', 'timeout': '30',
                         'membership_timeout': '20'}
    # tooz's timeout is its socket timeout and lease TTL, not ours
    assert u.timeout is None
    assert u.ca_cert == '/ca.pem'          # means the same to both
    for name in ('lock_timeout', 'timeout', 'membership_timeout'):
        assert any(r.levelno == logging.DEBUG and name in r.getMessage()
                   and 'ignoring' in r.getMessage()
                   for r in caplog.records), name
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_toozs_options_are_refused_in_hacluster_backend_url():
    with pytest.raises(exceptions.ConfigurationError) as e:
        url.resolve('etcd3+http://a:1?lock_timeout=30', None)
    msg = str(e.value)
    assert '[hacluster] backend_url' in msg and "'lock_timeout'" in msg
    assert 'option of tooz' in msg
    # hacluster's own meaning of timeout there: seconds per request
    assert url.resolve('etcd3+http://a:1?timeout=1.5', None).timeout == 1.5


def test_a_coordination_url_tooz_cannot_read_is_used_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger='hacluster.url')
    u = url.resolve(None, 'etcd3+http://a:1,b:2,c:3')
    assert len(u.endpoints) == 3
    [warning] = caplog.records
    assert '3 endpoints' in warning.getMessage()
    assert '[hacluster] backend_url' in warning.getMessage()
    caplog.clear()
    u = url.resolve(None, 'etcd3+http://ops:s3cret@a:1')
    assert u.username == 'ops'
    [warning] = caplog.records
    assert 'authenticate' in warning.getMessage()
    assert 's3cret' not in warning.getMessage()
    caplog.clear()
    url.resolve(None, 'etcd3+http://a:1')
    url.resolve('etcd3+http://a:1,b:2', 'etcd3+http://a:1')
    assert not caplog.records


@pytest.mark.parametrize('hacluster_url, coordination_url, option, words', [
    ('etcd3+http://a:port', 'etcd3+http://a:1', '[hacluster] backend_url',
     "port 'port' is not a number"),
    (None, 'etcd3+http://a:port', '[coordination] backend_url',
     "port 'port' is not a number"),
    ('zookeeper://a:1', None, '[hacluster] backend_url',
     'unsupported scheme'),
    (None, 'etcd3+http://a:1?colour=red', '[coordination] backend_url',
     "unknown option 'colour'"),
    ('etcd3+http://u:pw@a:x', None, '[hacluster] backend_url',
     'is not a number'),
])
def test_bad_values_are_named_with_their_option(hacluster_url,
                                                coordination_url, option,
                                                words):
    with pytest.raises(exceptions.ConfigurationError) as e:
        url.resolve(hacluster_url, coordination_url)
    assert option in str(e.value) and words in str(e.value)
    assert 'pw@' not in str(e.value)


def test_a_parsed_url_passes_through_parse():
    u = url.resolve(None, 'etcd3+http://a:1?lock_timeout=3')
    assert url.parse(u) is u


# -- through the configuration -----------------------------------------------

def _conf(tmp_path, text, manila_opts=True):
    path = tmp_path / 'manila.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    if manila_opts:
        conf.register_opts([cfg.StrOpt('state_path',
                                       default='/var/lib/manila'),
                            cfg.StrOpt('host'),
                            cfg.ListOpt('enabled_share_backends')])
    conf([], project='test', default_config_files=[str(path)])
    return conf


def test_opts_backend_url_reads_both_options(tmp_path):
    conf = _conf(tmp_path, '[coordination]\nbackend_url = etcd3+http://a:1\n'
                           '[hacluster]\nbackend_url = etcd3+http://a:1,b:2\n')
    assert opts.backend_url(conf).endpoints == [('a', 1), ('b', 2)]
    conf = _conf(tmp_path, '[coordination]\nbackend_url = '
                           'etcd3+http://a:1?lock_timeout=30\n')
    assert opts.backend_url(conf).endpoints == [('a', 1)]


def test_state_path_interpolation_works(tmp_path):
    conf = _conf(tmp_path, '[DEFAULT]\nstate_path = %s\n[coordination]\n'
                           'backend_url = file://$state_path/locks\n'
                           % tmp_path)
    u = opts.backend_url(conf)
    assert (u.kind, u.path) == ('file', '%s/locks' % tmp_path)


def test_the_coordinator_is_built_on_the_resolved_url(tmp_path):
    conf = _conf(tmp_path, '[coordination]\nbackend_url = '
                           'etcd3+http://127.0.0.1:1?lock_timeout=30\n'
                           '[hacluster]\nnode_name = n1\n')
    c = opts.coordinator_from_conf(conf, cluster='host@backend')
    assert c.client.endpoints == ['127.0.0.1:1']
    conf = _conf(tmp_path, '[coordination]\nbackend_url = '
                           'etcd3+http://127.0.0.1:1\n[hacluster]\n'
                           'node_name = n1\nbackend_url = '
                           'etcd3+http://127.0.0.1:2,127.0.0.1:3\n')
    c = opts.coordinator_from_conf(conf, cluster='host@backend')
    assert c.client.endpoints == ['127.0.0.1:2', '127.0.0.1:3']


def test_a_bad_hacluster_url_names_that_option(tmp_path):
    conf = _conf(tmp_path, '[hacluster]\nnode_name = n1\n'
                           'backend_url = etcd3+http://h:x\n')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.coordinator_from_conf(conf, cluster='c')
    assert 'invalid [hacluster] backend_url' in str(e.value)


def test_the_cluster_is_named_as_the_ha_manager_names_it(tmp_path):
    conf = _conf(tmp_path, '[DEFAULT]\nhost = hagroup\n'
                           'enabled_share_backends = dummy\n')
    assert opts.cluster_name(conf) == 'hagroup@dummy'
    # the manager passes the host manila gives it (host@backend)
    assert opts.cluster_name(conf, host='hagroup@other') == 'hagroup@other'
    conf = _conf(tmp_path, '[DEFAULT]\nhost = hagroup\n'
                           'enabled_share_backends = a, b\n[hacluster]\n'
                           'cluster = mine\n')
    assert opts.cluster_name(conf, host='hagroup@a') == 'mine'
    conf = _conf(tmp_path, '[DEFAULT]\nhost = hagroup\n'
                           'enabled_share_backends = a,b\n')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.cluster_name(conf)
    assert 'hagroup@a, hagroup@b' in str(e.value)
    conf = _conf(tmp_path, '[DEFAULT]\nhost = hagroup\n')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.cluster_name(conf)
    assert 'enabled_share_backends' in str(e.value)


def test_only_the_resolver_reads_the_url_options():
    """Every reader of the backend URL goes through opts.backend_url
    (hacluster.url.resolve): no other module reads the options."""
    pattern = re.compile(r'(\.coordination|\.hacluster|\[GROUP\])'
                         r'\.backend_url\b')
    readers = []
    for path in sorted((ROOT / 'hacluster').rglob('*.py')):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split('#')[0]) and '``' not in line:
                readers.append(str(path.relative_to(ROOT)))
    assert readers == ['hacluster/opts.py'], readers


# -- the documented manila.conf ----------------------------------------------

def _ini_blocks(text, fence):
    """The ini blocks of a Markdown (```ini) or reST (code-block:: ini)
    text that are oslo.config files (not devstack's local.conf)."""
    if fence == 'md':
        blocks = re.findall(r'```ini\n(.*?)```', text, re.S)
    else:
        blocks = [textwrap.dedent(m.group(2)) for m in re.finditer(
            r'^( *)\.\. code-block:: ini\n\n((?:\1   .*\n|\n)+)', text,
            re.M)]
    return [b for b in blocks if not b.lstrip().startswith('[[')]


def _documented_configs():
    out = []
    for path, fence in ((ROOT / 'README.md', 'md'),
                        (ROOT / 'doc/source/admin/deploy.rst', 'rst')):
        for i, block in enumerate(_ini_blocks(path.read_text(), fence)):
            out.append(pytest.param(block, id='%s-%d' % (path.name, i)))
    return out


def _every_documented_config():
    out = []
    paths = [(ROOT / 'README.md', 'md')] + [
        (p, 'rst') for p in sorted((ROOT / 'doc/source').rglob('*.rst'))]
    for path, fence in paths:
        for i, block in enumerate(_ini_blocks(path.read_text(), fence)):
            out.append(pytest.param(block, id='%s-%d' % (path.name, i)))
    return out


def _values_set(text, conf):
    """``(group, name, value)`` of every option ``text`` sets."""
    group = None
    for line in text.splitlines():
        m = re.match(r'^\[(\w+)\]', line)
        if m:
            group = None if m.group(1) == 'DEFAULT' else m.group(1)
            continue
        m = re.match(r'^(\w+)\s*=', line)
        if m:
            yield group, m.group(1), (conf[group] if group else
                                      conf)[m.group(1)]


def _manila_conf(text, tmp_path):
    """``text`` read as manila-share reads it: manila's options (all of
    its [DEFAULT] and groups, the share backend's in each backend
    section) and hacluster's."""
    import manila.opts
    from manila.share import driver as share_driver
    from manila.share import manager as share_manager

    path = tmp_path / 'manila.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    for group, group_opts in manila.opts.list_opts():     # (copies)
        for opt in group_opts:
            # the drivers' required options bind only where a backend
            # uses that driver (manila-share imports one driver)
            opt.required = False
        conf.register_opts(group_opts, group=None if group == 'DEFAULT'
                           else group)
    opts.register_opts(conf)
    conf([], project='manila', default_config_files=[str(path)])
    for backend in conf.enabled_share_backends or []:
        conf.register_opts(share_manager.share_manager_opts, group=backend)
        conf.register_opts(share_driver.share_opts, group=backend)
    return conf


def test_the_readme_has_the_sample_config():
    assert len(_documented_configs()) >= 2      # README and the guide


@pytest.mark.parametrize('text', _documented_configs())
def test_the_documented_manila_conf_parses_to_what_it_says(text, tmp_path):
    conf = _manila_conf(text, tmp_path)
    assert conf.host == 'hagroup'
    assert conf.enabled_share_backends == ['dummy']
    assert conf.share_manager == 'hacluster.manila.manager.HAShareManager'
    assert conf.coordination.backend_url == 'etcd3+http://10.0.0.1:2379'
    assert conf.hacluster.backend_url == \
        'etcd3+http://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379'
    assert conf.hacluster.node_name == 'share-node-1'
    assert (conf.hacluster.lease_ttl, conf.hacluster.renew_deadline,
            conf.hacluster.renew_interval) == (10, 7, 2)
    assert conf.dummy.share_driver == 'mydrivers.MyActiveActiveDriver'
    assert conf.dummy.driver_handles_share_servers is False
    # what hacluster and the cluster name make of it
    u = opts.backend_url(conf)
    assert (u.option, len(u.endpoints)) == ('[hacluster] backend_url', 3)
    assert opts.cluster_name(conf, host='hagroup@dummy') == 'hagroup@dummy'
    # and tooz (manila-api, manila-scheduler) can read [coordination]
    from tooz import coordination
    tooz = coordination.get_coordinator(conf.coordination.backend_url, b'x')
    assert type(tooz).__name__ == 'Etcd3Driver'
    assert url.parse(conf.coordination.backend_url).tooz_problem() is None


@pytest.mark.parametrize('text', _every_documented_config())
def test_every_documented_config_block_pastes_cleanly(text, tmp_path):
    """Every manila.conf block of the README and the guides: no value
    keeps a comment, and [coordination] stays a URL tooz reads."""
    conf = _manila_conf(text, tmp_path)
    values = list(_values_set(text, conf))
    assert values
    for group, name, value in values:
        assert '#' not in str(value), (group, name, value)
    if conf.coordination.backend_url:
        problem = url.parse(conf.coordination.backend_url,
                            ignore=url.TOOZ_TIMING_OPTIONS).tooz_problem()
        assert problem is None, problem


def test_toozs_error_on_the_old_recommended_url():
    """Why [coordination] must stay one endpoint: tooz's own refusal."""
    from tooz import coordination
    with pytest.raises(ValueError) as e:
        coordination.get_coordinator(
            'etcd3+http://10.0.0.1:2379,10.0.0.2:2379', b'x')
    assert 'Port could not be cast to integer' in str(e.value)
