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

"""Run the core lock checks inside one process, on native threads or
monkey-patched by eventlet, and print one JSON line of results.

    python lockcheck.py URL CLUSTER [--eventlet]

Used by test_concurrency_models.py: the same code must behave the same under
manila 23's native threads and under eventlet (older services).
"""

import sys

EVENTLET = '--eventlet' in sys.argv
if EVENTLET:
    import eventlet
    eventlet.monkey_patch()

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import hacluster  # noqa: E402

url, cluster = sys.argv[1], sys.argv[2]
results = {'eventlet': EVENTLET}
if EVENTLET:
    import eventlet.patcher
    results['threading_patched'] = eventlet.patcher.is_monkey_patched(
        'thread')

kw = dict(lease_ttl=3, renew_deadline=2.0, renew_interval=0.5)
c1 = hacluster.get_coordinator(url, cluster, node='a', **kw).start()
c2 = hacluster.get_coordinator(url, cluster, node='b', **kw).start()

# 1. Mutual exclusion among 6 threads (green or native) of two members.
inside, worst, total = [0], [0], [0]
guard = threading.Lock()


def work(coord):
    for _ in range(10):
        with coord.get_lock('mx'):
            with guard:
                inside[0] += 1
                worst[0] = max(worst[0], inside[0])
            time.sleep(0.001)
            with guard:
                inside[0] -= 1
                total[0] += 1


threads = [threading.Thread(target=work, args=(c,))
           for c in (c1, c2) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
results['max_inside'] = worst[0]
results['total'] = total[0]

# 2. Hand-off to a blocked waiter (woken by the watch).
holder = c1.get_lock('handoff')
holder.acquire()
got = []
waiter = c2.get_lock('handoff')
t = threading.Thread(target=lambda: got.append((waiter.acquire(5),
                                                time.monotonic())))
t.start()
time.sleep(0.3)
released = time.monotonic()
holder.release()
t.join(10)
results['handoff_ok'] = bool(got and got[0][0])
results['handoff_ms'] = round((got[0][1] - released) * 1000, 1) if got \
    else None
waiter.release()

# 3. Shared holders overlap.
readers = [c1.get_lock('rw', shared=True) for _ in range(2)] + \
    [c2.get_lock('rw', shared=True) for _ in range(2)]
results['shared_all'] = all(r.acquire(blocking=2) for r in readers)
results['writer_blocked'] = c2.get_lock('rw').acquire(blocking=False) is False
for r in readers:
    r.release()

# 4. A lost session is noticed by the holder, its guarded write refused,
#    and the coordinator rejoins with a new session.
lost = threading.Event()
lock = c1.get_lock('loss', on_lost=lambda lk, why: lost.set())
lock.acquire()
c1.session.expire_now('test')
results['lost_noticed'] = lost.wait(3)
try:
    lock.guarded_put('k', 'v')
    results['guarded'] = 'ok'
except hacluster.StaleFencingToken:
    results['guarded'] = 'refused'
again = c1.get_lock('loss')
results['rejoined'] = again.acquire(blocking=5)
results['new_token_higher'] = (again.fencing_token or 0) > \
    (lock.fencing_token or 0) if again.held else False
again.release()

c1.stop()
c2.stop()
results['oslo_service_imported'] = any(m.startswith('oslo_service')
                                       for m in sys.modules)
print(json.dumps(results), flush=True)
