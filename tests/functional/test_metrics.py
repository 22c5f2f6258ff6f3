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

"""Prometheus metrics and the per-member check, against real etcd (and
RabbitMQ for fan-out, manila-share for the HA manager's endpoint). Every
scrape goes over HTTP and is read by prometheus_client's own text parser."""

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from prometheus_client import parser as prom_parser
import pytest

import hacluster
from hacluster.cli import main as cli_main
from hacluster import metrics
from hacluster.periodic import EVERY
from hacluster.periodic import FANOUT
from hacluster.periodic import periodic_task
from hacluster.periodic import PeriodicRunner
from hacluster.testing.servers import free_port
from helpers import wait_for

FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)


class Scrape:
    """One scrape, parsed: ``families`` by name, ``value(name, **labels)``
    (the one sample whose labels include ``labels``)."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in
                         prom_parser.text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def matching(self, name, **labels):
        return [s for s in self.samples if s.name == name and
                all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name, **labels):
        found = self.matching(name, **labels)
        assert len(found) == 1, (name, labels, found)
        return found[0].value


def scrape(url):
    resp = urllib.request.urlopen(url, timeout=5)
    assert resp.status == 200
    assert resp.headers['Content-Type'].startswith('text/plain; version=')
    return Scrape(resp.read().decode('utf-8'))


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli_main.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_endpoint_reports_membership_session_locks_and_claims(
        etcd, cluster_name):
    recovered = []

    def handler(claim):
        recovered.append(claim.resource_id)
        if len(recovered) == 1:
            raise RuntimeError('backend busy')     # failed once, then done

    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    a.register_recovery('share', handler)
    a._recovery.absence_grace = 0.1
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b', **FAST)
    with a, b:
        server = metrics.serve(a, '127.0.0.1', free_port())
        wait_for(lambda: a.is_leader, 5, 'a to lead')
        base = {'cluster': cluster_name, 'node': 'a'}

        # a lock a waits 0.3 s for, held 0.2 s; one try that gives up
        held = b.get_lock('share-1')
        held.acquire()
        threading.Timer(0.3, held.release).start()
        lock = a.get_lock('share-1')
        assert lock.acquire(blocking=5)
        time.sleep(0.2)
        s = scrape(server.url)
        assert s.value('hacluster_locks_held', **base) == 1
        lock.release()
        other = b.get_lock('share-2')
        other.acquire()
        assert a.get_lock('share-2').acquire(blocking=False) is False
        other.release()

        # a claim open, then finished
        with a.claim('share', 's1', 'create') as claim:
            s = scrape(server.url)
            assert s.value('hacluster_claims_open', **base) == 1
            claim.finish()
        s = scrape(server.url)
        assert s.value('hacluster_claims_open', **base) == 0
        assert s.value('hacluster_claims_opened_total', **base) == 1

        assert s.value('hacluster_member_up', **base) == 1
        assert s.value('hacluster_members', **base) == 2
        assert s.value('hacluster_is_leader', **base) == 1
        assert s.value('hacluster_leader_term', **base) == a.term
        assert s.value('hacluster_leader_changes_total', **base) >= 1
        assert s.value('hacluster_member_info', member_id=a.member_id,
                       version=hacluster.__version__, **base) == 1
        assert s.value('hacluster_lock_wait_seconds_count', **base) == 1
        assert s.value('hacluster_lock_wait_seconds_sum', **base) >= 0.25
        assert s.value('hacluster_lock_wait_seconds_bucket', le='0.25',
                       **base) == 0
        assert s.value('hacluster_lock_wait_seconds_bucket', le='+Inf',
                       **base) == 1
        assert s.value('hacluster_lock_hold_seconds_count', **base) == 1
        assert s.value('hacluster_lock_hold_seconds_sum', **base) >= 0.2
        assert s.value('hacluster_lock_acquire_timeouts_total', **base) == 1
        assert s.value('hacluster_session_renewals_total', **base) >= 1
        assert s.value('hacluster_session_renewal_seconds_count', **base) \
            >= 1
        assert 0 <= s.value('hacluster_session_since_renewal_seconds',
                            **base) < FAST['renew_deadline']
        assert 0 < s.value('hacluster_session_time_left_seconds', **base) \
            <= FAST['renew_deadline']
        # every sample carries the cluster and the node; names are typed
        assert all(x.labels['cluster'] == cluster_name and
                   x.labels['node'] == 'a' for x in s.samples)
        assert s.families['hacluster_session_renewals'].type == 'counter'
        assert s.families['hacluster_lock_wait_seconds'].type == 'histogram'
        assert s.families['hacluster_members'].type == 'gauge'
        # only the metrics this module owns
        assert set(s.families) <= {metrics.Family(n, k, '').name for n, (
            k, _, _) in metrics.METRICS.items()}

        # a dead node's claim: recovery fails once, then succeeds
        dead = hacluster.get_coordinator(etcd.url, cluster_name, 'dead',
                                         **FAST).start()
        dead._recovery.claim_grace = 0
        dead.claim('share', 's9', 'create').__enter__()
        dead.session.stop(revoke=True)          # gone without a word
        wait_for(lambda: len(recovered) >= 2, 15, 'the recovery retried')
        dead.stop()
        s = scrape(server.url)
        assert s.value('hacluster_claims_recovered_total', **base) == 1
        assert s.value('hacluster_claims_recovery_failures_total',
                       **base) == 1

        # the session lost while holding a lock
        lock = a.get_lock('share-3')
        lock.acquire()
        a.session.expire_now('test')
        wait_for(lambda: a.session.epoch >= 2 and a.session.valid(), 10,
                 'a new session')
        s = scrape(server.url)
        # (>= : a loaded machine may lose one more on its own)
        losses = s.value('hacluster_session_losses_total', **base)
        assert losses >= 1
        assert s.value('hacluster_sessions_started_total', **base) == \
            losses + 1
        assert s.value('hacluster_locks_lost_total', **base) >= 1
        assert s.value('hacluster_member_up', **base) == 1
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url.replace('/metrics', '/nope'),
                                   timeout=5)
    # the coordinator's stop closed its endpoint
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_two_coordinators_in_one_process_have_their_own_metrics(
        etcd, cluster_name):
    with hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST) as a, \
            hacluster.get_coordinator(etcd.url, cluster_name, 'b',
                                      **FAST) as b:
        sa, sb = a.metrics.serve(), b.metrics.serve()
        with a.get_lock('only-a'):
            pass
        ra, rb = scrape(sa.url), scrape(sb.url)
        assert {x.labels['node'] for x in ra.samples} == {'a'}
        assert {x.labels['node'] for x in rb.samples} == {'b'}
        assert ra.value('hacluster_lock_wait_seconds_count') == 1
        assert rb.value('hacluster_lock_wait_seconds_count') == 0


def test_the_textfile_is_written_atomically_and_parseable(
        etcd, cluster_name, tmp_path):
    path = tmp_path / 'hacluster.prom'
    c = hacluster.get_coordinator(etcd.url, cluster_name, 'n1', **FAST)
    with c:
        writer = c.metrics.start_textfile(str(path), interval=0.01)
        s = Scrape(path.read_text())            # written at once
        assert s.value('hacluster_member_up') == 1
        first = s.value('hacluster_session_renewals_total')
        # rewritten 100 times a second: every read is a whole file
        deadline = time.monotonic() + 3
        reads = 0
        while time.monotonic() < deadline or reads < 100:
            s = Scrape(path.read_text())
            assert s.value('hacluster_member_up') == 1
            assert s.value('hacluster_recoveries_running') == 0   # the end
            reads += 1
        assert s.value('hacluster_session_renewals_total') > first
        assert writer.interval == 0.01
    # written once more at the stop: this member is down; only the file is
    # left (no temporary file beside it)
    s = Scrape(path.read_text())
    assert s.value('hacluster_member_up') == 0
    assert [p.name for p in tmp_path.iterdir()] == ['hacluster.prom']


def test_a_fanout_cycle_and_the_tasks_are_reported(etcd, rabbitmq,
                                                   cluster_name):
    done = []

    class Tasks:
        @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                       initial_delay=0.2, item_timeout=30)
        def poll(self, ctx):
            return ['i%d' % i for i in range(10)]

        def _item(self, ctx, item_id, payload):
            done.append(item_id)

        @periodic_task(spacing=0.2, mode=EVERY, initial_delay=0)
        def broken(self, ctx):
            raise RuntimeError('always')

    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b', **FAST)
    with a, b:
        a.campaign()
        wait_for(lambda: a.is_leader, 5, 'a to lead')
        server = a.metrics.serve('127.0.0.1', free_port())
        sb = b.metrics.serve('127.0.0.1', free_port())
        # b serves the fan-out first: a's first cycle spreads over both
        rb = PeriodicRunner(b, transport_url=rabbitmq.transport_url)
        rb.add_all(Tasks())
        rb.start()
        wait_for(lambda: 'b' in a.live_members() and
                 a.live_members()['b'].get('fanout_server'), 10,
                 'b to serve the fan-out')
        ra = PeriodicRunner(a, transport_url=rabbitmq.transport_url)
        ra.add_all(Tasks())
        ra.start()
        try:
            # (the run is counted just after the cycle is)
            wait_for(lambda: any(x.value == 1 for x in scrape(
                server.url).matching('hacluster_task_runs_total',
                                     task='poll', mode='fanout')), 30,
                'a fan-out cycle to finish')
            s = scrape(server.url)
            assert s.value('hacluster_fanout_cycle_seconds_count',
                           task='poll') == 1
            assert s.value('hacluster_fanout_cycles_total', task='poll') == 1
            assert s.value('hacluster_fanout_cycle_seconds_sum',
                           task='poll') > 0
            per_member = {x.labels['member']: x.value for x in
                          s.matching('hacluster_fanout_cycle_items',
                                     task='poll')}
            assert set(per_member) == {'a', 'b'}
            assert sum(per_member.values()) == 10
            assert s.value('hacluster_task_runs_total', task='poll',
                           mode='fanout') == 1
            handled_b = scrape(sb.url).value(
                'hacluster_fanout_items_handled_total', task='poll')
            assert s.value('hacluster_fanout_items_handled_total',
                           task='poll') == per_member['a']
            assert handled_b == per_member['b']
            assert s.value('hacluster_task_failures_total', task='broken',
                           mode='every') >= 1
            assert s.value('hacluster_task_runs_total', task='broken',
                           mode='every') >= s.value(
                'hacluster_task_failures_total', task='broken',
                mode='every')
            assert s.value('hacluster_task_paused', task='poll',
                           mode='fanout') == 0
            assert s.value('hacluster_task_last_run_timestamp_seconds',
                           task='broken', mode='every') <= time.time()
        finally:
            ra.stop()
            rb.stop()


GREEN = r'''
import eventlet
eventlet.monkey_patch()
import json, sys, time, urllib.request
import hacluster
from hacluster import metrics
url, cluster = sys.argv[1:3]
c = hacluster.get_coordinator(url, cluster, 'green', lease_ttl=3,
                              renew_deadline=2, renew_interval=0.5).start()
server = metrics.serve(c, '127.0.0.1', 0)
with c.get_lock('g'):
    pass
time.sleep(1.2)
# the endpoint is a green thread: it answers while this one waits for it
body = urllib.request.urlopen(server.url, timeout=5).read().decode()
c.stop()
print(json.dumps({'patched': eventlet.patcher.is_monkey_patched('thread'),
                  'body': body}))
'''


def test_the_endpoint_works_under_eventlet(etcd, cluster_name):
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', GREEN,
                          etcd.url, cluster_name], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r['patched'] is True
    s = Scrape(r['body'])
    assert s.value('hacluster_member_up') == 1
    assert s.value('hacluster_lock_wait_seconds_count') == 1
    assert s.value('hacluster_session_renewals_total') >= 1


AFTER_EVENTLET_WSGI = r"""
import http.server                     # imported first, as by any library
import json, sys, time, urllib.request
import eventlet.green.BaseHTTPServer   # what eventlet.wsgi (manila) imports
import hacluster
from hacluster import metrics
assert http.server is not sys.modules['http.server']   # the green copy
url, cluster = sys.argv[1:3]
c = hacluster.get_coordinator(url, cluster, 'plain', lease_ttl=3,
                              renew_deadline=2, renew_interval=0.5).start()
