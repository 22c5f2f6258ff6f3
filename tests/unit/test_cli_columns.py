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

"""The cells of the hacluster command's tables (hacluster.cli.columns)."""

import pytest

from hacluster.cli import columns


@pytest.mark.parametrize('seconds, text', [
    (None, '-'), (0, '0.0s'), (0.44, '0.4s'), (59.94, '59.9s'),
    (60, '1m 00s'), (185, '3m 05s'), (3599, '59m 59s'), (3600, '1h 00m'),
    (7800, '2h 10m'), (86400 * 3 + 4 * 3600 + 5, '3d 04h'), (-2, '-2.0s'),
])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert columns.duration(seconds) == text
    assert columns.Seconds(seconds).human_readable() == text
    assert columns.Seconds(seconds).machine_readable() == seconds


def test_times_are_iso_8601_in_utc_never_raw_epochs():
    t = columns.Timestamp(1700000000.25, now=1700000185.0)
    assert t.machine_readable() == '2023-11-14T22:13:20Z'
    assert t.human_readable() == '2023-11-14T22:13:20Z (3m 04s ago)'
    assert columns.Timestamp(1700000000).human_readable() == \
        '2023-11-14T22:13:20Z'
    assert columns.Timestamp(None, now=1).human_readable() == '-'
    assert columns.Timestamp(None).machine_readable() is None


def test_unset_cells_are_a_dash_for_people_and_null_for_programs():
    for value in (None, ''):
        assert columns.Cell(value).human_readable() == '-'
        assert columns.Ago(None).human_readable() == '-'
    assert columns.Cell(None).machine_readable() is None
    assert columns.Cell(0).human_readable() == '0'
    assert columns.Ago(4.2).human_readable() == '4.2s ago'
    assert columns.plain(columns.Cell(None)) == ''
    assert columns.plain(columns.Timestamp(0)) == '1970-01-01T00:00:00Z'
    assert columns.plain(None) == '' and columns.plain(3) == 3


def test_cells_sort_with_unset_values_first():
    cells = [columns.Seconds(3), columns.Seconds(None), columns.Seconds(1)]
    assert [c.machine_readable() for c in sorted(cells)] == [None, 1, 3]
    mixed = [columns.Cell('b'), columns.Cell(2), columns.Cell(None)]
    assert sorted(mixed)[0].machine_readable() is None
