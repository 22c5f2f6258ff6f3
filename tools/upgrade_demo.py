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

"""``tools/demo --upgrade``: the rolling upgrade of a three-node manila
cluster, with ``hacluster status`` before, during and after.

Three real manila-share 23.0.1 processes on private PostgreSQL, RabbitMQ and
etcd start on N (an older commit of this repository) and are upgraded one
by one to N+1 (this tree) and then to the canary N+2, with a node SIGKILLed
mid-create under an N leader and under an N+1 leader; the steps and their
checks are those of the rolling-upgrade test
(:mod:`hacluster.testing.upgrade`). Prints ``DEMO OK`` (exit 0) or
``DEMO FAILED`` (exit 1).
"""

import sys
import tempfile
import time
import traceback

from hacluster.testing import manila_rig
from hacluster.testing import servers
from hacluster.testing import upgrade


def main():
    servers.stop_on_sigterm()
    began = time.monotonic()
    print('== private PostgreSQL, RabbitMQ and etcd on free loopback ports',
          flush=True)
    pg = rabbit = etcd = cluster = None
    ok = False
    try:
        pg = servers.PostgresServer().start()
        etcd = servers.EtcdServer(name='upgrade-etcd')
        etcd.start()
        rabbit = servers.RabbitMQServer()
        rabbit.start()
        manila_rig.make_template(pg)
        old = upgrade.extract_old_tree(tempfile.mkdtemp(prefix='hacluster-N-'))
        print('   N = commit %s (in %s)' % (upgrade.OLD_COMMIT, old))
        cluster = manila_rig.ManilaCluster(
            pg, rabbit.transport_url, backend_url=etcd.url,
            nodes=upgrade.NODES, periodic_interval=2)

        def report(step, status):
            print('\n== %.0f s: %s' % (time.monotonic() - began, step),
                  flush=True)
            if status is not None:
                rc, out, _ = cluster.hacluster('status')
                print(out.rstrip(), flush=True)
        upgrade.run(cluster, old, report)
        ok = True
    except Exception:
        traceback.print_exc()
    finally:
        if cluster is not None:
            if not ok:
                for name in cluster.nodes:
                    print('\n---- %s log tail ----\n%s' % (
                        name, cluster.log_tail(name, 40)))
            cluster.close()
        for server in (rabbit, etcd, pg):
            if server is not None:
                server.close()
    print('\n%.0f s' % (time.monotonic() - began))
    print('DEMO OK' if ok else 'DEMO FAILED')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
