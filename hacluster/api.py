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

"""The contracts hacluster's parts are written against.

:class:`CoordinatorAPI` is what every coordinator offers -- the etcd one
(:class:`hacluster.coordinator.Coordinator`) and the single-node one
(:class:`hacluster.local.LocalCoordinator`) -- and what the manila
integration, the periodic runner and driver code may use. One contract
test (``tests/functional/test_contract.py``) runs against both.

:class:`Subscriber` is what the cluster watch delivers events to
(:meth:`hacluster.coordinator.Coordinator.subscribe`).
"""

import abc
from typing import Protocol


class Subscriber(Protocol):
    """Receives the cluster watch's events for the keys directly under one
    prefix.

    Both methods are called in the watch thread, in revision order: they
    must be quick, must not block on etcd (start a thread for that) and
    must not raise (an exception is logged and the next event delivered).
    """

    def notify(self, etype, kv):
        """``etype`` is ``'PUT'`` or ``'DELETE'``; ``kv`` a
        :class:`hacluster.etcd.KV` (for a DELETE, only its key and
        revisions are set)."""

    def resync(self):
        """Events may have been missed (the watch reconnected after a
        compaction): re-read whatever state is kept from the events."""


class CoordinatorAPI(abc.ABC):
    """One process's membership in one cluster.

    Thread-safe throughout. Callbacks run in hacluster's own threads and
    must be short. Every method that talks to etcd says so and raises
    :class:`hacluster.exceptions.BackendUnavailable` when it cannot; the
    single-node coordinator never blocks on a network.
    """

    #: True for the single-node coordinator (no etcd, always the leader).
    single_node = False

    # -- life cycle -------------------------------------------------------

    @property
    @abc.abstractmethod
    def running(self):
        """True between a successful :meth:`start` and :meth:`stop`."""

    @abc.abstractmethod
    def start(self, timeout=None):
        """Join the cluster; returns self. Idempotent."""

    @abc.abstractmethod
    def stop(self, claim_grace=None):
        """Leave gracefully: waits for open claims (up to ``claim_grace``
        seconds, default the coordinator's), hands over those still open,
        releases everything. Idempotent."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @abc.abstractmethod
    def fence_point(self):
        """Call right before a write a recovery must not race (see
        :mod:`hacluster.fencing`); may exit the process."""

    # -- locks ------------------------------------------------------------

    @abc.abstractmethod
    def get_lock(self, name, shared=False, on_lost=None):
        """A lock (not acquired yet): ``acquire(blocking)``, ``release()``,
        ``held``, ``fencing_token``, ``is_still_owner()``, a context
        manager."""

    @abc.abstractmethod
    def held_locks(self):
        """The locks held now (a snapshot list)."""

    @abc.abstractmethod
    def get_data(self, key):
        """``(value, revision)`` of a data item written by a guarded
        write, or ``(None, 0)``."""

    @abc.abstractmethod
    def on_lock_lost(self, callback):
        """``callback(lock, reason)`` for every lock lost while held."""

    @abc.abstractmethod
    def on_session_lost(self, callback):
        """``callback(reason)``: the session is gone (never called in
        single-node mode: there is no session)."""

    @abc.abstractmethod
    def on_session_started(self, callback):
        """``callback(member_id)``: a new session is live (never called in
        single-node mode)."""

    # -- membership -------------------------------------------------------

    @abc.abstractmethod
    def get_members(self):
        """``{node: MemberRecord}`` of the live members."""

    @abc.abstractmethod
    def live_members(self):
        """The members as seen now, without a request."""

    @abc.abstractmethod
    def update_member(self, **fields):
        """Publish extra fields in this member's record."""

    @abc.abstractmethod
    def on_member_join(self, callback):
        """``callback(record)`` when a member joins (never in single-node
        mode: no other member can)."""

    @abc.abstractmethod
    def on_member_leave(self, callback):
        """``callback(record, graceful)`` when a member leaves (never in
        single-node mode)."""

    # -- leadership -------------------------------------------------------

    @abc.abstractmethod
    def run_for_leader(self, on_started_leading, on_stopped_leading,
                       on_new_leader=None):
        """Campaign; ``on_started_leading(term)``, ``on_stopped_leading
        (term)`` (always, once per term), ``on_new_leader(record)``."""

    @abc.abstractmethod
    def campaign(self):
        """Run for leader with no callbacks of one's own."""

    @abc.abstractmethod
    def resign(self):
        """Stop leading and campaigning."""

    @property
    @abc.abstractmethod
    def is_leader(self):
        """True while leading (no request)."""

    @property
    @abc.abstractmethod
    def term(self):
        """The term while leading, else None."""

    @abc.abstractmethod
    def get_leader(self):
        """The leader's record (with ``term``), or None."""

    @abc.abstractmethod
    def on_new_leader(self, callback):
        """``callback(record_or_None)`` whenever the leader changes."""

    @abc.abstractmethod
    def guarded_put_as_leader(self, term, key, value):
        """Write data ``key`` only while leading in ``term``."""

    # -- claims and recovery ----------------------------------------------

    @abc.abstractmethod
    def claim(self, resource_type, resource_id, operation, data=None):
        """A claim on in-flight work (a context manager with ``finish()``,
        ``hand_over(reason)``, ``still_owned()``)."""

    @abc.abstractmethod
    def can_claim(self, resource_type, operation):
        """True if every live member can recover such a claim (a new kind
        of claim waits until an upgrade is complete)."""

    @abc.abstractmethod
    def register_recovery(self, resource_type, handler):
        """``handler(claim_record)`` repairs a dead owner's claims."""

    @abc.abstractmethod
    def list_claims(self, node=None):
        """The claims (ClaimRecords) of the cluster, or of ``node``."""

    @abc.abstractmethod
    def recover_node(self, node):
        """Operator: recover a node known dead now (refused while it is a
        live member; refused in single-node mode, where the node recovers
        its own claims at start)."""
