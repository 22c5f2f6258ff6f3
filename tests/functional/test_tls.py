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

"""etcd over TLS: a private etcd with a throwaway CA, server and client
certificates (``etcd3+https://...?ca_cert=&cert_cert=&cert_key=``).

Each refusal must be an :class:`~hacluster.exceptions.HAClusterError` whose
message names what to fix: the host name, the ``ca_cert`` option, the
``cert_cert`` option, or the missing file.
"""

import urllib.parse

import pytest

import hacluster
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster.testing.etcd import EtcdServer
from hacluster.testing.etcd import ThrowawayPKI
from hacluster import url as _url

from helpers import wait_for

OPTS = dict(lease_ttl=3, renew_deadline=2, renew_interval=0.5)


@pytest.fixture(scope='module')
def pki():
    with ThrowawayPKI() as made:
        yield made


@pytest.fixture(scope='module')
def other_pki():
    """A second CA nobody here trusts (for a foreign client certificate)."""
    with ThrowawayPKI() as made:
        yield made


@pytest.fixture(scope='module')
def tls_etcd(pki):
    """etcd on HTTPS with the right certificate; client certificates
    signed by ``pki`` required."""
    with EtcdServer(name='etcd-tls',
                    tls=pki.server_tls(client_cert_auth=True)) as server:
        yield server


@pytest.fixture(scope='module')
def wrong_host_etcd(pki):
    """etcd on HTTPS with a certificate made out to another host (signed
    by the same CA)."""
    with EtcdServer(name='etcd-wrong-host',
                    tls=pki.server_tls(wrong_host=True)) as server:
        yield server


def tls_url(server, host='127.0.0.1', ca=None, cert=None, key=None):
    """``server``'s URL (``server`` may be a port number) on ``host`` with
    the TLS options given."""
    port = getattr(server, 'client_port', server)
    options = [(name, value) for name, value in (
        ('ca_cert', ca), ('cert_cert', cert), ('cert_key', key)) if value]
    query = urllib.parse.urlencode(options, safe='/')
    return 'etcd3+https://%s:%d%s' % (host, port,
                                      '?' + query if query else '')


def full_url(server, pki, host='127.0.0.1'):
    return tls_url(server, host, ca=pki.ca_cert, cert=pki.client_cert,
                   key=pki.client_key)


def refusal(url, cluster_name):
    """The error a coordinator on ``url`` raises at start (1 s)."""
    c = hacluster.get_coordinator(url, cluster_name, 'n1', **OPTS)
    with pytest.raises(exceptions.HAClusterError) as e:
        c.start(timeout=1)
    assert not c.running
    return str(e.value)


@pytest.mark.parametrize('host', ['127.0.0.1', 'localhost'])
def test_with_the_ca_and_a_client_certificate_members_lock_and_watch(
        tls_etcd, pki, cluster_name, host):
    url = full_url(tls_etcd, pki, host)
    with hacluster.get_coordinator(url, cluster_name, 'n1', **OPTS) as n1:
        with n1.get_lock('share-1') as lock:
            assert lock.is_still_owner()
            with hacluster.get_coordinator(url, cluster_name, 'n2',
                                           **OPTS) as n2:
                # the watch stream runs over TLS too
                wait_for(lambda: 'n2' in n1.live_members(), 5,
                         'n1 to see n2 join through its watch')
                assert not n2.get_lock('share-1').acquire(blocking=False)
        assert n1.session.losses == 0


def test_a_certificate_made_out_to_another_host_is_refused(
        wrong_host_etcd, pki, cluster_name):
    message = refusal(full_url(wrong_host_etcd, pki), cluster_name)
    assert 'certificate verify failed' in message
    assert "mismatch, certificate is not valid for '127.0.0.1'" in message


def test_a_certificate_made_out_to_another_host_is_refused_saying_so(
        wrong_host_etcd, pki, cluster_name):
    message = refusal(full_url(wrong_host_etcd, pki), cluster_name)
    assert 'host name verification failed' in message


