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

"""Fan-out benchmark: one poll of ITEMS items, each a SLEEP-second backend
call, done three ways in the same run on the same machine:

* uncoordinated: 3 nodes each poll every item (manila today);
* one node alone: one hacluster member handles every item;
* fan-out: 3 hacluster members, the leader spreads the items.

Reports backend calls per cycle, cycle wall time (from the cycle ledger in
etcd: leader start to finish), cycle_ratio = fan-out wall / one-node wall
(goal <= 0.40), and the etcd requests and RPC messages spent per cycle.

    benchmarks/run fanout [ITEMS [SLEEP]]     (default 300 0.05)
"""

import json
import os
import subprocess
import sys
import time
import uuid

import hacluster
from hacluster.periodic import ledger as _ledger
from hacluster.testing import servers

ITEMS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
SLEEP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
HERE = os.path.dirname(os.path.abspath(__file__))
MEMBER = os.path.join(HERE, '_fanout_member.py')


def member(*args):
    return subprocess.Popen([sys.executable, '-W', 'ignore', MEMBER] +
                            [str(a) for a in args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def ask(proc, command):
    proc.stdin.write(command + '\n')
    proc.stdin.flush()
    if command == 'exit':
        return None
    return proc.stdout.readline().split()


def one_cycle(etcd, amqp, nodes):
    """Run ``nodes`` members through one fan-out cycle; return figures."""
    cluster = 'bench-fan-' + uuid.uuid4().hex[:6]
    procs = [member(etcd.url, amqp, cluster, 'm%d' % i, ITEMS, SLEEP)
             for i in range(nodes)]
    for p in procs:
        assert p.stdout.readline().startswith('READY')
    before = [ask(p, 'report') for p in procs]
    obs = hacluster.get_coordinator(etcd.url, cluster, node='bench-obs',
                                    lease_ttl=3, renew_deadline=2,
                                    renew_interval=0.5).start()
    ledger = _ledger.Ledger(obs, 'poll')
    deadline = time.monotonic() + ITEMS * SLEEP * 2 + 60
    record = None
    while time.monotonic() < deadline:
        record = ledger.current()
        if record and record.get('status') == 'done':
            break
        time.sleep(0.1)
    obs.stop()
    after = [ask(p, 'report') for p in procs]
    for p in procs:
        ask(p, 'exit')
        p.wait(60)
    assert record and record['status'] == 'done', record
    handled = [int(a[2]) - int(b[2]) for a, b in zip(after, before)]
    return {
        'wall_s': round(record['finished_at'] - record['started_at'], 3),
        'backend_calls': sum(handled),
        'per_member': handled,
        'etcd_requests': sum(int(a[1]) - int(b[1])
                             for a, b in zip(after, before)),
        'rpc_messages': sum(int(a[3]) - int(b[3])
                            for a, b in zip(after, before)),
        'redispatched': record.get('redispatched', 0),
    }


def uncoordinated(nodes):
    started = time.monotonic()
    procs = [member('--uncoordinated', ITEMS, SLEEP) for _ in range(nodes)]
    for p in procs:
        p.wait()
    return round(time.monotonic() - started, 3), ITEMS * nodes


def main():
    with servers.EtcdServer(name='bench-fanout') as etcd, \
            servers.RabbitMQServer() as rabbit:
        print('private etcd %s, RabbitMQ %d; %d items x %g s'
              % (etcd.endpoint, rabbit.port, ITEMS, SLEEP))
        un_wall, un_calls = uncoordinated(3)
        print('  uncoordinated, 3 nodes: %d backend calls per cycle, '
              'wall %.2f s' % (un_calls, un_wall))
        alone = one_cycle(etcd, rabbit.transport_url, 1)
        print('  hacluster, 1 node:      %d backend calls, wall %.2f s, '
              '%d etcd requests, %d RPC messages'
              % (alone['backend_calls'], alone['wall_s'],
                 alone['etcd_requests'], alone['rpc_messages']))
        fan = one_cycle(etcd, rabbit.transport_url, 3)
        print('  hacluster, 3 members:   %d backend calls (%s), wall %.2f s, '
              '%d etcd requests, %d RPC messages'
              % (fan['backend_calls'], '/'.join(map(str, fan['per_member'])),
                 fan['wall_s'], fan['etcd_requests'], fan['rpc_messages']))
        ratio = fan['wall_s'] / alone['wall_s']
        print('  cycle_ratio (3-member wall / one node) = %.3f (goal <= 0.40)'
              % ratio)
        print('  backend calls per cycle: %d vs %d uncoordinated (%.1fx '
              'fewer)' % (fan['backend_calls'], un_calls,
                          un_calls / float(fan['backend_calls'])))
    print(json.dumps({
        'items': ITEMS, 'members': 3, 'handler_sleep_s': SLEEP,
        'backend_calls_per_cycle': fan['backend_calls'],
        'uncoordinated_calls_per_cycle': un_calls,
        'uncoordinated_wall_s': un_wall,
        'one_node_wall_s': alone['wall_s'],
        'fanout_wall_s': fan['wall_s'],
        'cycle_ratio': round(ratio, 3),
        'items_per_member': fan['per_member'],
        'etcd_requests_per_cycle': fan['etcd_requests'],
        'rpc_messages_per_cycle': fan['rpc_messages'],
        'one_node_etcd_requests_per_cycle': alone['etcd_requests'],
        'redispatched': fan['redispatched'],
    }))


if __name__ == '__main__':
    main()
