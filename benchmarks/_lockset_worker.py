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

"""A lock-set worker for the fault suite: increments a register in a
fencing-token store (see _faults_workload.TokenStore) under one cluster
lock, for ever, with ``fencing = none`` so that nothing but the store's
token check stands between a resumed, stale holder and the register.

    python _lockset_worker.py ETCD_URL CLUSTER NODE STORE_PORT HOLD

Prints "READY" once started.
"""

import socket
import sys
import time

import hacluster

url, cluster, node, port, hold = sys.argv[1:6]
port, hold = int(port), float(hold)

coord = hacluster.get_coordinator(url, cluster, node=node, lease_ttl=3,
                                  renew_deadline=2.0, renew_interval=0.5,
                                  fencing='none').start()
store = socket.create_connection(('127.0.0.1', port))
replies = store.makefile('r')


def ask(*words):
    store.sendall((' '.join(str(w) for w in words) + '\n').encode())
    return replies.readline().strip()


print('READY', flush=True)
while True:
    try:
        with coord.get_lock('register') as lock:
            token = lock.fencing_token
            value = int(ask('READ', node, token))
            time.sleep(hold)        # the work: a freeze here is the hazard
            ask('WRITE', node, token, value + 1)
    except hacluster.HAClusterError:
        time.sleep(0.05)            # lost the lock or etcd: try again
