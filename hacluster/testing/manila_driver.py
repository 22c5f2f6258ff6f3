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

"""manila's DummyDriver, active-active, with a trace of what it was asked.

For tests and the demo only: manila's own ``DummyDriver`` (in
``manila.tests``, shipped with manila's wheel) with
:class:`hacluster.manila.driver.HAShareDriverMixin` mixed in. Every call the
tests count is appended as one JSON line to the file named by the
environment variable ``HACLUSTER_DRIVER_EVENTS`` (when set)::

    {"t": 1700000000.1, "node": "node1", "pid": 123, "event": "stats"}
    {"t": ..., "event": "create_share.start", "id": "<instance id>"}

Lines are written with one ``write`` on a file opened ``O_APPEND``, so the
processes of a test can share one file.
"""

import json
import os
import re
import threading
import time

from oslo_config import cfg

from manila.tests.share.drivers import dummy

from hacluster.manila import driver as ha_driver

_LOCK = threading.Lock()


def record(event, **fields):
    """Append one event line (no-op without HACLUSTER_DRIVER_EVENTS)."""
    path = os.environ.get('HACLUSTER_DRIVER_EVENTS')
    if not path:
        return
    try:
        node = cfg.CONF.hacluster.node_name
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        # manila's own manager (a baseline) never registers [hacluster]:
        # the rig writes node_name all the same
        from hacluster import opts
        opts.register_opts(cfg.CONF)
        node = cfg.CONF.hacluster.node_name
    line = json.dumps(dict(fields, t=time.time(), node=node,
                           pid=os.getpid(), event=event)) + '\n'
    with _LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class HADummyDriver(ha_driver.HAShareDriverMixin, dummy.DummyDriver):
    """DummyDriver + the mixin + an event trace.

    A share whose display name starts with ``slow<seconds>-`` takes that
    much longer to create (on top of the configured delay), so one slow
    create can be cut short among fast ones.

    ``get_share_status`` (which DummyDriver lacks) keeps a share in its
    pending status until it has been polled ``HACLUSTER_DUMMY_POLLS`` times
    (default: forever), counting the polls in the private storage shared by
    all nodes -- so the per-share poll can be watched spreading.
    """

    def _update_share_stats(self, data=None):
        record('stats')
        return super()._update_share_stats(data)

    def create_share(self, context, share, share_server=None):
        record('create_share.start', id=share['id'])
        slow = re.match(r'slow(\d+(?:\.\d+)?)-', share.get('display_name')
                        or '')
        if slow:
            time.sleep(float(slow.group(1)))
        result = super().create_share(context, share, share_server)
        record('create_share.end', id=share['id'])
        return result

    def delete_share(self, context, share, share_server=None):
        record('delete_share', id=share['id'])
        return super().delete_share(context, share, share_server)

    def ensure_share(self, context, share, share_server=None):
        record('ensure_share', id=share['id'])
        return super().ensure_share(context, share, share_server)

    def get_share_status(self, share, share_server=None):
        record('get_share_status', id=share['id'], status=share['status'])
        limit = os.environ.get('HACLUSTER_DUMMY_POLLS')
        polls = int((self.private_storage.get(share['id'], 'ha_polls')
                     or 0)) + 1
        self.private_storage.update(share['id'], {'ha_polls': str(polls)})
        if limit and polls >= int(limit):
            return {'status': 'available',
                    'export_locations': self._generate_export_locations(
                        '/path/to/fake/share/%s' % share['id'])}
        return {'status': share['status']}
