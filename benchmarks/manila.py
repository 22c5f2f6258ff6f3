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

"""Three real manila-share 23.0.1 processes: manila's own ShareManager
(the baseline: what operators can run today) against hacluster's
HAShareManager, in the same run, on the same PostgreSQL, RabbitMQ and etcd,
with the same driver (manila's DummyDriver + the hacluster mixin, which
only records what it is asked).

Figures, each for both managers:

1. creates: N shares (driver create 0.2 s) through the backend's shared
   queue; wall time until all are available, and the spread over nodes
   (the cost of claims and cluster locks shows in the ratio);
2. backend stats polls per ``periodic_interval`` (2 s) over 20 s;
3. per-share status polls per cycle for 12 shares waiting on the driver
   (``creating_from_snapshot``) over 20 s;
4. SIGKILL of a node 1 s into a 10 s create: the share's status 20 s later,
   and when it reached a final state.

    benchmarks/run manila [N]        (default 30 creates)
"""

import collections
import json
import sys
import time

from hacluster.testing import manila_rig
from hacluster.testing import servers

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
INTERVAL = 2
WINDOW = 20


def measure(label, pg, rabbit, etcd, manager):
    out = {}
    cluster = manila_rig.ManilaCluster(
        pg, rabbit.transport_url,
        backend_url=etcd.url if manager == manila_rig.HA_MANAGER else None,
        periodic_interval=INTERVAL, manager=manager,
        delays={'create_share': 0.2})
    try:
        cluster.start()
        # 1. creates
        began = time.time()
        ids = [s['instance_id'] for s in cluster.create_shares(N)]
        cluster.wait_statuses(ids, {'available', 'error'}, 300)
        done = max(cluster.updated_at(i) for i in ids)
        spread = collections.Counter(e['node'] for e in cluster.events(
            'create_share.end', since=began))
        out['create_wall_s'] = round(done - began, 2)
        out['create_spread'] = dict(sorted(spread.items()))
        statuses = cluster.statuses()
        out['create_available'] = sum(
            1 for i in ids if statuses[i]['status'] == 'available')
        # 2. stats polls
        since = time.time()
        time.sleep(WINDOW)
        stats = collections.Counter(e['node'] for e in cluster.events(
            'stats', since=since))
        out['stats_polls_per_interval'] = round(
            sum(stats.values()) / (WINDOW / INTERVAL), 2)
        out['stats_by_node'] = dict(sorted(stats.items()))
        # 3. per-share polls
        waiting = ids[:12]
        for instance_id in waiting:
            cluster.client('set-status', instance_id,
                           'creating_from_snapshot')
        since = time.time()
        time.sleep(WINDOW)
        polls = cluster.events('get_share_status', since=since)
        out['share_polls_per_share_per_interval'] = round(
            len(polls) / len(waiting) / (WINDOW / INTERVAL), 2)
        out['share_polls_by_node'] = dict(sorted(collections.Counter(
            e['node'] for e in polls).items()))
        for instance_id in waiting:
            cluster.client('set-status', instance_id, 'available')
        # 4. SIGKILL mid-create
        [cut] = [s['instance_id'] for s in cluster.create_shares(1,
                                                                 'slow10')]
        node = None
        deadline = time.monotonic() + 30
        while node is None and time.monotonic() < deadline:
            for e in cluster.events('create_share.start'):
                if e['id'] == cut:
                    node = e['node']
            time.sleep(0.05)
        time.sleep(1)
        killed = time.time()
        cluster.kill(node)
        time.sleep(20)
        status = cluster.statuses()[cut]['status']
        out['killed_create_status_after_20s'] = status
        out['killed_create_final_after_s'] = (
            round(cluster.updated_at(cut) - killed, 2)
            if status != 'creating' else None)
    finally:
        cluster.close()
    print('\n%s' % label)
    for key, value in out.items():
        print('  %-38s %s' % (key, value))
    return out


def main():
    with servers.PostgresServer() as pg, servers.EtcdServer(
            name='bench-manila') as etcd, servers.RabbitMQServer() as rabbit:
        manila_rig.make_template(pg)
        print('private PostgreSQL 127.0.0.1:%d, RabbitMQ 127.0.0.1:%d, etcd '
              '%s' % (pg.port, rabbit.port, etcd.endpoint))
        plain = measure('manila ShareManager, 3 nodes (baseline)', pg,
                        rabbit, etcd, manila_rig.PLAIN_MANAGER)
        ha = measure('hacluster HAShareManager, 3 nodes', pg, rabbit, etcd,
                     manila_rig.HA_MANAGER)
    ratios = {
        'create_wall_ratio': round(ha['create_wall_s'] /
                                   plain['create_wall_s'], 2),
        'stats_polls_ratio': round(ha['stats_polls_per_interval'] /
                                   plain['stats_polls_per_interval'], 2),
        'share_polls_ratio': round(
            ha['share_polls_per_share_per_interval'] /
            plain['share_polls_per_share_per_interval'], 2),
    }
    print('\nratios (hacluster / manila): %s' % ratios)
    print(json.dumps({'plain': plain, 'hacluster': ha, 'ratios': ratios,
                      'creates': N}))


if __name__ == '__main__':
    main()
