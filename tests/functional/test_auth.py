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

"""etcd with authentication enabled: user:password in the backend URL."""

import base64
import subprocess
import time

import pytest

import hacluster
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys
from hacluster.testing import etcd as _etcd_rig
from hacluster.testing.etcd import enable_auth
from hacluster.testing.etcd import etcdctl
from hacluster.testing.etcd import url_with
from hacluster.testing import servers
from hacluster import url as _url


@pytest.fixture
def auth_etcd(fresh_etcd):
    return enable_auth(fresh_etcd)


def token_server(tmp_path, kind, ttl=60):
    """A private etcd (not started) whose auth tokens are ``simple`` or
    ``jwt`` (valid ``ttl`` seconds)."""
    args = _etcd_rig.jwt_args(str(tmp_path), ttl) if kind == 'jwt' else []
    return servers.EtcdServer(name='etcd-' + kind, extra_args=args)


@pytest.fixture(params=['simple', 'jwt'])
def token_etcd(request, tmp_path):
    with token_server(tmp_path, request.param) as server:
        yield enable_auth(server)


def test_a_user_with_a_password_can_lock(auth_etcd, cluster_name):
    with hacluster.get_coordinator(url_with(auth_etcd, 'manila:s3cret'),
                                   cluster_name, 'n1', lease_ttl=3,
                                   renew_deadline=2, renew_interval=0.5) as c:
        with c.get_lock('x') as lock:
            assert lock.is_still_owner()


def test_a_wrong_password_is_refused_without_showing_it(auth_etcd,
                                                        cluster_name):
    c = hacluster.get_coordinator(url_with(auth_etcd, 'manila:wrong-pw'),
                                  cluster_name, 'n1', lease_ttl=3,
                                  renew_deadline=2, renew_interval=0.5)
    with pytest.raises(exceptions.ConfigurationError) as e:
        c.start(timeout=2)
    assert "user 'manila'" in str(e.value)
    assert 'wrong-pw' not in str(e.value)


def test_without_credentials_etcd_refuses_clearly(auth_etcd, cluster_name):
    c = hacluster.get_coordinator(auth_etcd.url, cluster_name, 'n1',
                                  lease_ttl=3, renew_deadline=2,
                                  renew_interval=0.5)
    with pytest.raises(exceptions.HAClusterError) as e:
        c.start(timeout=2)
    assert 'refused' in str(e.value)


def test_an_rbac_change_does_not_stop_a_live_member_from_writing(
        token_etcd, cluster_name):
    auth_etcd = token_etcd
    # etcd answers "revision of auth store is old" to a token issued
    # before any RBAC change: the client must log in again, not fail until
    # the token expires (a leader that leads but cannot write)
    with hacluster.get_coordinator(url_with(auth_etcd, 'manila:s3cret'),
                                   cluster_name, 'n1', lease_ttl=3,
                                   renew_deadline=2, renew_interval=0.5) as c:
        with c.get_lock('before') as lock:
            assert lock.is_still_owner()
        etcdctl(auth_etcd, *ROOT, 'role', 'add', 'unrelated')
        etcdctl(auth_etcd, *ROOT, 'role', 'grant-permission', 'unrelated',
                'read', '/elsewhere')
        with c.get_lock('after') as lock:
            assert lock.is_still_owner()
        with c.claim('share', 's1', 'create') as claim:
            claim.finish()
        assert c.list_claims() == []


def test_a_watch_logs_in_again_when_its_token_expires(tmp_path,
                                                      cluster_name):
    # JWT tokens of 2 s, far shorter than the watch's idle reconnect: the
    # watch must re-authenticate, so a member joining later is still seen
    import time

    from helpers import wait_for
    with token_server(tmp_path, 'jwt', ttl=2) as server:
        enable_auth(server)
        url = url_with(server, 'manila:s3cret')
        opts = dict(lease_ttl=3, renew_deadline=2, renew_interval=0.5)
        with hacluster.get_coordinator(url, cluster_name, 'n1',
                                       **opts) as first:
            time.sleep(4)                      # every token has expired
            # the stream breaks (an idle timeout, a proxy): it reconnects
            # with the token it had
            first._watch._break_stream()
            with hacluster.get_coordinator(url, cluster_name, 'n2',
                                           **opts):
                wait_for(lambda: 'n2' in first.live_members(), 5,
                         'the watch to see the new member')
            assert first.session.losses == 0