def test_without_ca_cert_an_unknown_ca_is_refused_naming_ca_cert(
        tls_etcd, pki, cluster_name):
    message = refusal(tls_url(tls_etcd, cert=pki.client_cert,
                              key=pki.client_key), cluster_name)
    assert 'certificate verify failed' in message
    assert 'ca_cert=' in message


def test_without_a_client_certificate_etcd_refuses_naming_cert_cert(
        tls_etcd, pki, cluster_name):
    message = refusal(tls_url(tls_etcd, ca=pki.ca_cert), cluster_name)
    assert 'requires' in message and 'client certificate' in message
    assert 'cert_cert=' in message


@pytest.mark.parametrize('option', ['ca_cert', 'cert_cert', 'cert_key'])
def test_check_tls_files_names_the_option_and_the_path(
        pki, tmp_path, option):
    files = dict(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    missing = str(tmp_path / 'nope.pem')
    short = {'ca_cert': 'ca', 'cert_cert': 'cert', 'cert_key': 'key'}
    files[short[option]] = missing
    parsed = _url.parse(tls_url(2379, **files))
    with pytest.raises(exceptions.ConfigurationError) as e:
        _url.check_tls_files(parsed)
    assert 'the %s file %s does not exist' % (option, missing) in \
        str(e.value)
    assert 'backend_url' in str(e.value)
    parsed.ca_cert = str(tmp_path)
    with pytest.raises(exceptions.ConfigurationError) as e:
        _url.check_tls_files(parsed)
    assert 'is not a file' in str(e.value)


@pytest.mark.parametrize('option', ['ca_cert', 'cert_cert'])
def test_a_file_that_does_not_exist_is_refused_at_construction(
        tls_etcd, pki, tmp_path, cluster_name, option):
    missing = str(tmp_path / 'nope.pem')
    files = dict(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    files['ca' if option == 'ca_cert' else 'cert'] = missing
    with pytest.raises(exceptions.ConfigurationError) as e:
        hacluster.get_coordinator(tls_url(tls_etcd, **files), cluster_name,
                                  'n1', **OPTS)
    assert option in str(e.value) and missing in str(e.value)


def _client_error(url):
    """What hacluster's etcd client raises for one request on ``url``."""
    parsed = _url.parse(url)
    client = _etcd.Client(parsed, timeout=1)
    with pytest.raises(exceptions.BackendUnavailable) as e:
        client.call('/kv/range', {'key': 'eA=='}, budget=1)
    return parsed, e.value


def test_tls_hint_names_what_to_fix_for_each_real_failure(
        tls_etcd, wrong_host_etcd, etcd, pki, other_pki):
    # url.tls_hint on the very exceptions hacluster's client gets (what
    # Client.call adds to its message)
    cases = [
        (full_url(wrong_host_etcd, pki), 'host name verification failed'),
        (tls_url(tls_etcd, cert=pki.client_cert, key=pki.client_key),
         'give the CA certificate that signed it as ca_cert='),
        (tls_url(tls_etcd, ca=other_pki.ca_cert, cert=pki.client_cert,
                 key=pki.client_key),
         'not signed by the CA in ca_cert=%s' % other_pki.ca_cert),
        # etcd's refusal of a client certificate reaches the client as an
        # alert or, as often, as a bare EOF (TLS 1.3): the hint must name
        # cert_cert either way
        (tls_url(tls_etcd, ca=pki.ca_cert),
         'client certificate (etcd --client-cert-auth); give one as '
         'cert_cert='),
        (tls_url(tls_etcd, ca=pki.ca_cert, cert=other_pki.client_cert,
                 key=other_pki.client_key),
         'client certificate in cert_cert=%s' % other_pki.client_cert),
        (tls_url(etcd, ca=pki.ca_cert), 'then use etcd3+http://'),
    ]
    for url, words in cases:
        parsed, error = _client_error(url)
        hint = _url.tls_hint(error.cause, parsed)
        assert hint is not None and words in hint, (url, str(error), hint)
    # not a TLS failure: no hint
    parsed, error = _client_error('etcd3+http://127.0.0.1:%d'
                                  % tls_etcd.client_port)
    assert _url.tls_hint(error.cause, parsed) is None
