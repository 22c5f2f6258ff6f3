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

"""A plain node for the scale benchmark: one process, one coordinator
(session lease, member record, the cluster watch) campaigning for leader,
with the shipped default timings (lease_ttl 10 s, renew_deadline 7 s,
renew_interval 2 s). No periodic tasks, no locks.

    python _scale_node.py ETCD_URL CLUSTER NODE

Prints "READY <member id>" once joined and campaigning, and
"LEADING <time.monotonic()> <term>" when it starts leading (CLOCK_MONOTONIC
is the same clock in every process of the machine). stdin: "report" prints
"REPORT <etcd requests sent by this process>"; "exit" stops it (gracefully).
"""

import sys
import time

import hacluster

url, cluster, node = sys.argv[1:4]
coord = hacluster.get_coordinator(url, cluster, node=node).start()


def started(term):
    print('LEADING %.6f %d' % (time.monotonic(), term), flush=True)


coord.run_for_leader(started, lambda term: None)
print('READY %s' % coord.member_id, flush=True)
for line in sys.stdin:
    if line.strip() == 'report':
        print('REPORT %d' % coord.client.requests, flush=True)
    elif line.strip() == 'exit':
        break
coord.stop()
