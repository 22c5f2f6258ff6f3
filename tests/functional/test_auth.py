"""etcd with authentication enabled: user:password in the backend URL."""

import subprocess

import pytest

import hacluster
from hacluster import exceptions


def etcdctl(server, *args):
    out = subprocess.run(['etcdctl', '--endpoints', server.client_url] +
                         list(args), capture_output=True, text=True,
                         timeout=30, env={'ETCDCTL_API': '3',
                                          'PATH': '/usr/bin:/bin'})
    assert out.returncode == 0, out.stderr
    return out.stdout


def enable_auth(server):
    """Users root (everything) and manila (readwrite on /hacluster/), then
    authentication on."""
    etcdctl(server, 'user', 'add', 'root:rootpw')
    etcdctl(server, 'role', 'add', 'root')   # may already exist in 3.4
    etcdctl(server, 'user', 'grant-role', 'root', 'root')
    etcdctl(server, 'user', 'add', 'manila:s3cret')
    etcdctl(server, 'role', 'add', 'hacluster')
    etcdctl(server, 'role', 'grant-permission', 'hacluster', '--prefix',
            'readwrite', '/hacluster/')
    etcdctl(server, 'user', 'grant-role', 'manila', 'hacluster')
    etcdctl(server, 'auth', 'enable')
    return server


@pytest.fixture
def auth_etcd(fresh_etcd):
    return enable_auth(fresh_etcd)


def token_server(tmp_path, kind, ttl=60):
    """A private etcd with auth, its tokens ``simple`` or ``jwt`` (RS256,
    a key made here, valid ``ttl`` seconds)."""
    from hacluster.testing import servers
    args = []
    if kind == 'jwt':
        key = tmp_path / 'jwt.key'
        subprocess.run(['openssl', 'genrsa', '-out', str(key), '2048'],
                       check=True, capture_output=True, timeout=60)
        subprocess.run(['openssl', 'rsa', '-in', str(key), '-pubout', '-out',
                        str(tmp_path / 'jwt.pub')], check=True,
                       capture_output=True, timeout=60)
        args = ['--auth-token', 'jwt,pub-key=%s,priv-key=%s,'
                'sign-method=RS256,ttl=%ds' % (tmp_path / 'jwt.pub', key,
                                               ttl)]
    return servers.EtcdServer(name='etcd-' + kind, extra_args=args)


@pytest.fixture(params=['simple', 'jwt'])
def token_etcd(request, tmp_path):
    with token_server(tmp_path, request.param) as server:
        yield enable_auth(server)


def url_with(server, userinfo):
    return 'etcd3+http://%s@%s' % (userinfo, server.endpoint)


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
        etcdctl(auth_etcd, '--user', 'root:rootpw', 'role', 'add',
                'unrelated')
        etcdctl(auth_etcd, '--user', 'root:rootpw', 'role',
                'grant-permission', 'unrelated', 'read', '/elsewhere')
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
