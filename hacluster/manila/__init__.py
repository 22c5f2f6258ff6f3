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

"""hacluster inside manila-share (manila 23).

Two pieces, both importable only where manila is installed:

* :class:`hacluster.manila.driver.HAShareDriverMixin`: mixed into a share
  driver, it declares the driver safe for active-active
  (``SUPPORTS_ACTIVE_ACTIVE``), gives it cluster locks and claims, and
  knows how to finish or undo the operations a dead node left half-done.
* :class:`hacluster.manila.manager.HAShareManager`: the share manager, set
  with manila's own option ``share_manager =
  hacluster.manila.manager.HAShareManager``. It joins the backend's cluster
  in the worker process, runs manila's periodic tasks in hacluster modes,
  replaces manila's local locks with cluster locks and takes claims around
  the operations that must not be left half-done.

With ``[coordination] backend_url`` unset or ``file://...`` (manila's
default) the manager behaves like manila's own, plus restart recovery of
its own half-done operations.
"""
