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

"""Election benchmark: failover time and idle etcd load.

1. Failover: two candidate processes; the leader is SIGKILLed (or stopped
   gracefully with SIGTERM); the time until an observer sees the other one
   lead is measured, N times each, at lease_ttl 10 s and 3 s. Reported as
   min/median/max and as a ratio to lease_ttl. Goals: SIGKILL <= 1.0 x ttl
   + 2 s; graceful <= 1 s. (Kubernetes' defaults, 15/10/2 s, fail over in
   ~17 s after a crash.)
2. Idle load: etcd requests per second made by one member doing nothing,
   with 0 and with 100 locks held (goal <= 1/s, not growing with locks).

    benchmarks/run election [N]      (N kills and N graceful stops per ttl;
                                      default 10)
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import hacluster
from hacluster.testing import servers

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10
HERE = os.path.dirname(os.path.abspath(__file__))
TIMINGS = {10: (10, 7.0, 2.0), 3: (3, 2.0, 0.5)}


class Candidate:
    def __init__(self, url, cluster, node, timings):
        self.node = node
        self.proc = subprocess.Popen(
            [sys.executable, '-W', 'ignore',
             os.path.join(HERE, '_candidate.py'), url, cluster, node] +
            [str(t) for t in timings], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith('QUEUED'), line


def failover(etcd, ttl, graceful):
    timings = TIMINGS[ttl]
    cluster = 'bench-el-' + uuid.uuid4().hex[:6]
    obs = hacluster.get_coordinator(etcd.url, cluster, node='observer',
                                    lease_ttl=3, renew_deadline=2,
                                    renew_interval=0.5).start()
    changes = []
    cond = threading.Condition()

    def on_new(record):
        with cond:
            changes.append((time.monotonic(), record and record['node']))
            cond.notify_all()
    obs.on_new_leader(on_new)

    def wait_for(pred, timeout):
        deadline = time.monotonic() + timeout
        with cond:
            while True:
                if changes and pred(changes[-1][1]):
                    return changes[-1][0], changes[-1][1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError('no leader change; saw %r' % changes)
                cond.wait(left)

    seq = iter(range(1000))
    cands = {}
    for _ in range(2):
        c = Candidate(etcd.url, cluster, 'c%d' % next(seq), timings)
        cands[c.node] = c
    samples = []
    for _ in range(N):
        _, leader = wait_for(lambda n: n is not None, ttl + 5)
        victim = cands.pop(leader)
        if graceful:
            victim.proc.terminate()
        else:
            victim.proc.kill()
        t0 = time.monotonic()
        t1, _ = wait_for(lambda n, old=leader: n not in (None, old),
                         ttl + 10)
        samples.append(t1 - t0)
        victim.proc.wait(15)
        c = Candidate(etcd.url, cluster, 'c%d' % next(seq), timings)
        cands[c.node] = c
    for c in cands.values():
        c.proc.terminate()
        c.proc.wait(15)
    obs.stop()
    return samples


def idle_rate(etcd, held, seconds=12.0):
    cluster = 'bench-idle-' + uuid.uuid4().hex[:6]
    c = hacluster.get_coordinator(etcd.url, cluster, node='idle').start()
    locks = [c.get_lock('l%d' % i) for i in range(held)]
    for lock in locks:
        lock.acquire()
    time.sleep(1.0)
    before = c.client.requests
    time.sleep(seconds)
    rate = (c.client.requests - before) / seconds
    for lock in locks:
        lock.release()
    c.stop()
    return rate


def summary(samples, ttl):
    return dict(min=round(min(samples), 4),
                median=round(statistics.median(samples), 4),
                max=round(max(samples), 4),
                median_ratio_to_ttl=round(statistics.median(samples) / ttl,
                                          3),
                n=len(samples))


def main():
    results = {}
    with servers.EtcdServer(name='bench-election') as etcd:
        print('private etcd %s; %d failovers of each kind per ttl'
              % (etcd.endpoint, N))
        for ttl in (3, 10):
            for graceful in (True, False):
                kind = 'graceful' if graceful else 'sigkill'
                s = summary(failover(etcd, ttl, graceful), ttl)
                results['%s_ttl%d' % (kind, ttl)] = s
                goal = '<= 1 s' if graceful else '<= %d s (1.0 x ttl + 2)' \
                    % (ttl + 2)
                print('  ttl %2d s  %-8s failover  min %7.3f  median %7.3f  '
                      'max %7.3f s  (median %.3f x ttl; goal %s)'
                      % (ttl, kind, s['min'], s['median'], s['max'],
                         s['median_ratio_to_ttl'], goal))
        r0 = idle_rate(etcd, 0)
        r100 = idle_rate(etcd, 100)
        print('  idle etcd requests per member: %.2f/s with 0 locks held, '
              '%.2f/s with 100 (goal <= 1/s, flat)' % (r0, r100))
        results.update(idle_requests_per_s_0_locks=round(r0, 3),
                       idle_requests_per_s_100_locks=round(r100, 3))
    print(json.dumps(results))


if __name__ == '__main__':
    main()
