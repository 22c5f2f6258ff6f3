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

"""The bulk decoder of the status command gives what KV.json() gives."""

import pytest

from hacluster.etcd import kv as _kv


def raw(key, value, rev=7, lease=0):
    return {'key': _kv.b64(key), 'value': _kv.b64(value),
            'create_revision': str(rev), 'mod_revision': str(rev),
            'version': '1', 'lease': str(lease)}


def expected(raws):
    return [(k.key, k.create_revision, k.lease, k.json())
            for k in (_kv.KV(r) for r in raws)]


def test_json_objects_decode_as_kv_json_does():
    raws = [raw('/a', '{"x": 1}', 3, 9), raw('/b', '{"y": [1, "}"]}', 4)]
    assert _kv.decode_records(raws) == expected(raws)
    assert _kv.decode_records(raws)[0] == ('/a', 3, 9, {'x': 1})


@pytest.mark.parametrize('odd', [
    '',                 # empty value
    'not json',
    '[1, 2]',           # JSON, not an object
    '{},{}',            # would spill into a neighbour in one array
    '{"a": "}',         # broken, would swallow its neighbour
])
def test_any_other_value_is_decoded_on_its_own(odd):
    raws = [raw('/a', '{"x": 1}'), raw('/b', odd), raw('/c', '{"z": 2}'),
            raw('/d', '{"w": 3}')]
    assert _kv.decode_records(raws) == expected(raws)


def test_a_page_knows_its_last_key_and_whether_more_follow():
    page = _kv.RangePage({'kvs': [raw('/a', '{}'), raw('/b', '{}')],
                          'more': True, 'count': '5'}, 12)
    assert (page.last_key, page.more, page.count, page.revision, len(page)) \
        == ('/b', True, 5, 12, 2)
    assert _kv.RangePage({}, 3).last_key is None


def test_no_value_spills_into_anothers_record():
    """Values each starting with { and ending with }, crafted so that the
    joined array has one element per value but split in the wrong places:
    the first adds an element, the next two merge into one."""
    raws = [raw('/a', b'{"node":"evil"},{"node":"x"}'),
            raw('/b', b'{"c":"}'), raw('/c', b'{"}'),
            raw('/d', b'{"node":"d","nested":{"k":1}, "z":2}'),
            raw('/e', b'{"node":"e"}')]
    assert _kv.decode_records(raws) == expected(raws)
    got = {k: d for k, _, _, d in _kv.decode_records(raws)}
    assert got['/a'] == {} and got['/b'] == {} and got['/c'] == {}
    assert got['/d']['nested'] == {'k': 1} and got['/e'] == {'node': 'e'}
