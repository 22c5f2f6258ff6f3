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

import pytest

from hacluster import exceptions
from hacluster import url


def test_single_endpoint_is_parsed_as_tooz_spells_it():
    u = url.parse('etcd3+http://10.0.0.1:2379')
    assert (u.kind, u.protocol, u.endpoints) == (
        'etcd', 'http', [('10.0.0.1', 2379)])


def test_several_endpoints_keep_their_order():
    u = url.parse('etcd3+http://a:1,b:2,[::1]:3')
    assert u.endpoints == [('a', 1), ('b', 2), ('::1', 3)]


def test_port_defaults_to_etcds():
    assert url.parse('etcd3+http://a').endpoints == [('a', 2379)]


def test_https_takes_client_certificates():
    u = url.parse('etcd3+https://a:1?ca_cert=/ca&cert_key=/k&cert_cert=/c')
    assert (u.protocol, u.ca_cert, u.cert_key, u.cert_cert) == (
        'https', '/ca', '/k', '/c')


def test_credentials_are_kept_but_never_shown():
    u = url.parse('etcd3+http://admin:s3cr%40t@a:1')
    assert (u.username, u.password) == ('admin', 's3cr@t')
    assert 's3cr' not in u.safe and 's3cr' not in repr(u)


def test_no_url_and_file_url_mean_single_node():
    assert url.parse(None).kind == 'file'
    u = url.parse('file:///var/lib/manila/locks')
    assert (u.kind, u.path) == ('file', '/var/lib/manila/locks')


@pytest.mark.parametrize('bad, words', [
    ('zookeeper://a:1', 'unsupported scheme'),
    ('etcd3+http://a:port', "port 'port' is not a number"),
    ('etcd3+http://a:70000', 'out of range'),
    ('etcd3+http://a:1,,b:2', 'empty endpoint'),
    ('etcd3+http://a:1?colour=red', "unknown option 'colour'"),
    ('etcd3+http://a:1?ca_cert=/x', 'need etcd3+https'),
    ('etcd3+https://a:1?cert_key=/k', 'must be given together'),
    ('etcd3+http://a:1/some/path', 'unexpected path'),
    ('10.0.0.1:2379', 'expected SCHEME://'),
    ('file://', 'needs a directory path'),
])
def test_bad_urls_are_refused_naming_the_option_and_the_problem(bad, words):
    with pytest.raises(exceptions.ConfigurationError) as e:
        url.parse(bad, option='[coordination] backend_url')
    assert words in str(e.value)
    assert '[coordination] backend_url' in str(e.value)


def test_a_refused_url_does_not_leak_its_password():
    with pytest.raises(exceptions.ConfigurationError) as e:
        url.parse('etcd3+http://admin:hunter2@a:notaport')
    assert 'hunter2' not in str(e.value)
    assert 'admin:***@' in str(e.value)


@pytest.mark.parametrize('text', [
    'etcd3+http://user:hunter2@h:1',
    'failed: rabbit://guest:hunter2@10.0.0.5:5673/ refused',
    'https://h/?password=hunter2&x=1',
    'connect to etcd3+https://u:hunter2@a:1,b:2?ca_cert=/x',
])
def test_scrub_masks_passwords_wherever_they_are(text):
    assert 'hunter2' not in url.scrub(text)


def test_scrub_leaves_harmless_text_alone():
    assert url.scrub('etcd3+http://h:1 down') == 'etcd3+http://h:1 down'


def test_a_password_containing_at_signs_is_masked_whole():
    u = url.parse('etcd3+http://root:s3cr@t@10.0.0.1:23790')
    assert u.password == 's3cr@t'
    assert 's3cr' not in u.safe and '@t@' not in u.safe
    assert url.scrub('etcd3+http://root:a@b@h:1?ca_cert=/x') == \
        'etcd3+http://root:***@h:1?ca_cert=/x'


@pytest.mark.parametrize('secret', ['pw/x', 'pw?x', 'p#w', 'a@b/c?d'])
def test_passwords_with_url_characters_are_masked(secret):
    text = 'etcd3+http://admin:%s@10.0.0.1:1 is down' % secret
    assert secret not in url.scrub(text)
    with pytest.raises(exceptions.ConfigurationError) as e:
        url.parse('etcd3+http://admin:%s@10.0.0.1:notaport' % secret)
    assert secret not in str(e.value)
