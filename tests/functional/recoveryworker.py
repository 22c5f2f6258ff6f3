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

"""A member process for recovery tests.

    python recoveryworker.py ETCD_URL CLUSTER NODE STORE hold N
        open N claims ('share', 'share-NODE-i', 'create') and print HELD;
        then wait to be killed (SIGTERM: close the claims and stop)
    python recoveryworker.py ETCD_URL CLUSTER NODE STORE op [--type T]
        [--fencing MODE]
        open one claim (T, 'res-NODE', 'create') and print OPEN; then read
        commands from stdin: "finish" prints FINISHED or REFUSED <message>,
        "close" ends the claim's block and prints CLOSED <recovered_elsewhere>
    python recoveryworker.py ETCD_URL CLUSTER NODE STORE survive
        [--types share,volume]
        [--slow S] [--fail-first K]
        register a recovery handler for 'share' and print READY; runs until
        SIGTERM. The handler appends "handled CLAIM_ID RESOURCE ATTEMPT NODE
        TIME" to STORE/handled, sleeps S, raises on a claim's first K
        attempts, and records its effect once per claim id (an O_EXCL file
        STORE/effects/CLAIM_ID: the idempotency key at work).
"""
import argparse
import os
import signal
import sys
import threading
import time

import hacluster

p = argparse.ArgumentParser()
for a in ('url', 'cluster', 'node', 'store', 'mode'):
    p.add_argument(a)
p.add_argument('n', nargs='?', type=int, default=0)
p.add_argument('--slow', type=float, default=0.0)
p.add_argument('--fail-first', type=int, default=0)
p.add_argument('--type', default='share')
p.add_argument('--types', default='share')
p.add_argument('--fencing', default='none')
opts = p.parse_args()

say_lock = threading.Lock()


def say(*words):
    with say_lock:
        sys.stdout.write(' '.join(str(w) for w in words) + '\n')
        sys.stdout.flush()


def append(name, *words):
    fd = os.open(os.path.join(opts.store, name),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (' '.join(str(w) for w in words) + '\n').encode())
    finally:
        os.close(fd)


def handler(claim):
    append('handled', claim.claim_id, claim.resource_id, claim.attempt,
           opts.node, time.time())
    if opts.slow:
        time.sleep(opts.slow)
    if claim.attempt <= opts.fail_first:
        raise RuntimeError('backend busy (attempt %d)' % claim.attempt)
    os.makedirs(os.path.join(opts.store, 'effects'), exist_ok=True)
    try:
        fd = os.open(os.path.join(opts.store, 'effects', claim.claim_id),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, ('%s %s\n' % (claim.resource_id, opts.node)).encode())
        os.close(fd)
    except FileExistsError:
        pass     # already done by an earlier attempt: idempotent


coord = hacluster.get_coordinator(opts.url, opts.cluster, node=opts.node,
                                  lease_ttl=3, renew_deadline=2.0,
                                  renew_interval=0.5, fencing=opts.fencing,
                                  watchdog_device=os.environ.get(
                                      'HACLUSTER_TEST_WATCHDOG',
                                      '/dev/watchdog'))
if opts.mode == 'survive':
    for rtype in opts.types.split(','):
        coord.register_recovery(rtype, handler)
coord.start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
if opts.mode == 'hold':
    claims = [coord.claim('share', 'share-%s-%d' % (opts.node, i), 'create',
                          {'size': i}) for i in range(opts.n)]
    for c in claims:
        c.__enter__()
    say('HELD', coord.member_id)
    done.wait()
    for c in claims:
        c.__exit__(None, None, None)
elif opts.mode == 'op':
    claim = coord.claim(opts.type, 'res-%s' % opts.node, 'create')
    claim.__enter__()
    say('OPEN', coord.member_id, claim.claim_id)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == 'finish':
            try:
                claim.finish()
                say('FINISHED')
            except hacluster.exceptions.ClaimRecovered as exc:
                say('REFUSED', exc)
        elif cmd == 'close':
            claim.__exit__(None, None, None)
            say('CLOSED', claim.recovered_elsewhere)
            break
    done.wait()
else:
    say('READY', coord.member_id)
    done.wait()
coord.stop()
say('EXITED')
os._exit(0)
