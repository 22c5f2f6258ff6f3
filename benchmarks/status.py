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

"""Status benchmark: ``hacluster status -f json`` on a cluster with 10,000
held locks and 10,000 open claims (goal <= 1 s), and the etcd requests it
makes. Locks and claims are made through the public API (8 threads), by 3
live members.

    benchmarks/run status [N]        (default 10000 of each)
"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import hacluster
from hacluster import etcd as _etcd
from hacluster import status as _status
from hacluster.testing import servers
from hacluster import url as _url

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000


def fill(coords, n):
    held, claims = [], []
    lock = threading.Lock()

    def work(k):
        c = coords[k % len(coords)]
        mine_l, mine_c = [], []
        for i in range(k, n, 8):
            lk = c.get_lock('share-%05d' % i)
            lk.acquire()
            mine_l.append(lk)
            cl = c.claim('share', 'share-%05d' % i, 'create')
            cl.__enter__()
            mine_c.append(cl)
        with lock:
            held.extend(mine_l)
            claims.extend(mine_c)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return held, claims


def main():
    with servers.EtcdServer(name='bench-status') as etcd:
        cluster = 'bench-st-' + uuid.uuid4().hex[:6]
        coords = [hacluster.get_coordinator(etcd.url, cluster,
                                            node='m%d' % i).start()
                  for i in range(3)]
        coords[0].campaign()
        started = time.monotonic()
        held, claims = fill(coords, N)
        print('private etcd %s; %d locks held and %d claims open by 3 '
              'members (set up in %.1f s)' % (etcd.endpoint, len(held),
                                              len(claims),
                                              time.monotonic() - started))
        client = _etcd.Client(_url.parse(etcd.url))
        runs = []
        for _ in range(3):
            before = client.requests
            t = time.monotonic()
            state = _status.collect(client, cluster)
            runs.append((time.monotonic() - t, client.requests - before))
        collect_s = min(r[0] for r in runs)
        requests = runs[0][1]
        assert len(state['locks']) == N and len(state['claims']) == N
        cli = []
        for _ in range(3):
            t = time.monotonic()
            out = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), 'hacluster'),
                 'status', '-f', 'json', '--backend-url', etcd.url,
                 '--cluster', cluster], capture_output=True, text=True,
                timeout=120)
            cli.append(time.monotonic() - t)
            assert out.returncode == 0, out.stderr[-2000:]
        parsed = json.loads(out.stdout)
        assert len(parsed['locks']) == N
        size = len(out.stdout)
        t = time.monotonic()
        subprocess.run([os.path.join(os.path.dirname(sys.executable),
                                     'hacluster'), '--version'],
                       capture_output=True, timeout=60)
        startup = time.monotonic() - t
        print('  collect (in process): %.3f s, %d etcd requests (1 '
              'snapshot transaction + %d member lease lookups)'
              % (collect_s, requests, requests - 1))
        print('  hacluster status -f json (whole command): min %.3f s, '
              'median %.3f s; of which interpreter + imports ~%.3f s; '
              'output %.1f MB; goal <= 1 s'
              % (min(cli), sorted(cli)[1], startup, size / 1e6))
        for c in coords:
            c._recovery.claim_grace = 0
            c.stop()
    print(json.dumps({'locks': N, 'claims': N,
                      'collect_s': round(collect_s, 3),
                      'status_command_s': round(min(cli), 3),
                      'status_command_median_s': round(sorted(cli)[1], 3),
                      'command_startup_s': round(startup, 3),
                      'etcd_requests': requests,
                      'output_bytes': size}))


if __name__ == '__main__':
    main()
