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

"""The tasks' timers: one oslo.service ThreadGroup, one timer per task.

oslo.service is imported by :func:`select_backend` and
:meth:`Timers.prepare`, never at import time: the process's own choice of
backend (threading for manila 23, eventlet elsewhere) is used, not pinned by
us; if the process has chosen none, the one matching it is chosen then
(eventlet if monkey-patched, else threading). Under the threading backend a
running task cannot be killed: tasks must return (stopping waits for them).
"""

import logging
import random
import threading

LOG = logging.getLogger(__name__)


def select_backend():
    """If the process has not chosen an oslo.service backend yet, choose
    the one that matches it: eventlet if threads are monkey-patched, else
    threading. (oslo.service's own default, eventlet, would leave timers in
    an unpatched process never scheduled.) A process that chose already --
    manila-share chooses threading -- keeps its choice. Never raises."""
    from oslo_service import backend

    patched = False
    try:
        import sys
        if 'eventlet' in sys.modules:
            import eventlet.patcher
            patched = eventlet.patcher.is_monkey_patched('thread')
    except Exception:
        patched = False
    chosen = backend.get_backend_type()
    if chosen is not None:
        if chosen == backend.BackendType.EVENTLET and not patched:
            # e.g. a module imported oslo.service's eventlet-only parts
            # before anyone chose: green timers in an unpatched process run
            # only while the main thread yields to eventlet's hub
            LOG.warning('hacluster: oslo.service runs its eventlet backend '
                        'in a process that is not monkey-patched: periodic '
                        'tasks will not run on time. Choose the threading '
                        'backend (oslo_service.backend.init_backend) before '
                        'importing oslo.service users.')
        return
    try:
        backend.init_backend(backend.BackendType.EVENTLET if patched
                             else backend.BackendType.THREADING)
    except Exception:       # chosen meanwhile by someone else: keep it
        pass


class Timers:
    """The timers of a runner's tasks and the threads it runs beside them.

    :param tick: ``tick(state)``, called at every timer tick of a task (in
        a ThreadGroup thread; it must not raise).

    Thread-safe: its own lock guards the group and the timers. Whether a
    task should have a timer (stopped, paused) is the caller's to decide,
    under its own lock, before :meth:`start`.
    """

    def __init__(self, tick):
        self._tick = tick
        self._lock = threading.Lock()
        self._threadgroup = None
        self._tg = None
        self._timers = {}

    def prepare(self):
        """Choose the oslo.service backend if the process has not, and
        import oslo.service's ThreadGroup (lazily: see the module doc).
        Call it before :meth:`open`, holding no lock: an import blocks."""
        select_backend()
        from oslo_service import threadgroup

        self._threadgroup = threadgroup

    def open(self):
        """Make the ThreadGroup (after :meth:`prepare`)."""
        with self._lock:
            self._tg = self._threadgroup.ThreadGroup()

    @property
    def running(self):
        """True between :meth:`open` and :meth:`close`."""
        return self._tg is not None

    def start(self, state):
        """Start the timer of a task (a :class:`TaskState`) unless it has
        one, or is stopped or paused. The first tick comes after the task's
        ``initial_delay`` (default: its spacing) plus its jitter."""
        with self._lock:
            if state.name in self._timers or state.stopped or state.paused:
                return
            delay = state.spec.initial_delay
            if delay is None:
                delay = state.spacing
            if state.spec.jitter:
                delay += random.uniform(0, state.spec.jitter * state.spacing)
            self._timers[state.name] = self._tg.add_timer_args(
                state.spacing, self._tick, args=[state], initial_delay=delay,
                stop_on_exception=False)

    def take(self, name):
        """Detach and stop a task's timer (no new tick starts); returns it
        for :meth:`finish`, or None. Does not wait."""
        with self._lock:
            timer = self._timers.pop(name, None)
        if timer is not None:
            timer.stop()
        return timer

    def finish(self, timer, name, wait=True):
        """Wait for a stopped timer's running tick (unless not ``wait``)
        and drop it from the group. Call it without holding a lock the
        tick or the watch thread may need: a cycle may take a while. The
        group must still be open."""
        if timer is None:
            return
        if wait:
            try:
                timer.wait()
            except Exception:
                LOG.exception('hacluster: waiting for task %s', name)
        self._tg.timer_done(timer)

    def spawn(self, fn, *args):
        """Run ``fn(*args)`` in a thread of the group; returns False (and
        runs nothing) if the group is not open."""
        with self._lock:
            tg = self._tg
        if tg is None:
            return False
        tg.add_thread(fn, *args)
        return True

    def close(self):
        """Stop the group, waiting for its threads (graceful). Blocks for
        as long as they take."""
        with self._lock:
            tg, self._tg = self._tg, None
            self._timers = {}
        if tg is not None:
            tg.stop(graceful=True)
