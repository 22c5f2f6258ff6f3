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

"""Test support for hacluster (nothing here is imported by hacluster itself).

* :mod:`hacluster.testing.process` -- process supervision and the lifecycle
  every private server shares; :mod:`~hacluster.testing.etcd`,
  :mod:`~hacluster.testing.rabbitmq`, :mod:`~hacluster.testing.postgres` --
  private servers on free loopback ports with their data in temporary
  directories (:mod:`~hacluster.testing.servers` re-exports them);
* :mod:`hacluster.testing.proxy` -- a TCP proxy a test can cut;
* :mod:`hacluster.testing.manila_rig`, ``manila_client``,
  ``manila_driver`` -- real manila-share nodes, a stand-in for manila-api
  and the scheduler, and an active-active DummyDriver.
"""
