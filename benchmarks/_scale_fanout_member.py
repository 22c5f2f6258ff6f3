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

"""A fan-out member for the scale benchmark: one process, one coordinator
(default timings) and one PeriodicRunner with a single fan-out task
``poll`` whose handler sleeps SLEEP seconds per item (simulated backend
latency; one worker per member, the default ``max_workers``). This is what
a manila-share node costs for one fan-out task. The task never ticks by
itself (spacing and initial delay of an hour): the benchmark starts each
cycle on the leader.

    python _scale_fanout_member.py ETCD_URL AMQP_URL CLUSTER NODE SLEEP \
        ITEM_TIMEOUT

Prints "READY <member id>" once serving. stdin commands:

* ``items N`` -- the lister returns N items from now on; the per-cycle
  handler timings are reset; prints "OK";
* ``run MEMBERS`` -- on the leader: wait (up to 60 s) until its own view
  shows MEMBERS fan-out members, then run one cycle in this thread and
  print "CYCLE <seconds the tick took>"; elsewhere "NOTLEADER";
* ``report`` -- "REPORT <etcd requests> <items handled> <rpc casts>
  <first handler start> <last handler end> <handled since items>
  <redispatched>" (times: time.time(), 0 if none);
  (with $SCALE_PROFILE set, each cycle of ``run`` is profiled, see below)
* ``exit`` -- stop the runner and the coordinator.
"""

import os
import sys
import threading
import time

import logging

from oslo_service import backend

backend.init_backend(backend.BackendType.THREADING)
# hacluster's INFO lines too (leadership, cycles left and adopted,
# re-dispatch), with times, on stderr: the benchmark reads them
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s '
                                        '%(message)s'))
logging.getLogger('hacluster').addHandler(_handler)
logging.getLogger('hacluster').setLevel(logging.INFO)
logging.getLogger('hacluster').propagate = False

import hacluster
from hacluster.periodic import FANOUT
from hacluster.periodic import periodic_task
from hacluster.periodic import PeriodicRunner

etcd_url, amqp_url, cluster, node = sys.argv[1:5]
SLEEP, ITEM_TIMEOUT = float(sys.argv[5]), float(sys.argv[6])
#: With $SCALE_PROFILE set, the leader's cycles run under cProfile and
#: their stats go to $SCALE_PROFILE.<items> (for finding where time goes).
PROFILE = os.environ.get('SCALE_PROFILE')
ITEMS = [0]
timing = {'first': 0.0, 'last': 0.0, 'n': 0}
timing_lock = threading.Lock()


class Poll:
    @periodic_task(spacing=3600, mode=FANOUT, handler='_item',
                   initial_delay=3600, item_timeout=ITEM_TIMEOUT)
    def poll(self, ctx):
        return {'share-%06d' % i: None for i in range(ITEMS[0])}

    def _item(self, ctx, item_id, payload):
        started = time.time()
        time.sleep(SLEEP)
        with timing_lock:
            if not timing['first'] or started < timing['first']:
                timing['first'] = started
            timing['last'] = max(timing['last'], time.time())
            timing['n'] += 1


coord = hacluster.get_coordinator(etcd_url, cluster, node=node).start()
runner = PeriodicRunner(coord, transport_url=amqp_url)
runner.add_all(Poll())
runner.start()
print('READY %s' % coord.member_id, flush=True)


def fanout_members():
    return sum(1 for rec in coord.live_members().values()
               if 'poll' in (rec.get('fanout_tasks') or ()) and
               rec.get('fanout_server'))


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == 'items':
        ITEMS[0] = int(words[1])
        with timing_lock:
            timing.update(first=0.0, last=0.0, n=0)
        print('OK', flush=True)
    elif words[0] == 'run':
        if not coord.is_leader:
            print('NOTLEADER', flush=True)
            continue
        deadline = time.monotonic() + 60
        while fanout_members() < int(words[1]) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        t = time.monotonic()
        if PROFILE:
            import cProfile
            profile = cProfile.Profile()
            profile.runcall(runner.run_now, 'poll', wait=True)
            profile.dump_stats('%s.%d' % (PROFILE, ITEMS[0]))
        else:
            runner.run_now('poll', wait=True)
        print('CYCLE %.4f' % (time.monotonic() - t), flush=True)
    elif words[0] == 'report':
        st = runner.stats('poll')
        with timing_lock:
            t = dict(timing)
        print('REPORT %d %d %d %.6f %.6f %d %d' % (
            coord.client.requests, st['items_handled'], st['rpc_casts'],
            t['first'], t['last'], t['n'], st['redispatched']), flush=True)
    elif words[0] == 'exit':
        break
runner.stop()
coord.stop()
