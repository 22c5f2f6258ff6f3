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

"""Fencing benchmark: how fast a node thought dead stops, and how fast its
work is recovered, each against its bound, in one run.

A member process holding one claim (``fencing = exit``, lease_ttl 3 s,
renew_deadline 2 s, renew_interval 0.5 s) and a survivor with a recovery
handler, on one private etcd:

1. **renew deadline -> self-fenced**: the member is cut off from etcd (a TCP
   proxy stops passing bytes; it keeps running). Its renew deadline passes
   at most ``renew_deadline`` after the cut (its last renewal was before
   it); it must exit before its lease can expire for anyone else, i.e.
   before ``cut - renew_interval + lease_ttl`` at the earliest. Figures:
   cut -> exit, and the margin left before that earliest expiry.
2. **SIGKILL -> recovered**: kill -9 of the member; time until the
   survivor's handler ran. Bound: lease_ttl + 2 s.
3. **freeze -> recovered**: SIGSTOP of the member (it is resumed after);
   same bound; then the resumed member must fence itself (exit status 75)
   without finishing its claim.

    benchmarks/run fencing [ROUNDS]        (default 5 of each)

Last line: one JSON object with every figure.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import hacluster
from hacluster import fencing as _fencing
from hacluster.testing import proxy as _proxy
from hacluster.testing import servers

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
TTL, DEADLINE, INTERVAL = 3, 2.0, 0.5
MEMBER = '''
import sys, time, hacluster
url, cluster = sys.argv[1:3]
c = hacluster.get_coordinator(url, cluster, node='member', lease_ttl=%d,
    renew_deadline=%r, renew_interval=%r, fencing='exit').start()
claim = c.claim('share', 'share-1', 'create')
claim.__enter__()
print('HELD', flush=True)
sys.stdin.readline()
try:
    claim.finish()
    print('FINISHED', flush=True)
except hacluster.exceptions.ClaimRecovered:
    print('REFUSED', flush=True)
sys.stdin.readline()
''' % (TTL, DEADLINE, INTERVAL)


def _member(url, cluster):
    proc = subprocess.Popen(
        [sys.executable, '-W', 'ignore', '-c', MEMBER, url, cluster],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith('HELD'), (line, proc.stderr.read())
    return proc


class Survivor:
    def __init__(self, url, cluster):
        self.done = []
        self._event = threading.Event()
        self.coord = hacluster.get_coordinator(
            url, cluster, node='survivor', lease_ttl=TTL,
            renew_deadline=DEADLINE, renew_interval=INTERVAL)
        self.coord.register_recovery('share', self._handle)
        self.coord.start()
        deadline = time.monotonic() + 10
        while not self.coord.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)

    def _handle(self, claim):
        self.done.append(time.monotonic())
        self._event.set()

    def wait(self, timeout):
        if not self._event.wait(timeout):
            raise AssertionError('no recovery within %.0f s' % timeout)
        return self.done[0]

    def stop(self):
        self.coord.stop()


def cut_to_fenced(etcd):
    cluster = 'bench-fence-' + uuid.uuid4().hex[:6]
    with _proxy.TcpProxy(etcd.client_port) as link:
        proc = _member('etcd3+http://%s' % link.address, cluster)
        time.sleep(1.0)              # a few renewals through the proxy
        link.cut()
        cut = time.monotonic()
        status = proc.wait(TTL + 10)
        exited = time.monotonic()
        err = proc.stderr.read()
    assert status == _fencing.EXIT_STATUS and 'FENCED' in err, (status, err)
    earliest_expiry = cut - INTERVAL + TTL
    return exited - cut, earliest_expiry - exited


def kill_to_recovered(etcd, sig):
    cluster = 'bench-fence-' + uuid.uuid4().hex[:6]
    survivor = Survivor(etcd.url, cluster)
    proc = _member(etcd.url, cluster)
    time.sleep(0.5)
    try:
        os.kill(proc.pid, sig)
        t0 = time.monotonic()
        recovered = survivor.wait(TTL + 20) - t0
        fenced = None
        if sig == signal.SIGSTOP:
            os.kill(proc.pid, signal.SIGCONT)
            status = proc.wait(10)
            out = proc.stdout.read()
            # fenced on resuming, before it could finish its claim
            assert status == _fencing.EXIT_STATUS, status
            assert 'FINISHED' not in out, out
            fenced = True
        return recovered, fenced
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        survivor.stop()


def _stats(values):
    return dict(min=round(min(values), 3),
                median=round(statistics.median(values), 3),
                max=round(max(values), 3), n=len(values))


def main():
    results = {'lease_ttl': TTL, 'renew_deadline': DEADLINE,
               'renew_interval': INTERVAL}
    bound = TTL + 2
    held = True
    with servers.EtcdServer(name='bench-fencing') as etcd:
        print('private etcd %s; lease_ttl %s s, renew_deadline %s s, '
              'renew_interval %s s, fencing = exit' % (
                  etcd.endpoint, TTL, DEADLINE, INTERVAL))
        runs = [cut_to_fenced(etcd) for _ in range(ROUNDS)]
        exits = [r[0] for r in runs]
        margins = [r[1] for r in runs]
        ok = min(margins) > 0
        held &= ok
        print('  cut off from etcd -> exited: min %.2f median %.2f max %.2f '
              's (renew deadline at <= %.1f s); margin before the lease can '
              'expire: min %.2f s (bound > 0)  %s' % (
                  min(exits), statistics.median(exits), max(exits), DEADLINE,
                  min(margins), 'held' if ok else 'NOT HELD'))
        results['cut_to_fenced_s'] = _stats(exits)
        results['deadline_to_fenced_s'] = _stats([e - DEADLINE
                                                 for e in exits])
        results['fence_margin_s'] = dict(_stats(margins), bound='> 0',
                                         held=ok)
        for name, sig in (('sigkill', signal.SIGKILL),
                          ('freeze', signal.SIGSTOP)):
            runs = [kill_to_recovered(etcd, sig) for _ in range(ROUNDS)]
            times = [r[0] for r in runs]
            ok = max(times) <= bound
            held &= ok
            print('  %-7s -> recovered: min %.2f median %.2f max %.2f s; '
                  'bound <= %.1f s (ratio %.2f)%s  %s' % (
                      name, min(times), statistics.median(times), max(times),
                      bound, statistics.median(times) / bound,
                      '; every resumed member fenced itself' if name ==
                      'freeze' else '', 'held' if ok else 'NOT HELD'))
            results['%s_to_recovered_s' % name] = dict(
                _stats(times), bound=bound, held=ok,
                ratio=round(statistics.median(times) / bound, 3))
        results['freeze_resumed_fenced'] = ROUNDS
    results['held'] = held
    print(json.dumps(results))


if __name__ == '__main__':
    main()
