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

"""A member for the fan-out benchmark.

    python _fanout_member.py ETCD_URL AMQP_URL CLUSTER NODE ITEMS SLEEP
    python _fanout_member.py --uncoordinated ITEMS SLEEP

Coordinated: one fan-out task ``poll`` (ITEMS items, handler sleeping SLEEP
seconds: simulated backend I/O), one cycle soon after start. stdin "report"
prints "REPORT <etcd requests> <items handled> <rpc casts>"; "exit" stops.
Uncoordinated: what manila does today on every node: handle every item,
sequentially; prints "DONE <seconds>".
"""
import sys
import time

if sys.argv[1] == '--uncoordinated':
    items, sleep = int(sys.argv[2]), float(sys.argv[3])
    started = time.monotonic()
    for _ in range(items):
        time.sleep(sleep)
    print('DONE %.4f' % (time.monotonic() - started), flush=True)
    sys.exit(0)

from oslo_service import backend  # noqa: E402

backend.init_backend(backend.BackendType.THREADING)

import hacluster  # noqa: E402
from hacluster.periodic import FANOUT, PeriodicRunner, periodic_task  # noqa

etcd_url, amqp_url, cluster, node = sys.argv[1:5]
ITEMS, SLEEP = int(sys.argv[5]), float(sys.argv[6])


class Poll:
    @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                   initial_delay=2.0, item_timeout=120)
    def poll(self, ctx):
        return {'share-%04d' % i: None for i in range(ITEMS)}

    def _item(self, ctx, item_id, payload):
        time.sleep(SLEEP)


coord = hacluster.get_coordinator(etcd_url, cluster, node=node).start()
runner = PeriodicRunner(coord, transport_url=amqp_url)
runner.add_all(Poll())
runner.start()
print('READY', flush=True)
for line in sys.stdin:
    if line.strip() == 'report':
        st = runner.stats('poll')
        print('REPORT %d %d %d' % (coord.client.requests,
                                   st['items_handled'], st['rpc_casts']),
              flush=True)
    elif line.strip() == 'exit':
        break
runner.stop()
coord.stop()
