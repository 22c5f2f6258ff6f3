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

"""A leader candidate process for benchmarks: campaigns until SIGTERM
(graceful stop) or SIGKILL. Prints "QUEUED" once campaigning.

    python _candidate.py URL CLUSTER NODE TTL DEADLINE INTERVAL
"""
import signal
import sys
import threading

import hacluster

url, cluster, node = sys.argv[1:4]
ttl, deadline, interval = int(sys.argv[4]), float(sys.argv[5]), \
    float(sys.argv[6])
coord = hacluster.get_coordinator(url, cluster, node=node, lease_ttl=ttl,
                                  renew_deadline=deadline,
                                  renew_interval=interval)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
coord.start()
coord.run_for_leader(lambda term: None, lambda term: None)
print('QUEUED', flush=True)
done.wait()
coord.stop()
