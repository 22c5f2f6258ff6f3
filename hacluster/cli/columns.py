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

"""Cells of the ``hacluster`` command's tables, as cliff columns.

A cell knows how to show itself to a person (``human_readable``: what the
``table`` format and ``hacluster status`` print) and to a program
(``machine_readable``: ``json``, ``yaml``, ``value``, ``csv``):

* :class:`Cell`: any value; an unset one is ``-`` for a person (never
  ``None``), ``null`` for a program;
* :class:`Seconds`: a duration, ``4.2s``, ``3m 05s``, ``2h 10m`` (a number
  of seconds for a program);
* :class:`Ago`: the same, followed by ``ago``;
* :class:`Timestamp`: a Unix time, shown as ISO-8601 in UTC with how long
  ago it was (``2025-03-01T10:00:00Z (3m 05s ago)``); ISO-8601 for a
  program too, never a raw epoch.

Unset values sort first (cliff's ``--sort-column``).
"""

import datetime

from cliff import columns

NONE = '-'


def duration(seconds):
    """``seconds`` for a person: ``0.4s``, ``59.9s``, ``3m 05s``,
    ``2h 10m``, ``3d 04h``; ``-`` for None."""
    if seconds is None:
        return NONE
    seconds = float(seconds)
    sign = '-' if seconds < 0 else ''
    seconds = abs(seconds)
    if seconds < 60:
        return '%s%.1fs' % (sign, seconds)
    seconds = int(seconds)
    if seconds < 3600:
        return '%s%dm %02ds' % (sign, seconds // 60, seconds % 60)
    if seconds < 86400:
        return '%s%dh %02dm' % (sign, seconds // 3600, seconds % 3600 // 60)
    return '%s%dd %02dh' % (sign, seconds // 86400, seconds % 86400 // 3600)


def iso(epoch):
    """A Unix time as ISO-8601 in UTC, to the second (``...Z``); None for
    None."""
    if epoch is None:
        return None
    when = datetime.datetime.fromtimestamp(float(epoch),
                                           tz=datetime.timezone.utc)
    return when.isoformat(timespec='seconds').replace('+00:00', 'Z')


class Cell(columns.FormattableColumn):
    """A value; ``-`` for a person when unset (None or '')."""

    def human_readable(self):
        if self._value is None or self._value == '':
            return NONE
        return str(self._value)

    def _key(self):
        return (self._value is not None, self._value)

    def __lt__(self, other):
        if not isinstance(other, columns.FormattableColumn):
            return NotImplemented
        try:
            return self._key() < other._key()
        except TypeError:       # mixed types: order by their text
            return str(self._value) < str(other._value)

    def __hash__(self):
        return hash((type(self).__name__, repr(self._value)))


class Seconds(Cell):
    """A duration in seconds: ``4.2s``, ``3m 05s``..."""

    def human_readable(self):
        return duration(self._value)


class Ago(Seconds):
    """How long ago, in seconds: ``4.2s ago``."""

    def human_readable(self):
        if self._value is None:
            return NONE
        return duration(self._value) + ' ago'


class Timestamp(Cell):
    """A Unix time: ISO-8601 (UTC) for programs, and with how long ago it
    was for a person (``now``: the time the state was read)."""

    def __init__(self, epoch, now=None):
        super().__init__(epoch)
        self._now = now

    def human_readable(self):
        if self._value is None:
            return NONE
        text = iso(self._value)
        if self._now is not None:
            text += ' (%s ago)' % duration(max(0.0, self._now - self._value))
        return text

    def machine_readable(self):
        return iso(self._value)


def plain(value):
    """``value`` for the ``value`` and ``csv`` formats: a cell's machine
    form, and '' instead of None (never the text ``None``)."""
    if isinstance(value, columns.FormattableColumn):
        value = value.machine_readable()
    return '' if value is None else value
