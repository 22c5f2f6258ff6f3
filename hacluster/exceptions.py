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

"""The exceptions hacluster raises.

Everything hacluster raises derives from :class:`HAClusterError`, so one
``except HAClusterError`` catches every coordination failure. Errors from
requests (etcd's gateway) and oslo.messaging are translated where hacluster
calls them and never escape raw; the original is kept as ``cause`` (and as
``__cause__``, for tracebacks).

Messages never contain secrets: URLs are scrubbed of passwords before they
are put into a message (see :func:`hacluster.url.scrub`).
"""


class HAClusterError(Exception):
    """Root of every hacluster error.

    :param message: what went wrong, naming the input or option at fault.
    :param cause: the lower-level exception that caused this one, if any.
    """

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.message = message
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause

    def __str__(self):
        return self.message


class ConfigurationError(HAClusterError, ValueError):
    """A setting or argument is invalid; the message names it.

    Also a :class:`ValueError`, so code that validates input generically
    still catches it.
    """


class InvalidName(ConfigurationError):
    """A cluster, node or lock name cannot be used (charset, length...)."""


class BackendUnavailable(HAClusterError):
    """No etcd endpoint answered (all were tried). Transient: retry later."""


class OutcomeUnknown(BackendUnavailable):
    """A guarded write was sent but no answer came while this process was
    still entitled to write (its session's renew deadline passed first):
    it may or may not have been made. Never reported as a success, since by
    then the process may have been told its lock or term is over."""


class SessionLost(HAClusterError):
    """The coordinator's session lease expired or could not be renewed in
    time: everything held under it (locks, leadership) is gone."""


class NotStarted(HAClusterError):
    """The coordinator is not started (or was stopped)."""


class AcquireTimeout(HAClusterError):
    """A lock could not be acquired within the allowed time (or at once,
    with ``blocking=False``). Raised by ``with lock:`` and by
    :func:`hacluster.synchronized`; ``Lock.acquire`` returns ``False``
    instead."""


class LockLost(HAClusterError):
    """A lock this process held is no longer held (its session was lost or
    its key was removed by someone else)."""


class LockNotHeld(HAClusterError):
    """``release()`` or a guarded write on a lock that is not held."""


class StaleFencingToken(HAClusterError):
    """A guarded write was refused: the fencing token it carried is no
    longer the current holder's."""


class NotLeader(HAClusterError):
    """An operation that needs leadership ran on a node that does not lead."""


class Fenced(HAClusterError):
    """This process may no longer act on what it was doing: its claim was
    recovered by another node, a cluster lock it relied on is lost, or its
    session ended while it held work. The write that raised was not made."""


class ClaimRecovered(Fenced):
    """The operation's claim was taken for recovery by another node (this
    one was thought dead): its result must not be written over the
    recovery's. ``late`` holds the record of the late result, if one was
    written."""

    def __init__(self, message, cause=None, late=None):
        super().__init__(message, cause=cause)
        self.late = late


class NoRecoveryHandler(HAClusterError):
    """A recovery handler cannot recover this kind of claim (an unknown
    resource type or operation, e.g. one written by a newer version). The
    claim is kept and retried, by any node that leads, never deleted."""