server = metrics.serve(c, '127.0.0.1', 0)
body = urllib.request.urlopen(server.url, timeout=5).read().decode()
began = time.monotonic()
c.stop()
print(json.dumps({'body': body, 'stop': time.monotonic() - began}))
"""


def test_the_endpoint_works_after_eventlet_greened_http_server(
        etcd, cluster_name):
    """An unpatched process (manila-share, this test run) that imported
    http.server and then eventlet.wsgi: the package attribute http.server
    is then a copy with green sockets and locks. Served from it, scrapes
    timed out and stop() waited in eventlet's hub for ever (the whole
    suite hung here once manila's share manager was imported)."""
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c',
                          AFTER_EVENTLET_WSGI, etcd.url, cluster_name],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert Scrape(r['body']).value('hacluster_member_up') == 1
    assert r['stop'] < 5


# -- hacluster check --node -----------------------------------------------

PERF = re.compile(r'^[a-z_]+=(U|-?[0-9.]+)(s|c)?;[0-9.]*;[0-9.]*;$')


def _perfdata(out):
    """The performance data of a plugin's line (after ``|``), checked
    against the Nagios format: ``{label: value}``."""
    line = out.strip()
    assert '\n' not in line and line.count('|') == 1, line
    text, _, perf = line.partition(' | ')
    values = {}
    for item in perf.split():
        assert PERF.match(item), item
        label, _, rest = item.partition('=')
        values[label] = rest.split(';')[0]
    return text, values


