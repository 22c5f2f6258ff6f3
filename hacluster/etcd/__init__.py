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

"""The one place hacluster talks to etcd: its gRPC gateway's JSON API.

* :mod:`hacluster.etcd.client` -- endpoints, fail-over inside a time budget,
  the one authentication path, error translation;
* :mod:`hacluster.etcd.kv` -- the wire format: operations, comparisons,
  decoded key-values, typed transaction results;
* :mod:`hacluster.etcd.watch` -- the resumable prefix watch.

The names below are the package's interface; guarded writes
(``Lock.guarded_txn``) take operations built with them.
"""

# (re-exported: the package's public names)
from hacluster.etcd.client import Client  # noqa: F401
from hacluster.etcd.client import Compacted  # noqa: F401
from hacluster.etcd.client import LeaseNotFound  # noqa: F401
from hacluster.etcd.kv import b64  # noqa: F401
from hacluster.etcd.kv import create_revision_is  # noqa: F401
from hacluster.etcd.kv import delete_op  # noqa: F401
from hacluster.etcd.kv import KV  # noqa: F401
from hacluster.etcd.kv import mod_revision_is  # noqa: F401
from hacluster.etcd.kv import put_op  # noqa: F401
from hacluster.etcd.kv import range_op  # noqa: F401
from hacluster.etcd.kv import RangePage  # noqa: F401
from hacluster.etcd.kv import TxnResult  # noqa: F401
from hacluster.etcd.watch import Watch  # noqa: F401
