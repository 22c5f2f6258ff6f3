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

"""The private-server test rig itself (hacluster.testing.servers)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

from etcd3gw.client import Etcd3Client
from etcd3gw import exceptions as etcd_exc
import pytest

from hacluster.testing import servers

DEFAULT_PORTS = {2379, 2380, 4369, 5672, 25672, 15672, 35672}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def client_for(server, timeout=5):
    return Etcd3Client(host='127.0.0.1', port=server.client_port,
                       timeout=timeout)


def listen_addresses(port):
    """Local addresses with a TCP socket LISTENing on ``port``."""
    found = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    addr, hexport = fields[1].rsplit(':', 1)
                    if int(hexport, 16) == port and fields[3] == '0A':
                        found.add(addr)
        except OSError:
            continue
    return found


LOOPBACK_HEX = {
    '0100007F',                          # 127.0.0.1
    '00000000000000000000000001000000',  # ::1
}


def assert_loopback_only(port):
    addrs = listen_addresses(port)
    assert addrs, 'nothing listens on port %d' % port
    assert addrs <= LOOPBACK_HEX, (port, addrs)


def assert_gone(pid):
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def amqp_connects(port):
    import amqp
    conn = amqp.Connection(host='127.0.0.1:%d' % port, connect_timeout=2)
    try:
        conn.connect()
        return True
    except (OSError, amqp.exceptions.AMQPError):
        return False
    finally:
        try:
            conn.close()
        except Exception:
            pass


# --------------------------------------------------------------------------
# free_port


def test_free_port_is_bindable_and_not_repeated():
    ports = [servers.free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert not set(ports) & DEFAULT_PORTS
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', ports[-1]))


# --------------------------------------------------------------------------
# etcd


def test_etcd_private_port_put_get(etcd):
    assert etcd.running
    assert etcd.client_port not in DEFAULT_PORTS
    assert etcd.peer_port not in DEFAULT_PORTS
    assert etcd.endpoint == '127.0.0.1:%d' % etcd.client_port
    assert etcd.url == 'etcd3+http://127.0.0.1:%d' % etcd.client_port
    assert etcd.is_healthy()
    assert_loopback_only(etcd.client_port)
    assert_loopback_only(etcd.peer_port)

    client = client_for(etcd)
    key = '/test-servers/%s' % uuid.uuid4().hex
    assert client.put(key, 'value-1')
    assert client.get(key) == [b'value-1']


def test_etcd_kill_makes_it_unreachable_and_restart_keeps_data(fresh_etcd):
    client = client_for(fresh_etcd, timeout=2)
    key = '/test-servers/persist'
    assert client.put(key, 'kept')
    old_pid = fresh_etcd.pid

    fresh_etcd.kill()
    assert not fresh_etcd.running
    assert fresh_etcd.pid is None
    assert_gone(old_pid)
    assert not fresh_etcd.is_healthy()
    with pytest.raises(etcd_exc.ConnectionFailedError):
        client.get(key)

    fresh_etcd.restart()
    assert fresh_etcd.running
    assert fresh_etcd.pid != old_pid
    assert client_for(fresh_etcd).get(key) == [b'kept']


def test_etcd_pause_and_resume(fresh_etcd):
    client = client_for(fresh_etcd, timeout=1)
    assert client.put('/test-servers/pause', 'x')
    fresh_etcd.pause()
    try:
        assert fresh_etcd.running
        with pytest.raises((etcd_exc.ConnectionTimeoutError,
                            etcd_exc.ConnectionFailedError)):
            client.get('/test-servers/pause')
    finally:
        fresh_etcd.resume()
    assert client.get('/test-servers/pause') == [b'x']


def test_etcd_stop_then_close_removes_process_and_data():
    server = servers.EtcdServer(name='etcd-close').start()
    pid, data_dir = server.pid, server.data_dir
    assert os.path.isdir(data_dir)
    server.stop()
    server.stop()  # idempotent
    assert_gone(pid)
    assert os.path.isdir(data_dir)  # kept for restart()
    server.close()
    server.close()  # idempotent
    assert not os.path.exists(data_dir)
    with pytest.raises(RuntimeError):
        server.start()


def test_etcd_retries_on_port_clash(monkeypatch):
    with socket.socket() as blocker:
        blocker.bind(('127.0.0.1', 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        from hacluster.testing import process
        real_free_port = process.free_port
        handed = iter([taken])
        monkeypatch.setattr(process, 'free_port',
                            lambda: next(handed, None) or real_free_port())
        with servers.EtcdServer(name='etcd-clash') as server:
            assert server.client_port != taken
            assert server.is_healthy()
            with open(server.log_path) as f:
                assert 'address already in use' in f.read()


def test_start_failure_raises_with_log_tail():
    server = servers.EtcdServer(name='etcd-bad', extra_args=['--no-such-flag'])
    try:
        with pytest.raises(servers.ServerStartError) as info:
            server.start(timeout=10)
        assert 'no-such-flag' in str(info.value)
        assert not server.running
    finally:
        server.close()


def test_servers_are_stopped_at_interpreter_exit():
    code = (
        'from hacluster.testing import servers\n'
        's = servers.EtcdServer(name="etcd-atexit").start()\n'
        'print(s.pid, s.data_dir, flush=True)\n'
        # no close(): the atexit hook must do it
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=REPO_ROOT,
                         stdout=subprocess.PIPE, timeout=60, check=True,
                         text=True).stdout
    pid_text, data_dir = out.split()
    pid = int(pid_text)
    leaked_pid = os.path.exists('/proc/%d' % pid)
    leaked_dir = os.path.exists(data_dir)
    if leaked_pid:  # clean up what the subprocess left behind
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            if b'etcd-atexit' in f.read():
                os.kill(pid, signal.SIGKILL)
    if leaked_dir and 'hacluster-etcd-etcd-atexit' in data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert not leaked_pid, 'etcd pid %d survived interpreter exit' % pid
    assert not leaked_dir, '%s survived interpreter exit' % data_dir


# --------------------------------------------------------------------------
# etcd cluster


def test_etcd_cluster(etcd_cluster):
    members = etcd_cluster.members
    assert len(members) == 3
    ports = [p for m in members for p in (m.client_port, m.peer_port)]
    assert len(set(ports)) == 6
    assert not set(ports) & DEFAULT_PORTS
    assert etcd_cluster.endpoints == [m.endpoint for m in members]
    assert etcd_cluster.url == 'etcd3+http://' + ','.join(
        '127.0.0.1:%d' % m.client_port for m in members)
    for member in members:
        assert member.running and member.is_healthy(), member
        assert_loopback_only(member.client_port)
        assert_loopback_only(member.peer_port)
    assert len(client_for(members[0]).members()) == 3

    first, third = client_for(members[0]), client_for(members[2])
    assert first.put('/test-servers/cluster', 'replicated')
    assert third.get('/test-servers/cluster') == [b'replicated']

    leader = etcd_cluster.leader()
    assert leader in members
    leader.kill()
    survivors = [m for m in members if m is not leader]
    etcd_cluster.wait_healthy(survivors, timeout=15)
    a, b = client_for(survivors[0]), client_for(survivors[1])
    assert a.put('/test-servers/after-kill', 'still-serving')
    assert b.get('/test-servers/after-kill') == [b'still-serving']
    assert b.get('/test-servers/cluster') == [b'replicated']
    assert etcd_cluster.leader() in survivors

    # The killed member rejoins with its data and catches up.
    leader.restart()
    assert leader.is_healthy()
    assert wait_for(lambda: client_for(leader).get(
        '/test-servers/after-kill', serializable=True) == [b'still-serving'])


# --------------------------------------------------------------------------
# RabbitMQ


def test_rabbitmq_rpc_round_trip(rabbitmq):
    from oslo_config import cfg
    import oslo_messaging

    assert rabbitmq.running
    assert rabbitmq.port not in DEFAULT_PORTS
    assert rabbitmq.transport_url == 'rabbit://guest:guest@127.0.0.1:%d/' % (
        rabbitmq.port)
    for port in (rabbitmq.port, rabbitmq.dist_port, rabbitmq.epmd_port):
        assert port not in DEFAULT_PORTS
        assert_loopback_only(port)

    conf = cfg.ConfigOpts()
    conf([], project='hacluster-functional', default_config_files=[])
    # oslo.messaging 18 needs its metrics/tracing options on a private
    # ConfigOpts too: hacluster's own helper registers them.
    from hacluster.periodic.rpc import register_messaging_opts
    register_messaging_opts(conf)
    transport = oslo_messaging.get_rpc_transport(
        conf, url=rabbitmq.transport_url)
    topic = 'hacluster-test-%s' % uuid.uuid4().hex

    class Echo:
        def echo(self, ctxt, value):
            return {'echo': value, 'server_pid': os.getpid()}

    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server='s1'), [Echo()],
        executor='threading')
    server.start()
    try:
        client = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic=topic), timeout=30)
        assert client.call({}, 'echo', value='ping') == {
            'echo': 'ping', 'server_pid': os.getpid()}
        # ...and it really went through this broker:
        queues = rabbitmq.rabbitmqctl('list_queues', 'name', '--silent',
                                      '--no-table-headers').stdout
        assert topic in queues.split()
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


def test_rabbitmq_kill_restart_close():
    broker = servers.RabbitMQServer().start()
    try:
        beam, wrapper, epmd = broker.pid, broker.wrapper_pid, broker.epmd_pid
        assert len({beam, wrapper, epmd}) == 3
        assert amqp_connects(broker.port)
        assert_loopback_only(broker.dist_port)

        broker.kill()
        assert not broker.running
        assert_gone(beam)
        assert_gone(wrapper)
        assert broker.epmd_pid == epmd  # epmd outlives a broker crash
        assert not amqp_connects(broker.port)

        broker.restart()
        assert broker.running
        assert broker.epmd_pid == epmd  # reused
        beam2, wrapper2 = broker.pid, broker.wrapper_pid
        assert beam2 not in (beam, None)
        # erl_child_setup & co. leave the process group (setsid): they
        # must be gone after close() as well.
        descendants = servers._descendants(wrapper2)
        assert beam2 in descendants and len(descendants) >= 2
        assert amqp_connects(broker.port)
        data_dir = broker.data_dir
    finally:
        broker.close()
    for pid in (beam2, wrapper2, epmd):
        assert_gone(pid)
    assert servers._still_alive(descendants) == []
    assert broker.epmd_pid is None and broker.pid is None
    assert not os.path.exists(data_dir)
    assert not amqp_connects(broker.port)
