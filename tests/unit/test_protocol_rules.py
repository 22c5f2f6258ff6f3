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

"""The protocol contract's rules, without servers."""

import pytest

from hacluster import protocol as p


def rec(**compat):
    return {'version': 'x', 'compat': compat} if compat else {'version': 'x'}


def test_a_record_without_compat_is_the_oldest_protocol():
    c = p.Compat.from_record({'version': '0.1.0'})
    assert (c.protocol, c.min_protocol, c.fanout_rpc) == (1, 1, ('1.0',))
    assert c.formats['claim'] == (1, 1) and c.recovers is None


def test_garbage_compat_is_read_as_the_oldest():
    c = p.Compat.from_record({'compat': {'protocol': 'two'}})
    assert c.protocol == 1


def test_join_is_refused_without_a_common_protocol_and_names_both():
    own = p.Compat(3, 2, p.FORMATS, ['1.0'], version='3.0')
    own.check_join({'n1': rec(protocol=2, min_protocol=1)})
    with pytest.raises(p.IncompatibleCluster) as e:
        own.check_join({'n1': {'version': '1.0'}, 'n2': rec(protocol=3,
                                                            min_protocol=2)})
    assert 'hacluster 3.0, protocol 2-3' in str(e.value)
    assert 'n1 (hacluster 1.0, protocol 1-1)' in str(e.value)
    assert 'n2' not in str(e.value)


def test_writers_write_the_lowest_format_every_member_reads():
    new = p.Compat(2, 1, dict(p.FORMATS, claim=(1, 2)), ['1.0', '1.1'])
    old = p.Compat.from_record({})
    assert new.write_format('claim', [old]) == 1
    assert new.write_format('claim', [new]) == 2
    assert new.write_format('claim', []) == 2


def test_readers_refuse_a_format_they_do_not_read():
    c = p.Compat(1, 1, p.FORMATS, ['1.0'], version='v1')
    assert c.check_format('claim', {}) == 1
    with pytest.raises(p.UnknownFormat) as e:
        c.check_format('claim', {'format': 2})
    assert 'format 2' in str(e.value) and 'v1' in str(e.value)
    with pytest.raises(p.UnknownFormat):
        c.check_format('claim', {'format': 'x'})


def test_the_fanout_cap_is_the_newest_version_everyone_serves():
    new = p.Compat(2, 1, p.FORMATS, ['1.0', '1.1'])
    old = p.Compat(1, 1, p.FORMATS, ['1.0'])
    assert p.fanout_cap(new, [old, new]) == '1.0'
    assert p.fanout_cap(new, [new]) == '1.1'
    assert p.fanout_cap(new, []) == '1.1'
    assert p.fanout_cap(new, [p.Compat(1, 1, p.FORMATS, ['2.0'])]) == '1.0'
    assert p.fanout_cap(p.Compat(1, 1, p.FORMATS, ['1.0', '1.10']),
                        []) == '1.10'      # numeric, not text, order


def test_a_new_claim_waits_for_every_recoverer():
    legacy = p.Compat.from_record({})
    knows = p.Compat(2, 1, p.FORMATS, ['1.0'], ['share:canary_resize'])
    partial = p.Compat(1, 1, p.FORMATS, ['1.0'], ['share:create'])
    other_type = p.Compat(1, 1, p.FORMATS, ['1.0'], ['snapshot:*'])
    generic = p.Compat(1, 1, p.FORMATS, ['1.0'], ['share:*'])
    op = ('share', 'canary_resize')
    assert p.everyone_recovers([knows, other_type, generic], *op)
    assert not p.everyone_recovers([knows, partial], *op)
    assert not p.everyone_recovers([knows, legacy], *op)
    # what existed before the contract, legacy members recover
    assert p.everyone_recovers([legacy, partial], 'share', 'create')


def test_the_canary_speaks_the_next_protocol(monkeypatch):
    monkeypatch.setenv(p.CANARY_ENV, '1')
    c = p.local(recovers={'share:create'})
    assert c.protocol == p.PROTOCOL + 1 and c.min_protocol == p.MIN_PROTOCOL
    assert c.fanout_rpc[-1] == p.CANARY_FANOUT_RPC
    assert c.formats['claim'][1] == p.CANARY_CLAIM_FORMAT
    assert 'share:canary_resize' in c.recovers
    assert c.interoperates_with(p.Compat.from_record({}))
    monkeypatch.setenv(p.CANARY_ENV, '0')
    assert p.local().protocol == p.PROTOCOL


def test_the_newest_version_of_an_upgrade():
    legacy = {'node': 'a', 'version': '0.1.0'}
    contract = {'node': 'b', 'version': '0.1.0.dev9', 'compat': {}}
    # pbr's dev version of the contract is newer than the hand-written
    # version of the release before it
    assert p.upgrade_view([legacy, contract])['newest'] == '0.1.0.dev9'
    two = p.upgrade_view([dict(contract, node='c', version='0.2.0'),
                          contract, dict(contract, node='d')])
    assert two['newest'] == '0.2.0' and two['at_newest'] == 1
    assert two['members'] == 3
    assert two['versions']['0.1.0.dev9'] == ['b', 'd']
    odd = p.upgrade_view([dict(contract, version='not pep 440'),
                          dict(contract, node='c', version='also not')])
    assert odd['newest'] in ('not pep 440', 'also not')
    assert p.upgrade_view([legacy, dict(legacy, node='b')]) is None


def test_features_are_said_in_the_record_and_never_assumed():
    """A leader relies on a member ignoring copies of its items only if
    the member's record says so: an older record (no ``features``) or a
    malformed one has none."""
    from hacluster import protocol

    own = protocol.local('9.9')
    assert 'fanout_dedup' in own.features
    back = protocol.Compat.from_record({'compat': own.as_record()})
    assert back.features == own.features
    assert protocol.Compat.from_record({}).features == frozenset()
    legacy = dict(own.as_record())
    del legacy['features']
    assert protocol.Compat.from_record({'compat': legacy}).features == \
        frozenset()
    odd = dict(own.as_record(), features=[1, None, 'fanout_dedup'])
    assert protocol.Compat.from_record({'compat': odd}).features == \
        {'fanout_dedup'}
