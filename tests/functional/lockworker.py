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

"""A separate process that takes part in lock tests.

    python lockworker.py URL CLUSTER NODE COMMAND ARGS... [--ttl T
        --deadline D --interval I] [--eventlet]

Commands:
  count LOCK PATH N     read-modify-write a counter file N times under LOCK,
                        appending each fencing token to PATH.tokens
  queue LOCK PATH LABEL acquire LOCK (blocking), append LABEL to PATH,
                        hold 50 ms, release
  elect EVENTS [CONFIG] campaign for leader; append "start|stop TERM NODE
                        MONOTONIC" lines to EVENTS; print "STARTED <term>",
                        "STOPPED <term>", "NEWLEADER <node>", and while
                        leading write guarded every 50 ms, printing "WRITE
                        <ok|ExceptionName>" whenever the result changes;
                        CONFIG is a JSON dict for the member record's
                        fingerprint; SIGTERM or "exit" on stdin: stop
  hold LOCK [shared]    acquire LOCK, print "HELD <token>", then report every
                        change: "LOST <reason>", "OWNER <bool>",
                        "GUARDED <ok|ExceptionName>"; runs until killed or
                        until a line "exit" arrives on stdin
Lines go to stdout, flushed at once.
"""

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument('url')
parser.add_argument('cluster')
parser.add_argument('node')
parser.add_argument('command')
parser.add_argument('args', nargs='*')
parser.add_argument('--ttl', type=int, default=3)
parser.add_argument('--deadline', type=float, default=2.0)
parser.add_argument('--interval', type=float, default=0.5)
parser.add_argument('--eventlet', action='store_true')
opts = parser.parse_args()

if opts.eventlet:
    import eventlet
    eventlet.monkey_patch()

import threading  # noqa: E402
import time  # noqa: E402

import hacluster  # noqa: E402


_say_lock = threading.Lock()


def say(*words):
    # One write per line, under a lock: threads must not interleave lines.
    with _say_lock:
        sys.stdout.write(' '.join(str(w) for w in words) + '\n')
        sys.stdout.flush()


config = None
if opts.command == 'elect' and len(opts.args) > 1:
    import json
    config = json.loads(opts.args[1])
try:
    coord = hacluster.get_coordinator(opts.url, opts.cluster, node=opts.node,
                                      lease_ttl=opts.ttl,
                                      renew_deadline=opts.deadline,
                                      renew_interval=opts.interval,
                                      config=config)
    coord.start()
except hacluster.HAClusterError as exc:
    say('START-FAILED', type(exc).__name__, exc)
    sys.exit(3)
say('MEMBER', coord.member_id)

if opts.command == 'count':
    name, path, n = opts.args[0], opts.args[1], int(opts.args[2])
    for _ in range(n):
        with coord.get_lock(name) as lock:
            with open(path) as f:
                value = int(f.read())
            time.sleep(0.002)   # widen the race window
            with open(path, 'w') as f:
                f.write(str(value + 1))
            with open(path + '.tokens', 'a') as f:
                f.write('%d\n' % lock.fencing_token)
    coord.stop()

elif opts.command == 'queue':
    name, path, label = opts.args
    with coord.get_lock(name):
        with open(path, 'a') as f:
            f.write(label + '\n')
        time.sleep(0.05)
    coord.stop()

elif opts.command == 'hold':
    name = opts.args[0]
    shared = len(opts.args) > 1 and opts.args[1] == 'shared'
    lost = threading.Event()
    reasons = []
    lock = coord.get_lock(name, shared=shared,
                          on_lost=lambda lk, why: (reasons.append(why),
                                                   lost.set()))
    lock.acquire()
    say('HELD', lock.fencing_token)

    def stdin_watch():
        for line in sys.stdin:
            if line.strip() == 'exit':
                coord.stop()
                say('EXITED')
                import os
                os._exit(0)
    threading.Thread(target=stdin_watch, daemon=True).start()
    # Poll our own local view only: this is the code of a holder that
    # does its work and checks the lock between steps.
    while not lost.wait(0.05):
        pass
    say('LOST', reasons[0])
    say('OWNER', lock.is_still_owner())
    try:
        lock.guarded_put('fenced', 'from-%s' % opts.node)
        say('GUARDED', 'ok')
    except hacluster.HAClusterError as exc:
        say('GUARDED', type(exc).__name__)
    while True:
        time.sleep(1)
elif opts.command == 'elect':
    import os
    import signal
    events = opts.args[0]
    current = {'term': None}

    def log(kind, term):
        with open(events, 'a') as f:
            f.write('%s %d %s %.6f\n' % (kind, term, opts.node,
                                         time.monotonic()))

    def started(term):
        log('start', term)
        current['term'] = term
        say('STARTED', term)

    def stopped(term):
        log('stop', term)
        say('STOPPED', term)

    coord.run_for_leader(started, stopped, on_new_leader=lambda rec: say(
        'NEWLEADER', rec['node'] if rec else None))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())

    def stdin_watch():
        for line in sys.stdin:
            if line.strip() == 'exit':
                done.set()
    threading.Thread(target=stdin_watch, daemon=True).start()
    last = None
    while not done.wait(0.05):
        term = current['term']
        if term is None:
            continue
        try:
            coord.guarded_put_as_leader(term, 'leader-write', opts.node)
            result = 'ok'
        except hacluster.HAClusterError as exc:
            result = type(exc).__name__
        if result != last:
            say('WRITE', result, term)
            last = result
    coord.stop()
    say('EXITED')
    os._exit(0)
else:
    sys.exit('unknown command %s' % opts.command)
