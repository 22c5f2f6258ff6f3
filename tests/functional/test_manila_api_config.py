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

"""One manila.conf for every manila service: the README's sample, as it is
(only its addresses point at this test's servers), read by real manila
23.0.1 processes.

manila-api and manila-scheduler start tooz on ``[coordination]
backend_url``; manila-share with the HA manager runs hacluster on
``[hacluster] backend_url`` (three endpoints, two of them dead here).
A second ``--config-file`` adds only what a test needs (database, broker,
ports, no keystone, short timings).
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from hacluster.testing import manila_rig
from hacluster.testing import servers

README = os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')
API_READY = 60.0
#: manila-api as manila 23 deploys it: its WSGI application
#: (manila.wsgi.api, which reads the --config-file arguments) in a WSGI
#: server, here the standard library's (threaded).
API_SERVER = """
import socketserver, sys
from wsgiref import simple_server
port = int(sys.argv.pop(1))
sys.argv[0] = 'manila-api'
from manila.wsgi import api
class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
simple_server.make_server('127.0.0.1', port, api.application,
                          server_class=Server).serve_forever()
"""


def documented_config():
    """The README's manila.conf (its first ini block with [hacluster])."""
    with open(README) as f:
        text = f.read()
    blocks = [b for b in re.findall(r'```ini\n(.*?)```', text, re.S)
              if '[hacluster]' in b]
    assert blocks, 'README.md has no manila.conf sample'
    return blocks[0]


@pytest.fixture
def rig(postgres, rabbitmq, etcd, tmp_path):
    """Two config files (the sample with this test's addresses, and the
    test's own settings), a database, and a way to start manila
    services; every process is stopped at teardown."""
    database = 'm_' + uuid.uuid4().hex[:12]
    postgres.create_database(database, template=manila_rig.TEMPLATE_DB)
    dead = ['127.0.0.1:%d' % servers.free_port() for _ in range(2)]
    sample = documented_config()
    assert 'etcd3+http://10.0.0.1:2379' in sample
    sample = (sample.replace('10.0.0.1:2379', etcd.endpoint)
              .replace('10.0.0.2:2379', dead[0])
              .replace('10.0.0.3:2379', dead[1])
              .replace('mydrivers.MyActiveActiveDriver',
                       manila_rig.HA_DRIVER))
    api_port = servers.free_port()
    paste = os.path.join(sys.prefix, 'etc', 'manila', 'api-paste.ini')
    cluster = 'manila-api-%s' % uuid.uuid4().hex[:8]
    test_conf = (
        '[DEFAULT]\n'
        'transport_url = %(transport)s\n'
        'state_path = %(state)s\n'
        'auth_strategy = noauth\n'
        'api_paste_config = %(paste)s\n'
        'osapi_share_listen = 127.0.0.1\n'
        'osapi_share_listen_port = %(port)d\n'
        'osapi_share_workers = 1\n'
        'report_interval = 2\n'
        'periodic_interval = 2\n'
        'graceful_shutdown_timeout = 10\n'
        'use_stderr = true\n'
        'debug = false\n'
        '[database]\nconnection = %(db)s\n'
        '[oslo_concurrency]\nlock_path = %(state)s/locks\n'
        '[hacluster]\ncluster = %(cluster)s\nlease_ttl = 3\n'
        'renew_deadline = 2\nrenew_interval = 0.5\n'
        '[dummy]\nshare_backend_name = dummy\n'
        % {'transport': rabbitmq.transport_url, 'state': tmp_path,
           'paste': paste, 'port': api_port, 'db': postgres.url(database),
           'cluster': cluster})
    (tmp_path / 'locks').mkdir()
    (tmp_path / 'manila.conf').write_text(sample)
    (tmp_path / 'test.conf').write_text(test_conf)
    started = []

    def start(binary, conf='manila.conf'):
        log = str(tmp_path / ('%s.log' % binary))
        args = ['--config-file', str(tmp_path / conf), '--config-file',
                str(tmp_path / 'test.conf')]
        if binary == 'manila-api':
            # manila 23's API is a WSGI application for an external server
            # (its manila-api command refuses to serve without eventlet)
            argv = [sys.executable, '-c', API_SERVER, str(api_port)] + args
        else:
            argv = [manila_rig._bin(binary)] + args
        child = servers._Child(argv, dict(os.environ), str(tmp_path), log)
        started.append(child)
        return child, log

    yield {'start': start, 'dir': tmp_path, 'sample': sample,
           'api': 'http://127.0.0.1:%d' % api_port, 'etcd': etcd,
           'cluster': cluster}
    for child in started:
        child.stop(15)
    try:
        postgres.drop_database(database)
    except Exception:
        pass


