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

"""The lock core under native threads (manila 23's default) and under
eventlet (older releases, other services), each in its own process."""

import json
import os
import subprocess
import sys

import pytest

CHECK = os.path.join(os.path.dirname(__file__), 'lockcheck.py')


@pytest.mark.parametrize('model', ['threads', 'eventlet'])
def test_locks_behave_the_same_under(model, etcd, cluster_name):
    args = [sys.executable, '-W', 'ignore', CHECK, etcd.url, cluster_name]
    if model == 'eventlet':
        args.append('--eventlet')
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if model == 'eventlet':
        assert r['threading_patched'] is True
    assert r['max_inside'] == 1 and r['total'] == 60
    assert r['handoff_ok'] and r['handoff_ms'] < 300
    assert r['shared_all'] and r['writer_blocked']
    assert r['lost_noticed'] and r['guarded'] == 'refused'
    assert r['rejoined'] and r['new_token_higher']
    # hacluster must never pin oslo.service's backend by importing it.
    assert r['oslo_service_imported'] is False
