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

"""A member process for periodic-task tests.

    python periodicworker.py ETCD_URL TRANSPORT_URL CLUSTER NODE RECORD
        [--backend threading|eventlet] [--items N] [--item-sleep S]
        [--poll-spacing S] [--stats-spacing S] [--local-spacing S]
        [--item-timeout S] [--config-spacing NAME:S,...]
        [--cycle-formats LO:HI]

Tasks (all recorded as lines appended to RECORD, one write each):
  stats  leader   "stats NODE TIME"
  local  every    "local NODE TIME"
  poll   fanout   lister "list NODE CYCLE TIME"; handler
                  "item NODE CYCLE ITEM ATTEMPT TIME" after sleeping S
Prints READY once running; stdin lines "stop-task NAME", "start-task NAME",
"run-now NAME", "pause NAME", "resume NAME", "exit" (threading backend only);
SIGTERM stops. --cycle-formats plays a version that reads only those
fan-out cycle formats (1:1: a version from before the ledger moved out of
the members' watch).
"""

import argparse
import faulthandler
import signal as _signal
import sys

# A test that finds this process stuck sends SIGUSR1 for the stacks.
faulthandler.register(_signal.SIGUSR1, all_threads=True)

p = argparse.ArgumentParser()
for a in ('etcd_url', 'transport_url', 'cluster', 'node', 'record'):
    p.add_argument(a)
p.add_argument('--backend', default='threading')
p.add_argument('--items', type=int, default=30)
p.add_argument('--item-sleep', type=float, default=0.01)
p.add_argument('--poll-spacing', type=float, default=2.0)
p.add_argument('--stats-spacing', type=float, default=1.0)
p.add_argument('--local-spacing', type=float, default=1.0)
p.add_argument('--item-timeout', type=float, default=5.0)
p.add_argument('--config-spacing', default='')
p.add_argument('--cycle-formats', default='')
p.add_argument('--log', action='store_true',
               help="hacluster's INFO log on stderr (a test prints it when "
                    "it fails)")
opts = p.parse_args()

if opts.backend == 'eventlet':
    import eventlet
    eventlet.monkey_patch()
from oslo_service import backend  # noqa: E402

backend.init_backend(backend.BackendType.THREADING
                     if opts.backend == 'threading'
                     else backend.BackendType.EVENTLET)

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from oslo_config import cfg  # noqa: E402

import hacluster  # noqa: E402
from hacluster import opts as ha_opts  # noqa: E402
from hacluster.periodic import EVERY  # noqa: E402
from hacluster.periodic import FANOUT  # noqa: E402
from hacluster.periodic import LEADER  # noqa: E402
from hacluster.periodic import periodic_task  # noqa: E402
from hacluster.periodic import PeriodicRunner  # noqa: E402


def record(*words):
    line = (' '.join(str(w) for w in words) + '\n').encode()
    fd = os.open(opts.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


_say_lock = threading.Lock()


def say(*words):
    # One write per line, under a lock: threads must not interleave lines.
    with _say_lock:
        sys.stdout.write(' '.join(str(w) for w in words) + '\n')
        sys.stdout.flush()


class Tasks:
    @periodic_task(spacing=opts.stats_spacing, mode=LEADER,
                   initial_delay=0.3)
    def stats(self, ctx):
        record('stats', opts.node, time.time())

    @periodic_task(spacing=opts.local_spacing, mode=EVERY, initial_delay=0.3)
    def local(self, ctx):
        record('local', opts.node, time.time())

    @periodic_task(spacing=opts.poll_spacing, mode=FANOUT, handler='_item',
                   initial_delay=0.5, item_timeout=opts.item_timeout)
    def poll(self, ctx):
        record('list', opts.node, ctx.cycle_id, time.time())
        return {'item-%03d' % i: {'n': i} for i in range(opts.items)}

    def _item(self, ctx, item_id, payload):
        assert payload == {'n': int(item_id.split('-')[1])}
        time.sleep(opts.item_sleep)
        record('item', opts.node, ctx.cycle_id, item_id, ctx.attempt,
               time.time())


if opts.log:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(asctime)s %(name)s %(message)s')
    for noisy in ('oslo_messaging', 'kombu', 'amqp', 'stevedore'):
        logging.getLogger(noisy).setLevel(logging.WARNING)

if opts.cycle_formats:
    # (imported only here: the worker also runs on a hacluster from
    # before the protocol contract, tests/functional/test_fanout_ledger.py)
    from hacluster import protocol as _protocol
    _protocol.FORMATS['cycle'] = tuple(
        int(f) for f in opts.cycle_formats.split(':'))

conf = cfg.ConfigOpts()
ha_opts.register_opts(conf)
conf([], project='hacluster-test', default_config_files=[])
if opts.config_spacing:
    conf.set_override('task_spacing', dict(
        kv.split(':') for kv in opts.config_spacing.split(',')),
        group='hacluster')
coord = hacluster.get_coordinator(opts.etcd_url, opts.cluster,
                                  node=opts.node, lease_ttl=3,
                                  renew_deadline=2.0, renew_interval=0.5)
coord.start()
runner = PeriodicRunner(coord, conf=conf, transport_url=opts.transport_url)
runner.add_all(Tasks())
runner.start()
say('READY', coord.member_id, runner.spacing_of('poll'))

done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())


def commands():
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == 'exit':
            done.set()
            return
        getattr(runner, {'stop-task': 'stop_task', 'start-task': 'start_task',
                         'run-now': 'run_now', 'pause': 'pause_task',
                         'resume': 'resume_task'}[words[0]])(words[1])
        say('DONE', *words)


if opts.backend != 'eventlet':
    # Under eventlet a read of a stdin pipe blocks the whole process (stdin
    # is not green): eventlet members are driven by signals only.
    threading.Thread(target=commands, daemon=True).start()
while not done.wait(0.1):
    pass
runner.stop()
coord.stop()
say('EXITED')
os._exit(0)