def wait_for_log(log, mark, child, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, errors='replace') as f:
            text = f.read()
        if mark in text:
            return text
        if child.exited():
            break
        time.sleep(0.2)
    raise AssertionError('%r not in %s (running=%s):\n%s' % (
        mark, log, not child.exited(), servers.log_tail(log, 60)))


def get(url, timeout=5):
    req = urllib.request.Request(url, headers={
        'X-Auth-Token': 'admin:admin',
        'X-OpenStack-Manila-API-Version': '2.7'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b'null')
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors='replace')
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body


def wait_for_api(base, child, log, timeout=API_READY):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return get(base + '/')
        except (urllib.error.URLError, ConnectionError, OSError):
            if child.exited():
                break
            time.sleep(0.3)
    raise AssertionError('manila-api did not answer (running=%s):\n%s' % (
        not child.exited(), servers.log_tail(log, 60)))


def tooz_leases(etcd):
    from hacluster import etcd as _etcd
    from hacluster import url as _url
    client = _etcd.Client(_url.parse(etcd.url), timeout=5)
    return {int(le['ID']) for le in
            client.call('/lease/leases', {}).get('leases') or []}


def test_every_manila_service_reads_the_documented_manila_conf(rig):
    leases_before = tooz_leases(rig['etcd'])
    api, api_log = rig['start']('manila-api')
    status, versions = wait_for_api(rig['api'], api, api_log)
    assert status in (200, 300), versions
    assert versions['versions']
    # tooz started in manila-api on [coordination] backend_url: it holds
    # a membership lease in the test's etcd now
    assert tooz_leases(rig['etcd']) - leases_before

    scheduler, sched_log = rig['start']('manila-scheduler')
    wait_for_log(sched_log, 'Starting manila-scheduler node', scheduler, 60)
    share, share_log = rig['start']('manila-share')
    wait_for_log(share_log, manila_rig.READY_MARK, share, 90)
    log = wait_for_log(share_log, 'joined cluster', share, 10)
    assert 'as share-node-1' in log

    # manila-api answers an API call from the database the services
    # registered in
    deadline = time.monotonic() + 30
    while True:
        status, body = get(rig['api'] + '/v2/services')
        assert status == 200, body
        up = {(s['binary'], s['host']) for s in body['services']
              if s['state'] == 'up'}
        if {('manila-scheduler', 'hagroup'),
                ('manila-share', 'hagroup@dummy')} <= up:
            break
        assert time.monotonic() < deadline, body
        time.sleep(1)
    for child, log in ((api, api_log), (scheduler, sched_log)):
        assert not child.exited()
        with open(log, errors='replace') as f:
            assert 'Port could not be cast' not in f.read()

    # the hacluster command reads the same two files
    import subprocess
    hbin = os.path.join(os.path.dirname(sys.executable), 'hacluster')
    out = subprocess.run(
        [hbin, 'member', 'list', '-f', 'value', '-c', 'node',
         '--config-file', str(rig['dir'] / 'manila.conf'),
         '--config-file', str(rig['dir'] / 'test.conf')],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['share-node-1']


def test_manila_api_fails_with_several_endpoints_in_coordination(rig):
    """The control: the URL the README used to recommend for
    [coordination] stops manila-api at start (tooz's own error)."""
    old = rig['sample'].replace(
        'backend_url = etcd3+http://%s\n' % rig['etcd'].endpoint,
        'backend_url = etcd3+http://%s,127.0.0.1:1\n' % rig['etcd'].endpoint,
        1)
    assert old != rig['sample']
    (rig['dir'] / 'old.conf').write_text(old)
    api, log = rig['start']('manila-api', conf='old.conf')
    deadline = time.monotonic() + API_READY
    while time.monotonic() < deadline:
        with open(log, errors='replace') as f:
            text = f.read()
        if 'Port could not be cast to integer' in text:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(servers.log_tail(log, 60))
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(rig['api'] + '/', timeout=2)
