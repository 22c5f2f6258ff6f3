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

"""hacluster status over more locks and claims than one page (a page made
small for the test), against real etcd."""

import io
import json
import threading

import pytest

import hacluster
from hacluster.cli import main as cli_main
from hacluster import etcd as _etcd
from hacluster import status as _status
from helpers import wait_for

FAST = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)
LOCKS, CLAIMS, PAGE = 13, 11, 4


def comparable(state):
    """What must not depend on paging."""
    return {k: state[k] for k in ('members', 'leader', 'tasks', 'locks',
                                  'claims', 'warnings', 'health', 'revision')}


@pytest.fixture
def crowded(etcd, cluster_name):
    """Two members; LOCKS locks held (one exclusive with two waiters, two
    shared), CLAIMS open claims."""
    a = hacluster.get_coordinator(etcd.url, cluster_name, 'a', **FAST)
    b = hacluster.get_coordinator(etcd.url, cluster_name, 'b', **FAST)
    with a, b:
        a.campaign()
        wait_for(lambda: a.is_leader, 5, 'a to lead')
        held = [a.get_lock('share-%02d' % i) for i in range(LOCKS - 2)]
        held += [b.get_lock('pool', shared=True),
                 a.get_lock('pool', shared=True)]
        for lk in held:
            assert lk.acquire(blocking=5)
        waiters = [b.get_lock('share-05') for _ in range(2)]
        threads = [threading.Thread(target=w.acquire, args=(10,))
                   for w in waiters]
        for t in threads:
            t.start()
        prefix = a.layout.lock_prefix('share-05')
        wait_for(lambda: a.client.count_prefix(prefix) == 3, 5,
                 'two waiters queued')
        claims = [(a if i % 2 else b).claim('share', 'c-%02d' % i, 'create')
                  for i in range(CLAIMS)]
        for c in claims:
            c.__enter__()
        try:
            yield a
        finally:
            # the waiters first: the second one would otherwise wait out
            # its 10 s behind the first (held until the end)
            for w in waiters:
                w.cancel()
            for c in claims:
                c.__exit__(None, None, None)
            for lk in held:
                lk.release()
            for t in threads:
                t.join(10)
            for w in waiters:
                if w.held:
                    w.release()


def test_paged_status_is_the_same_as_one_read(crowded, cluster_name):
    client = crowded.client
    whole = _status.collect(client, cluster_name, now=1e9)
    paged = _status.collect(client, cluster_name, now=1e9, page_size=PAGE)
    assert whole['snapshot']['range_requests'] == 1
    # locks: 13 holders + 2 waiters; claims: 11 -> 4 + 3 more pages
    assert paged['snapshot']['range_requests'] == 1 + 3 + 2
    assert paged['snapshot']['revision'] == paged['revision']
    assert comparable(paged) == comparable(whole)
    assert len(paged['locks']) == LOCKS
    assert len(paged['claims']) == CLAIMS
    waited = [lk for lk in paged['locks'] if lk['name'] == 'share-05']
    assert [lk['waiters'] for lk in waited] == [2]
    assert sorted(lk['holder'] for lk in paged['locks']
                  if lk['name'] == 'pool') == ['a', 'b']


def test_paged_status_is_one_snapshot_even_when_etcd_changes_between_pages(
        crowded, cluster_name, monkeypatch):
    client = crowded.client
    real = client.range_page
    wrote = []

    def range_page(prefix, **kw):
        if not wrote:
            # a claim and a lock entry appear after the snapshot's revision
            wrote.append(crowded.claim('share', 'late', 'create'))
            wrote[0].__enter__()
            late_lock = crowded.get_lock('zz-late')
            assert late_lock.acquire(blocking=5)
            wrote.append(late_lock)
        return real(prefix, **kw)
    monkeypatch.setattr(client, 'range_page', range_page)
    try:
        paged = _status.collect(client, cluster_name, page_size=PAGE)
        assert wrote
        assert len(paged['claims']) == CLAIMS
        assert len(paged['locks']) == LOCKS
        assert 'zz-late' not in [lk['name'] for lk in paged['locks']]
    finally:
        wrote[0].__exit__(None, None, None)
        wrote[1].release()


