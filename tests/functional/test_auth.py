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


@pytest.fixture
def auth_etcd(fresh_etcd):
    etcdctl(fresh_etcd, 'user', 'add', 'root:rootpw')
    etcdctl(fresh_etcd, 'role', 'add', 'root')   # may already exist in 3.4
    etcdctl(fresh_etcd, 'user', 'grant-role', 'root', 'root')
    etcdctl(fresh_etcd, 'user', 'add', 'manila:s3cret')
    etcdctl(fresh_etcd, 'role', 'add', 'hacluster')
    etcdctl(fresh_etcd, 'role', 'grant-permission', 'hacluster', '--prefix',
            'readwrite', '/hacluster/')
    etcdctl(fresh_etcd, 'user', 'grant-role', 'manila', 'hacluster')
    etcdctl(fresh_etcd, 'auth', 'enable')
    return fresh_etcd


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
