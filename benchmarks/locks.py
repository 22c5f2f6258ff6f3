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

"""Lock benchmark: hacluster vs tooz's etcd3gw driver vs the raw floor.

All on one private etcd started here, in the same run, so the figures are
ratios measured side by side:

1. uncontended acquire+release rate:
   - raw floor: the two etcd writes a lock cannot do without (create-if-
     absent bound to an existing lease, then delete), with etcd3gw directly;
   - tooz 9.x etcd3gw driver (grants a lease per acquire);
   - hacluster (enqueue+read in one txn, then delete; fencing token
     included).
2. hand-off latency to a blocked waiter in another coordinator (hacluster:
   watch; tooz: its 1 s polling loop), from just before release() to the
   waiter's acquire() returning.
3. 8 shared holders each holding 200 ms, vs one hold (and vs exclusive).
"""

import json
import statistics
import sys
import threading
import time
import uuid

import hacluster
from hacluster.testing import servers

N_RATE = int(sys.argv[1]) if len(sys.argv) > 1 else 300
N_HANDOFF = 50
N_HANDOFF_TOOZ = 6


def rate(fn, n):
    fn()  # warm up (connections, API path discovery)
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - started)


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values))) - 1))
    return values[k]


def main():
    with servers.EtcdServer(name='bench-locks') as etcd:
        host, port = etcd.endpoint.split(':')
        print('private etcd %s (pid %s)' % (etcd.endpoint, etcd.pid))
        results = {'etcd': etcd.endpoint}

        # -- 1. uncontended rate -------------------------------------------
        from etcd3gw.client import Etcd3Client
        raw = Etcd3Client(host=host, port=int(port))
        lease = raw.lease(60)

        def raw_lock():
            assert raw.create('/bench/raw/lock', 'x', lease=lease)
            raw.delete('/bench/raw/lock')

        from tooz import coordination
        tz = coordination.get_coordinator(etcd.url, b'bench-tooz')
        tz.start()
        tooz_lock = tz.get_lock(b'bench-tooz')

        def tooz_cycle():
            assert tooz_lock.acquire()
            tooz_lock.release()

        cluster = 'bench-' + uuid.uuid4().hex[:6]
        c1 = hacluster.get_coordinator(etcd.url, cluster, node='b1').start()
        c2 = hacluster.get_coordinator(etcd.url, cluster, node='b2').start()

        def ha_cycle():
            lock = c1.get_lock('bench')
            assert lock.acquire()
            assert lock.fencing_token
            lock.release()

        # Interleave the three in rounds so drift on the machine hits all.
        rates = {'raw': [], 'tooz': [], 'hacluster': []}
        for _ in range(3):
            rates['raw'].append(rate(raw_lock, N_RATE // 3))
            rates['tooz'].append(rate(tooz_cycle, N_RATE // 3))
            rates['hacluster'].append(rate(ha_cycle, N_RATE // 3))
        r = {k: statistics.median(v) for k, v in rates.items()}
        lease.revoke()
        print('\n1. uncontended acquire+release (%d cycles each, median of 3 '
              'rounds)' % N_RATE)
        for k in ('raw', 'tooz', 'hacluster'):
            print('   %-10s %7.1f /s   (%.2f ms per cycle)'
                  % (k, r[k], 1000.0 / r[k]))
        print('   hacluster / tooz  = %.2fx   (goal >= 1.35x)'
              % (r['hacluster'] / r['tooz']))
        print('   hacluster / floor = %.2f    (goal >= 0.90)'
              % (r['hacluster'] / r['raw']))
        results.update(rate_raw=round(r['raw'], 1),
                       rate_tooz=round(r['tooz'], 1),
                       rate_hacluster=round(r['hacluster'], 1),
                       ratio_vs_tooz=round(r['hacluster'] / r['tooz'], 3),
                       ratio_vs_floor=round(r['hacluster'] / r['raw'], 3))

        # -- 2. hand-off latency ---------------------------------------------
        def handoff(make_holder, make_waiter, settle):
            holder, waiter = make_holder(), make_waiter()
            assert holder.acquire()
            got = []
            t = threading.Thread(target=lambda: (waiter.acquire(),
                                                 got.append(
                                                     time.perf_counter())))
            t.start()
            time.sleep(settle)
            released = time.perf_counter()
            holder.release()
            t.join(10)
            waiter.release()
            return (got[0] - released) * 1000.0

        ha = [handoff(lambda: c1.get_lock('h'), lambda: c2.get_lock('h'),
                      0.05) for _ in range(N_HANDOFF)]
        tz2 = coordination.get_coordinator(etcd.url, b'bench-tooz-2')
        tz2.start()
        to = [handoff(lambda: tz.get_lock(b'h'), lambda: tz2.get_lock(b'h'),
                      0.3) for _ in range(N_HANDOFF_TOOZ)]
        print('\n2. hand-off to a blocked waiter (ms)')
        print('   hacluster p50 %.1f  p99 %.1f  max %.1f  (%d samples; goal '
              'p50 <= 10, p99 <= 50)' % (statistics.median(ha),
                                         percentile(ha, 99), max(ha),
                                         len(ha)))
        print('   tooz      p50 %.1f  max %.1f  (%d samples)'
              % (statistics.median(to), max(to), len(to)))
        print('   tooz / hacluster p50 = %.0fx'
              % (statistics.median(to) / statistics.median(ha)))
        results.update(handoff_p50_ms=round(statistics.median(ha), 2),
                       handoff_p99_ms=round(percentile(ha, 99), 2),
                       handoff_max_ms=round(max(ha), 2),
                       tooz_handoff_p50_ms=round(statistics.median(to), 1),
                       tooz_handoff_max_ms=round(max(to), 1))

        # -- 3. 8 shared holders x 200 ms ------------------------------------
        HOLD = 0.2

        def holders(shared, n=8):
            coords = [c1, c2]
            locks = [coords[i % 2].get_lock('sh', shared=shared)
                     for i in range(n)]
            barrier = threading.Barrier(n)

            def run(lock):
                barrier.wait()
                with lock:
                    time.sleep(HOLD)
            threads = [threading.Thread(target=run, args=(lk,))
                       for lk in locks]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - started

        one = holders(True, n=1)
        shared = holders(True)
        exclusive = holders(False)
        print('\n3. 8 holders x %d ms hold (wall s)' % (HOLD * 1000))
        print('   one hold %.3f   8 shared %.3f (%.2fx one; goal <= 1.3x)   '
              '8 exclusive %.3f (%.2fx)' % (
                  one, shared, shared / one, exclusive, exclusive / one))
        results.update(one_hold_s=round(one, 3),
                       shared8_s=round(shared, 3),
                       shared8_ratio=round(shared / one, 3),
                       exclusive8_s=round(exclusive, 3),
                       exclusive8_ratio=round(exclusive / one, 3))

        requests_per_cycle = None
        before = c1.client.requests
        for _ in range(20):
            ha_cycle()
        requests_per_cycle = (c1.client.requests - before) / 20.0
        results['etcd_requests_per_cycle'] = requests_per_cycle
        print('\netcd requests per uncontended acquire+release: %.1f'
              % requests_per_cycle)

        c1.stop()
        c2.stop()
        tz.stop()
        tz2.stop()
        print(json.dumps(results))


if __name__ == '__main__':
    main()