def test_a_compaction_while_paging_starts_a_new_snapshot(
        crowded, cluster_name, monkeypatch):
    client = crowded.client
    real = client.range_page
    compacted = []

    def range_page(prefix, **kw):
        if not compacted:
            # history up to now goes: the snapshot's revision with it
            rev = client.put('/hacluster-test-compact/' + cluster_name, 'x')
            client.call('/kv/compaction', {'revision': rev})
            compacted.append(rev)
        return real(prefix, **kw)
    monkeypatch.setattr(client, 'range_page', range_page)
    first = client.get_prefix(crowded.layout.locks)[1]
    paged = _status.collect(client, cluster_name, page_size=PAGE)
    assert compacted and paged['revision'] >= compacted[0] > first
    with pytest.raises(_etcd.Compacted):      # what the first try met
        real(crowded.layout.locks, limit=1, revision=first)
    assert len(paged['locks']) == LOCKS and len(paged['claims']) == CLAIMS


def test_the_command_shows_every_record_across_pages(crowded, etcd,
                                                     cluster_name,
                                                     monkeypatch):
    monkeypatch.setattr(_status, 'PAGE_SIZE', PAGE)
    args = ['--backend-url', etcd.url, '--cluster', cluster_name]
    out, err = io.StringIO(), io.StringIO()
    assert cli_main.main(['status', '-f', 'json'] + args, stdout=out,
                         stderr=err) == 0
    state = json.loads(out.getvalue())
    assert len(state['locks']) == LOCKS and len(state['claims']) == CLAIMS
    assert state['snapshot']['range_requests'] > 1
    out = io.StringIO()
    assert cli_main.main(['status'] + args, stdout=out, stderr=err) == 0
    assert 'locks held (%d)' % LOCKS in out.getvalue()
    assert 'claims (%d)' % CLAIMS in out.getvalue()


def test_keys_only_lock_rows_are_complete_once_filled(crowded, cluster_name):
    client = crowded.client
    full = _status.collect(client, cluster_name, now=1e9, page_size=PAGE)
    bare = _status.collect(client, cluster_name, now=1e9, page_size=PAGE,
                           lock_values=False)
    assert bare['snapshot']['lock_values'] is False
    assert len(bare['locks']) == LOCKS
    assert all(r['holder'] is None for r in bare['locks'])
    assert [(r['name'], r['mode'], r['token'], r['waiters'])
            for r in bare['locks']] == [
        (r['name'], r['mode'], r['token'], r['waiters'])
        for r in full['locks']]
    assert bare['claims'] == full['claims']
    assert bare['health'] == full['health']
    _status.fill_lock_rows(client, bare, bare['locks'][:5])
    assert bare['locks'][:5] == full['locks'][:5]
    assert '_key' in bare['locks'][5]


def test_the_table_shows_holders_of_the_rows_it_shows(crowded, etcd,
                                                      cluster_name,
                                                      monkeypatch):
    from hacluster.cli import cluster as cli_cluster
    monkeypatch.setattr(cli_cluster, '_SHOWN', 5)
    monkeypatch.setattr(_status, 'PAGE_SIZE', PAGE)
    out, err = io.StringIO(), io.StringIO()
    assert cli_main.main(['status', '--backend-url', etcd.url, '--cluster',
                          cluster_name], stdout=out, stderr=err) == 0
    text = out.getvalue()
    assert 'locks held (%d)' % LOCKS in text
    assert '... %d more (hacluster lock list)' % (LOCKS - 5) in text
    section = text.split('locks held')[1].split('claims (')[0]
    rows = [ln for ln in section.splitlines() if ln.startswith('| ')][1:]
    assert len(rows) == 5
    # a holder in every shown row, never the "none" placeholder
    assert all(('| a ' in ln or '| b ' in ln) for ln in rows), rows