def test_the_cli_takes_the_password_from_a_file_or_the_environment(
        auth_etcd, cluster_name, tmp_path):
    import os
    import sys
    hbin = os.path.join(os.path.dirname(sys.executable), 'hacluster')
    secret = tmp_path / 'etcd-password'
    secret.write_text('s3cret\n')
    with hacluster.get_coordinator(url_with(auth_etcd, 'manila:s3cret'),
                                   cluster_name, 'n1', lease_ttl=3,
                                   renew_deadline=2, renew_interval=0.5):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('HACLUSTER_')}

        def run(*args, **extra):
            return subprocess.run([hbin] + list(args), capture_output=True,
                                  text=True, timeout=60,
                                  env=dict(env, **extra))
        base = ['member', 'list', '-f', 'value', '-c', 'node', '--cluster',
                cluster_name]
        user_only = url_with(auth_etcd, 'manila')
        by_file = run(*base, '--backend-url', user_only, '--password-file',
                      str(secret))
        assert by_file.returncode == 0 and by_file.stdout.split() == ['n1'], \
            by_file.stderr
        by_env = run(*base, '--backend-url', user_only,
                     HACLUSTER_ETCD_PASSWORD='s3cret')
        assert by_env.stdout.split() == ['n1'], by_env.stderr
        whole = run(*base, HACLUSTER_BACKEND_URL=url_with(auth_etcd,
                                                          'manila:s3cret'))
        assert whole.stdout.split() == ['n1'], whole.stderr
        missing = run(*base, '--backend-url', user_only, '--password-file',
                      str(tmp_path / 'nope'))
        assert missing.returncode != 0
        assert '--password-file' in missing.stderr and 'nope' in \
            missing.stderr
        help_text = run('member', 'list', '--help').stdout
        assert '/proc/PID/cmdline' in help_text and '--password-file' in \
            help_text


# -- least privilege: one etcd user and key prefix per cluster --------------

ROOT = ('--user', _etcd_rig.ROOT_CREDENTIALS)
OPTS = dict(lease_ttl=3, renew_deadline=2, renew_interval=0.5)


def add_cluster_user(server, user, password, cluster):
    """An etcd user for one hacluster cluster only: role ``hacluster-
    <cluster>`` with readwrite on ``/hacluster/v1/<cluster>/`` and nothing
    else (the README's commands; the password read from stdin)."""
    prefix = keys.Layout(cluster).root
    role = 'hacluster-' + cluster
    etcdctl(server, *ROOT, 'user', 'add', user, '--interactive=false',
            input=password + '\n')
    etcdctl(server, *ROOT, 'role', 'add', role)
    etcdctl(server, *ROOT, 'role', 'grant-permission', role, '--prefix=true',
            'readwrite', prefix)
    etcdctl(server, *ROOT, 'user', 'grant-role', user, role)
    return url_with(server, '%s:%s' % (user, password))


@pytest.fixture
def two_clusters(auth_etcd, cluster_name):
    """``(server, (cluster_a, url_a), (cluster_b, url_b))``: two clusters,
    each with its own least-privileged etcd user. Cluster B's name starts
    with A's: only the prefix's trailing ``/`` keeps them apart."""
    a, b = cluster_name, cluster_name + '-b'
    return (auth_etcd, (a, add_cluster_user(auth_etcd, 'manila-a', 'pw-a', a)),
            (b, add_cluster_user(auth_etcd, 'manila-b', 'pw-b', b)))