@pytest.fixture
def members(etcd, cluster_name):
    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b', **FAST)
    with a, b:
        a.campaign()
        wait_for(lambda: a.is_leader, 5, 'a to lead')
        yield a, b, ['--backend-url', etcd.url, '--cluster', cluster_name]


def test_check_node_is_ok_for_a_healthy_member(members, cluster_name):
    a, b, args = members
    with b.claim('share', 's1', 'create'):
        code, out, _ = run('check', '--node', 'b', *args)
    assert code == 0, out
    text, perf = _perfdata(out)
    assert text.startswith('OK: member b of cluster %s: renewed '
                           % cluster_name)
    assert 'not leader' in text and '1 claim open' in text
    assert perf['present'] == '1' and perf['leader'] == '0'
    assert perf['claims'] == '1' and perf['claims_stuck'] == '0'
    assert float(perf['since_renewal'].rstrip('s')) <= FAST['lease_ttl']
    assert 0 < float(perf['lease_remaining'].rstrip('s')) <= \
        FAST['lease_ttl']
    code, out, _ = run('check', '--node', 'a', *args)
    assert code == 0, out
    text, perf = _perfdata(out)
    assert 'leader (term %d)' % a.term in text and perf['leader'] == '1'


def test_check_node_is_critical_for_an_absent_member(members,
                                                     cluster_name):
    _a, _b, args = members
    code, out, _ = run('check', '--node', 'nope', *args)
    assert code == 2, out
    text, perf = _perfdata(out)
    assert text == ('CRITICAL: member nope of cluster %s: not a member '
                    '(members: a, b)' % cluster_name)
    assert perf['present'] == '0' and perf['since_renewal'] == 'U'


