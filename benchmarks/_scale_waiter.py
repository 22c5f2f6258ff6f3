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

"""Lock waiters for the scale benchmark: one process, one coordinator
(default timings), THREADS waiter threads, each with its own Lock object
on the one lock NAME (threads of one process queue exactly as processes
do: one queue entry per acquisition).

    python _scale_waiter.py ETCD_URL CLUSTER NODE NAME THREADS

Prints "READY" once started. stdin: "round" makes every thread acquire
NAME once (blocking), release it at once, and print
"ACQ <fencing token> <acquired at> <released at>" (time.monotonic(), the
same clock in every process of the machine); "exit" stops.
"""

import sys
import threading
import time

import hacluster

url, cluster, node, name, threads = sys.argv[1:6]
coord = hacluster.get_coordinator(url, cluster, node=node).start()
out = threading.Lock()


def once():
    lock = coord.get_lock(name)
    lock.acquire(True)
    acquired = time.monotonic()
    token = lock.fencing_token
    released = time.monotonic()
    lock.release()
    with out:
        print('ACQ %d %.6f %.6f' % (token, acquired, released), flush=True)


print('READY', flush=True)
for line in sys.stdin:
    if line.strip() == 'round':
        for _ in range(int(threads)):
            threading.Thread(target=once, daemon=True).start()
    elif line.strip() == 'exit':
        break
coord.stop()
