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
