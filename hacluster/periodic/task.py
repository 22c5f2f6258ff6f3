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

"""Declaring periodic tasks.

    from hacluster.periodic import periodic_task, LEADER, EVERY, FANOUT

    class Manager:
        @periodic_task(spacing=60, mode=LEADER)
        def report_stats(self, ctx): ...             # the leader only

        @periodic_task(spacing=60, mode=EVERY)
        def clean_local_cache(self, ctx): ...        # every node

        @periodic_task(spacing=60, mode=FANOUT, handler='_check_share')
        def share_status(self, ctx):                  # the leader lists ...
            return {share.id: {'size': share.size} for share in ...}

        def _check_share(self, ctx, item_id, payload): ...  # ... members run

The decorator only tags the function: nothing is scheduled and no spacing is
fixed at import. :class:`hacluster.periodic.runner.PeriodicRunner` collects the
tags and takes each task's spacing from its configuration when it starts.

Contexts passed to the functions:

* :class:`CycleContext` (task functions and fan-out listers): ``task``,
  ``node``, ``member_id``, ``term`` (the leadership term for leader and fan-out
  tasks, else None), ``cycle_id`` (fan-out) and ``coordinator``.
* :class:`ItemContext` (fan-out handlers): ``task``, ``cycle_id``,
  ``item_id``, ``attempt`` (1 the first time this item is sent in this cycle,
  more when re-dispatched), ``member_id``. Handlers must be idempotent: an item
  re-dispatched after a timeout may run twice.
"""

from hacluster import exceptions
from hacluster import keys as _keys

LEADER = 'leader'
EVERY = 'every'
FANOUT = 'fanout'
MODES = (LEADER, EVERY, FANOUT)

_ATTR = '_hacluster_periodic'


class TaskSpec:
    """What the decorator records. Validated when built."""

    def __init__(self, name, mode, spacing, initial_delay, jitter, handler,
                 item_timeout, max_attempts, max_workers, batch_size):
        if mode not in MODES:
            raise exceptions.ConfigurationError(
                'periodic task %r: mode must be one of %s, got %r'
                % (name, ', '.join(MODES), mode))
        for what, value, minimum in (('spacing', spacing, 0),
                                     ('item_timeout', item_timeout, 0)):
            if isinstance(value, bool) or \
                    not isinstance(value, (int, float)) or value <= minimum:
                raise exceptions.ConfigurationError(
                    'periodic task %r: %s must be a positive number of '
                    'seconds, got %r' % (name, what, value))
        if initial_delay is not None and (
                not isinstance(initial_delay, (int, float)) or
                initial_delay < 0):
            raise exceptions.ConfigurationError(
                'periodic task %r: initial_delay must be >= 0 seconds, got '
                '%r' % (name, initial_delay))
        if not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise exceptions.ConfigurationError(
                'periodic task %r: jitter is a fraction of the spacing in '
                '[0, 1), got %r' % (name, jitter))
        for what, value in (('max_attempts', max_attempts),
                            ('max_workers', max_workers),
                            ('batch_size', batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or \
                    value < 1:
                raise exceptions.ConfigurationError(
                    'periodic task %r: %s must be an integer >= 1, got %r'
                    % (name, what, value))
        if mode == FANOUT and handler is None:
            raise exceptions.ConfigurationError(
                'periodic task %r: a fanout task needs a handler (the '
                'function, or the name of a method, that processes one '
                'item)' % name)
        if mode != FANOUT and handler is not None:
            raise exceptions.ConfigurationError(
                'periodic task %r: only fanout tasks take a handler' % name)
        self.name = name
        self.mode = mode
        self.spacing = spacing
        self.initial_delay = initial_delay
        self.jitter = jitter
        self.handler = handler
        self.item_timeout = item_timeout
        self.max_attempts = max_attempts
        self.max_workers = max_workers
        self.batch_size = batch_size


def periodic_task(spacing=60, mode=EVERY, name=None, initial_delay=None,
                  jitter=0.0, handler=None, item_timeout=60.0,
                  max_attempts=3, max_workers=1, batch_size=50):
    """Tag a function (or method) as a periodic task.

    :param spacing: default seconds between runs; the runner's configuration
        overrides it (``[hacluster] task_spacing``, or ``spacing=`` given to
        the runner).
    :param mode: ``'leader'``, ``'every'`` or ``'fanout'``.
    :param name: the task's name (default: the function's name); unique per
        runner, printable, as lock names.
    :param initial_delay: seconds before the first run (default: spacing).
    :param jitter: a random fraction of the spacing added to the initial
        delay, so nodes started together do not tick together.
    :param handler: fanout only: the function ``(ctx, item_id, payload)`` run
        on the member owning an item, or the name of a method on the same
        object.
    :param item_timeout: fanout: seconds an item may take from being sent
        to being done before it is sent again (to another member if its owner
        left).
    :param max_attempts: fanout: times an item is sent in one cycle before it
        is given up (reported as failed).
    :param max_workers: fanout: items a member processes at once.
    :param batch_size: fanout: items per RPC message.
    :raises ConfigurationError: at decoration time, naming the bad argument.
    """
    def decorator(fn):
        task_name = name or fn.__name__
        _keys.validate_lock_name(task_name)
        spec = TaskSpec(task_name, mode, spacing, initial_delay, jitter,
                        handler, item_timeout, max_attempts, max_workers,
                        batch_size)
        setattr(fn, _ATTR, spec)
        return fn
    return decorator


def spec_of(fn):
    """The TaskSpec of a tagged function or bound method, or None."""
    return getattr(getattr(fn, '__func__', fn), _ATTR, None)


class CycleContext:
    """Passed to task functions and fan-out listers."""

    def __init__(self, task, coordinator, term=None, cycle_id=None):
        self.task = task
        self.coordinator = coordinator
        self.node = coordinator.node
        self.member_id = coordinator.member_id
        self.term = term
        self.cycle_id = cycle_id

    def __repr__(self):
        return '<CycleContext %s term=%s cycle=%s>' % (
            self.task, self.term, self.cycle_id)


class ItemContext:
    """Passed to fan-out item handlers."""

    def __init__(self, task, cycle_id, item_id, attempt, member_id):
        self.task = task
        self.cycle_id = cycle_id
        self.item_id = item_id
        self.attempt = attempt
        self.member_id = member_id

    def __repr__(self):
        return '<ItemContext %s cycle=%s item=%s attempt=%d>' % (
            self.task, self.cycle_id, self.item_id, self.attempt)