def test_check_node_warns_of_a_task_failing_there(members, cluster_name):
    _a, b, args = members

    class Tasks:
        @periodic_task(spacing=0.2, mode=EVERY, initial_delay=0)
        def broken(self, ctx):
            raise RuntimeError('disk | full')

    runner = PeriodicRunner(b)
    runner.add_all(Tasks())
    runner.start()
    try:
        wait_for(lambda: runner.stats('broken')['failures'] >= 1, 5,
                 'the task to fail')
        time.sleep(0.3)              # its stats published
        code, out, _ = run('check', '--node', 'b', *args)
        assert code == 1, out
        text, perf = _perfdata(out)     # the '|' of the error is not one
        assert text.startswith('WARNING: member b')
        assert 'task broken failed on its last run here: RuntimeError: ' \
            'disk / full' in text
        assert int(perf['task_failures'].rstrip('c')) >= 1
        # a's tasks are its own: it stays OK
        assert run('check', '--node', 'a', *args)[0] == 0
    finally:
        runner.stop()


def test_check_node_is_unknown_without_etcd(monkeypatch):
    from hacluster.cli import cluster as cli_cluster
    monkeypatch.setattr(cli_cluster, 'DEFAULT_CONFIG_FILES', ())
    monkeypatch.delenv('HACLUSTER_BACKEND_URL', raising=False)
    code, out, _ = run('check', '--node', 'a', '--cluster', 'c1')
    assert code == 3 and out.startswith('UNKNOWN: cluster c1: no etcd '
                                        'configured')
    code, out, _ = run('check', '--node', 'a', '--cluster', 'c1',
                       '--backend-url', 'etcd3+http://127.0.0.1:%d'
                       % free_port(), '--timeout', '0.5')
    assert code == 3 and out.startswith('UNKNOWN:')