def test_a_user_with_only_its_clusters_prefix_runs_the_cluster(
        two_clusters):
    from helpers import wait_for
    server, (cluster, url), _ = two_clusters
    with hacluster.get_coordinator(url, cluster, 'n1', **OPTS) as n1, \
            hacluster.get_coordinator(url, cluster, 'n2', **OPTS) as n2:
        wait_for(lambda: {'n1', 'n2'} <= set(n1.live_members()), 5,
                 'n1 to see both members')
        with n1.get_lock('share-1') as lock:
            assert lock.is_still_owner()
            assert not n2.get_lock('share-1').acquire(blocking=False)
        with n2.get_lock('share-1') as lock:
            assert lock.is_still_owner()
        n1.campaign()
        wait_for(lambda: n1.is_leader, 5, 'n1 to lead')
        assert n2.get_leader()['node'] == 'n1'
        n1.guarded_put_as_leader(n1.term, 'config', 'v1')
        assert n2.get_data('config')[0] == b'v1'
        with n2.claim('share', 's1', 'create') as claim:
            assert [c.resource_id for c in n1.list_claims()] == ['s1']
            claim.finish()
        assert n1.list_claims() == []
        n2.stop()
        wait_for(lambda: 'n2' not in n1.live_members(), 5,
                 'n1 to see n2 leave')
        assert n1.session.losses == 0


def test_a_cluster_user_cannot_read_or_write_another_clusters_keys(
        two_clusters):
    server, (cluster_a, url_a), (cluster_b, url_b) = two_clusters
    theirs = keys.Layout(cluster_b)
    with hacluster.get_coordinator(url_b, cluster_b, 'b1', **OPTS) as b1:
        a = _etcd.Client(_url.parse(url_a), timeout=2)
        for attempt in (lambda: a.get_prefix(theirs.root),
                        lambda: a.get(theirs.member('b1')),
                        lambda: a.put(theirs.member('intruder'), '{}'),
                        lambda: a.delete(theirs.member('b1'))):
            with pytest.raises(exceptions.HAClusterError) as e:
                attempt()
            assert 'permission denied' in str(e.value)
        # nor can a coordinator of cluster B run on A's credentials
        intruder = hacluster.get_coordinator(url_a, cluster_b, 'intruder',
                                             **OPTS)
        with pytest.raises(exceptions.HAClusterError) as e:
            intruder.start(timeout=2)
        assert 'permission denied' in str(e.value)
        assert set(b1.get_members()) == {'b1'}
        assert b1.session.losses == 0


def test_rbac_isolates_keys_but_not_leases(two_clusters):
    # What etcd (3.4) lets any authenticated user do to leases, whoever
    # granted them: list them, read their TTL and the names of their keys,
    # keep them alive; revoke them, or attach a key to them, only with write
    # permission on every key attached (so a member's session lease, which
    # holds its member record, is safe from revocation; a lease without
    # keys is not). Asserts etcd's behaviour, for the README; a change here
    # means the README is wrong.
    server, (cluster_a, url_a), (cluster_b, url_b) = two_clusters
    a = _etcd.Client(_url.parse(url_a), timeout=2)
    b = _etcd.Client(_url.parse(url_b), timeout=2)
    with hacluster.get_coordinator(url_b, cluster_b, 'b1', **OPTS) as b1:
        session_lease = b1.session.lease_id
        listed = a.call('/lease/leases', {})['leases']
        assert session_lease in [int(lease['ID']) for lease in listed]
        info = a.call('/kv/lease/timetolive', {'ID': session_lease,
                                               'keys': True})
        assert [base64.b64decode(k).decode() for k in info['keys']] == [
            keys.Layout(cluster_b).member('b1')]
        with pytest.raises(exceptions.HAClusterError) as e:
            a.lease_revoke(session_lease)
        assert 'permission denied' in str(e.value)
        # attaching a key to it needs the same permission, even a key of
        # A's own
        with pytest.raises(exceptions.HAClusterError) as e:
            a.put(keys.Layout(cluster_a).data_key('mine'), 'x',
                  lease=session_lease)
        assert 'permission denied' in str(e.value)
        assert b1.session.losses == 0

    # a lease of B's that nobody but A renews outlives its TTL
    lease, ttl = b.lease_grant(2)
    b.put(keys.Layout(cluster_b).data_key('held'), 'x', lease=lease)
    expires = time.monotonic() + ttl + 1
    while time.monotonic() < expires:
        assert a.lease_keepalive(lease) > 0
        time.sleep(0.5)             # the pace of a renewal, not a wait
    assert b.lease_time_to_live(lease) > 0
    b.lease_revoke(lease)

    # and a lease of B's without keys, A can revoke
    lease, _ = b.lease_grant(30)
    a.lease_revoke(lease)
    assert b.lease_time_to_live(lease) == -1
