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

import os

from hacluster import membership


def record(**kw):
    machine, boot = membership.machine_identity()
    rec = {'machine_id': machine, 'boot_id': boot, 'pid': os.getpid(),
           'pid_start': membership.pid_start(os.getpid())}
    rec.update(kw)
    return rec


def test_a_live_process_with_our_hostname_elsewhere_is_never_judged_dead():
    # A cloned VM: same hostname, another machine; its pid means nothing
    # here.
    assert not membership._incarnation_dead(
        record(machine_id='another-machine', pid=2 ** 22 - 3))


def test_a_dead_pid_on_this_machine_and_boot_is_a_dead_incarnation():
    assert membership._incarnation_dead(record(pid=2 ** 22 - 3))


def test_after_a_reboot_nothing_is_assumed():
    assert not membership._incarnation_dead(record(boot_id='earlier-boot',
                                                   pid=2 ** 22 - 3))


def test_a_reused_pid_is_recognised_by_its_start_time():
    assert not membership._incarnation_dead(record())
    assert membership._incarnation_dead(
        record(pid_start=membership.pid_start(os.getpid()) + 1))


def test_drift_is_judged_on_the_keys_both_members_have():
    from hacluster import membership as m
    old = m.fingerprints({'lease_ttl': 10, 'url': 'etcd3+http://u:pw@h'})
    new = m.fingerprints({'lease_ttl': 10, 'url': 'etcd3+http://u:pw2@h',
                          'added_in_n_plus_1': True})
    # a key only the newer version fingerprints is not drift, and neither
    # is a password (scrubbed before hashing)
    assert m.drifted(old, new) == []
    changed = m.fingerprints({'lease_ttl': 20})
    assert m.drifted(old, changed) == ['lease_ttl']
    assert m.drifted(None, changed) == []
    # the whole-config fingerprint older versions compare is unchanged
    assert m.fingerprint([1, 2]) == '49a64717d5d4cb19'