def test_the_cluster_check_carries_perfdata(members, cluster_name):
    a, b, args = members
    with b.claim('share', 's1', 'create'):
        code, out, _ = run('check', *args)
    assert code == 0, out
    text, perf = _perfdata(out)
    assert text.startswith('OK: cluster %s: 2 members, leader a' %
                           cluster_name)
    assert perf['members'] == '2' and perf['claims'] == '1'
    assert perf['leader_term'] == str(a.term)
    assert perf['claims_orphaned'] == '0' and perf['warnings'] == '0'


# -- the HA share manager -------------------------------------------------

def test_manila_share_serves_metrics_from_its_configuration(
        manila_cluster, tmp_path):
    port = free_port()
    textfile = tmp_path / 'manila-share.prom'
    cluster = manila_cluster(nodes=('node1',), node_extra={'node1': {
        'hacluster': {'metrics_port': port,
                      'metrics_textfile': str(textfile),
                      'metrics_textfile_interval': 0.5}}})
    cluster.start()
    url = 'http://127.0.0.1:%d/metrics' % port
    base = {'cluster': cluster.cluster, 'node': 'node1'}
    s = scrape(url)
    assert s.value('hacluster_member_up', **base) == 1
    wait_for(lambda: scrape(url).value('hacluster_is_leader', **base) == 1,
             20, 'node1 to lead')
    # manila's periodic tasks run on hacluster's runner, reported here
    wait_for(lambda: scrape(url).matching(
        'hacluster_task_runs_total', task='report_driver_status'), 30,
        'report_driver_status to run')
    assert Scrape(textfile.read_text()).value('hacluster_member_up',
                                              **base) == 1
    cluster.stop('node1')
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
    assert Scrape(textfile.read_text()).value('hacluster_member_up',
                                              **base) == 0
    assert os.listdir(tmp_path) == ['manila-share.prom']
