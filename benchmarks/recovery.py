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

"""Recovery benchmark.

1. Claim cost: ``with coord.claim(...)`` enter+exit (a durable put, then a
   guarded delete) vs a bare etcd put+delete with etcd3gw, same etcd, same
   run; ratio reported (1.0 = no overhead beyond the two writes).
2. Time from SIGKILL of a node holding 50 claims to all 50 recovered by a
   survivor (handler: 10 ms), at lease_ttl 3 s and 10 s; goal <= lease_ttl +
   2 s + handler time.

    benchmarks/run recovery [ROUNDS]      (default 5 kills per ttl)
"""

import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import hacluster
from hacluster.testing import servers

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
HERE = os.path.dirname(os.path.abspath(__file__))
HOLDER = '''
import sys, hacluster
url, cluster, ttl, deadline, interval = sys.argv[1:6]
c = hacluster.get_coordinator(url, cluster, node='doomed',
    lease_ttl=int(ttl), renew_deadline=float(deadline),
    renew_interval=float(interval)).start()
claims = [c.claim('share', 'share-%d' % i, 'create') for i in range(50)]
for cl in claims:
    cl.__enter__()
print('HELD', flush=True)
sys.stdin.read()
'''
TIMINGS = {3: (3, 2.0, 0.5), 10: (10, 7.0, 2.0)}


def claim_cost(etcd, n=300):
    from etcd3gw.client import Etcd3Client
    host, port = etcd.endpoint.split(':')
    raw = Etcd3Client(host=host, port=int(port))
    coord = hacluster.get_coordinator(etcd.url, 'bench-claims',
                                      node='n1').start()

    def bare():
        raw.put('/bench/bare', 'x' * 200)
        raw.delete('/bench/bare')

    def claimed():
        with coord.claim('share', 'share-1', 'extend', {'new_size': 2}):
            pass

    def rate(fn):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n * 1000.0

    rounds = [(rate(bare), rate(claimed)) for _ in range(3)]
    coord.stop()
    bare_ms = statistics.median(r[0] for r in rounds)
    claim_ms = statistics.median(r[1] for r in rounds)
    return bare_ms, claim_ms


def kill_to_recovered(etcd, ttl):
    cluster = 'bench-rec-' + uuid.uuid4().hex[:6]
    timings = TIMINGS[ttl]
    done = []
    survivor = hacluster.get_coordinator(etcd.url, cluster, node='survivor',
                                         lease_ttl=timings[0],
                                         renew_deadline=timings[1],
                                         renew_interval=timings[2])

    def handler(claim):
        time.sleep(0.01)
        done.append(time.monotonic())
    survivor.register_recovery('share', handler)
    survivor.start()
    holder = subprocess.Popen(
        [sys.executable, '-W', 'ignore', '-c', HOLDER, etcd.url, cluster] +
        [str(t) for t in timings], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().startswith('HELD')
    time.sleep(0.5)
    holder.kill()
    killed = time.monotonic()
    holder.wait()
    deadline = killed + ttl + 30
    while len(done) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    survivor.stop()
    assert len(done) == 50, len(done)
    return done[-1] - killed, done[0] - killed


def main():
    results = {}
    with servers.EtcdServer(name='bench-recovery') as etcd:
        print('private etcd %s' % etcd.endpoint)
        bare_ms, claim_ms = claim_cost(etcd)
        print('  claim enter+exit %.2f ms vs bare put+delete %.2f ms: ratio '
              '%.2f' % (claim_ms, bare_ms, claim_ms / bare_ms))
        results.update(claim_ms=round(claim_ms, 3),
                       bare_put_delete_ms=round(bare_ms, 3),
                       claim_cost_ratio=round(claim_ms / bare_ms, 3))
        for ttl in (3, 10):
            runs = [kill_to_recovered(etcd, ttl) for _ in range(ROUNDS)]
            alls = [r[0] for r in runs]
            firsts = [r[1] for r in runs]
            goal = ttl + 2 + 50 * 0.01
            print('  ttl %2d s: SIGKILL -> all 50 claims recovered: min %.2f '
                  'median %.2f max %.2f s (first one after %.2f s median); '
                  'goal <= %.1f s' % (ttl, min(alls),
                                      statistics.median(alls), max(alls),
                                      statistics.median(firsts), goal))
            results['recovered_all_ttl%d_s' % ttl] = dict(
                min=round(min(alls), 3), median=round(
                    statistics.median(alls), 3), max=round(max(alls), 3),
                goal=goal, n=len(alls))
    print(json.dumps(results))


if __name__ == '__main__':
    main()
