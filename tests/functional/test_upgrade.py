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

"""A rolling upgrade of three real manila-share 23.0.1 nodes, grenade-style,
on one machine: N (a real older commit) to N+1 (the working tree) to the
canary N+2. The steps and checks are in :mod:`hacluster.testing.upgrade`
(shared with ``tools/demo --upgrade``)."""

from hacluster.testing import upgrade


def test_a_rolling_upgrade_from_n_to_n_plus_1_and_a_canary(
        manila_cluster, old_tree):
    def report(step, status):
        print('step ok: %s' % step)
    upgrade.run(manila_cluster(nodes=upgrade.NODES), old_tree, report)
