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

"""``hacluster audit`` over the share drivers of the real manila 23.0.1,
checked against an independent count.

The source comes from manila's wheel, downloaded with ``pip download
--no-deps`` into ``.venv/hacluster-cache/`` (kept there for the next run)
and unzipped: manila is never installed, imported or run.

The independent count is a plain regular expression over the text of every
``*.py`` file under ``manila/share/drivers/`` -- no parsing, no import
resolution:

* ``distributed``: ``coordination.synchronized(`` and ``coordination.Lock(``;
* ``threading``: ``threading.Lock(``, ``RLock(``, ``Semaphore(``,
  ``BoundedSemaphore(``, ``Condition(``;
* oslo locks: ``<word>utils.synchronized(`` (the drivers import manila's
  utils as ``utils``, ``mutils`` and ``manila_utils``) and
  ``lockutils.lock(`` / ``lockutils.synchronized(``; such a hit is
  ``external`` when the text of the call, up to its closing parenthesis,
  contains ``external=True``, else ``internal``.

Each hit is counted at the line where the pattern starts, which is also the
line ast gives the call. A looser grep (any ``synchronized``, any mention of
a threading lock) finds 14 more lines; :data:`NOT_SITES` lists them and why
they are not lock sites, and the test checks that list is exactly the
difference.

What the HA share manager makes of each site (swapped at call time,
re-wrapped at import, left local on purpose, node-local) is checked site by
site against lists made by reading manila's code (:data:`SWAPPED` and the
others).
"""

import io
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

from hacluster import audit
from hacluster.cli import main as cli_main

MANILA = 'manila==23.0.1'
REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = REPO / '.venv' / 'hacluster-cache'

STRICT = re.compile(
    r'(?P<distributed>\bcoordination\.(?:synchronized|Lock)\()'
    r'|(?P<threading>\bthreading\.'
    r'(?:Lock|RLock|Semaphore|BoundedSemaphore|Condition)\()'
    r'|(?P<oslo>\b\w*utils\.synchronized\('
    r'|\blockutils\.(?:lock|synchronized)\()')
LOOSE = re.compile(
    r'synchronized|lockutils\.|'
    r'threading\.(?:Lock|RLock|Semaphore|BoundedSemaphore|Condition)\b')

# Lines the loose grep finds that are not lock sites.
NOT_SITES = {
    # Wrapper decorators: each is a function whose body takes
    # utils.synchronized(key) -- one site, counted there -- ...
    ('helpers.py', 166): 'def nfs_synchronized(f):',
    ('zfsonlinux/utils.py', 38): 'def zfs_dataset_synchronized(f):',
    ('netapp/dataontap/protocols/base.py', 22):
        'def access_rules_synchronized(f):',
    # ... and these are their uses, which take no lock themselves.
    ('helpers.py', 250): '@nfs_synchronized',
    ('helpers.py', 398): '@nfs_synchronized',
    ('helpers.py', 418): '@nfs_synchronized',
    ('zfsonlinux/driver.py', 249): '@zfs_utils.zfs_dataset_synchronized',
    ('zfsonlinux/utils.py', 243): '@zfs_dataset_synchronized',
    ('zfsonlinux/utils.py', 258): '@zfs_dataset_synchronized',
    ('netapp/dataontap/protocols/nfs_cmode.py', 83):
        '@base.access_rules_synchronized',
    ('netapp/dataontap/protocols/nfs_cmode.py', 92):
        '@base.access_rules_synchronized',
    ('netapp/dataontap/protocols/cifs_cmode.py', 78):
        '@base.access_rules_synchronized',
    # Words in a message and in a docstring.
    ('huawei/v3/replication.py', 183): "msg = _('Data of replica %s is not "
                                       "synchronized, '",
    ('weka/posix.py', 42): '"""Return a per-mount-point threading.Lock '
                           '(created on first use)."""',
}


# What hacluster.manila.manager.HAShareManager does with manila 23.0.1's
# driver locks, read off the code: manila's utils.synchronized decorating a
# nested function is looked up at each call, so the manager's swap makes it
# a cluster lock ...
SWAPPED = {
    ('generic.py', 361), ('generic.py', 408), ('generic.py', 445),
    ('generic.py', 553), ('helpers.py', 174),
    ('dell_emc/plugins/powermax/object_manager.py', 1895),
    ('dell_emc/plugins/powermax/object_manager.py', 1953),
    ('dell_emc/plugins/powermax/object_manager.py', 1999),
    ('dell_emc/plugins/vnx/object_manager.py', 1894),
    ('dell_emc/plugins/vnx/object_manager.py', 1951),
    ('dell_emc/plugins/vnx/object_manager.py', 1997),
    ('hpe/hpe_3par_mediator.py', 438),
    ('netapp/dataontap/cluster_mode/lib_base.py', 5389),
    ('netapp/dataontap/cluster_mode/lib_multi_svm.py', 454),
    ('netapp/dataontap/cluster_mode/lib_multi_svm.py', 2103),
    ('netapp/dataontap/protocols/base.py', 30),
    ('zfsonlinux/utils.py', 43),
}
# ... and so are these, whose names are built from instance state or a
# local: reviewed for the name, not for the kind of lock.
SWAPPED_REVIEW = {
    ('ganesha/manager.py', 318), ('glusterfs/__init__.py', 294),
    ('netapp/dataontap/cluster_mode/lib_multi_svm.py', 996),
}
# Import-time decorators the manager decorates again
# (hacluster.manila.locks.IMPORT_TIME_LOCKS) ...
REWRAPPED = {('service_instance.py', line) for line in (
    407, 540, 975, 1026, 1159, 1182, 1203, 1225, 1245)}
# ... the one it leaves node-local on purpose (plugging an interface into
# this host) ...
LOCAL_ON_PURPOSE = {('service_instance.py', 1137)}
# ... and the import-time locks nothing makes cluster locks: to replace.
NODE_LOCAL = {
    ('container/driver.py', 153), ('container/driver.py', 269),
    ('container/driver.py', 324), ('glusterfs/glusterfs_native.py', 151),
    ('hitachi/hnas/ssh.py', 671),
} | {('qnap/qnap.py', line) for line in (
    199, 300, 389, 411, 455, 509, 528, 628)}


@pytest.fixture(scope='session')
def manila_drivers():
    """The path of manila 23.0.1's ``manila/share/drivers`` (unzipped from
    its wheel, downloaded once into the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob('manila-23.0.1-*.whl'))
    if not wheels:
        pip = REPO / '.venv' / 'bin' / 'pip'
        command = [str(pip)] if pip.exists() else [
            sys.executable, '-m', 'pip']
        proc = subprocess.run(
            command + ['download', '--no-deps', MANILA, '-d', str(CACHE)],
            capture_output=True, text=True)
        wheels = sorted(CACHE.glob('manila-23.0.1-*.whl'))
        if proc.returncode or not wheels:
            pytest.fail('pip download %s failed (rc=%s): %s'
                        % (MANILA, proc.returncode, proc.stderr[-2000:]))
    target = CACHE / 'manila-23.0.1'
    marker = target / '.unpacked'
    if not marker.exists():
        with zipfile.ZipFile(wheels[-1]) as wheel:
            wheel.extractall(target)
        marker.touch()
    drivers = target / 'manila' / 'share' / 'drivers'
    assert drivers.is_dir(), drivers
    return drivers


def _call_text(text, start):
    """The text from ``start`` to the parenthesis closing the first one."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == '(':
            depth += 1
        elif text[i] == ')':
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return text[start:]


def _grep(drivers):
    """(strict hits {(file, line): kind}, loose lines {(file, line)})."""
    strict, loose = {}, set()
    for path in sorted(drivers.rglob('*.py')):
        relative = path.relative_to(drivers).as_posix()
        text = path.read_text(encoding='utf-8')
        for match in STRICT.finditer(text):
            line = text.count('\n', 0, match.start()) + 1
            kind = match.lastgroup
            if kind == 'oslo':
                call = _call_text(text, match.start())
                kind = 'external' if re.search(r'external\s*=\s*True',
                                               call) else 'internal'
            strict[(relative, line)] = kind
        for number, line in enumerate(text.split('\n'), 1):
            if LOOSE.search(line) and not re.match(r'\s*(import|from)\s',
                                                   line):
                loose.add((relative, number))
    return strict, loose


@pytest.fixture(scope='session')
def audited(manila_drivers):
    sites, files = audit.audit_paths([str(manila_drivers)])
    return sites, files


def _key(site, drivers):
    return pathlib.Path(site.file).relative_to(drivers).as_posix(), site.line


def test_every_driver_file_parses(manila_drivers, audited):
    sites, files = audited
    assert files == len(list(manila_drivers.rglob('*.py'))) == 184
    assert [s for s in sites if s.verdict == 'error'] == []


def test_the_sites_are_the_ones_the_independent_count_finds(
        manila_drivers, audited):
    sites, _ = audited
    strict, _ = _grep(manila_drivers)
    found = {_key(s, manila_drivers): s.kind for s in sites}
    assert found == strict


def test_the_counts_per_kind_match_the_independent_count(
        manila_drivers, audited):
    sites, _ = audited
    strict, _ = _grep(manila_drivers)
    expected = {k: list(strict.values()).count(k) for k in audit.KINDS}
    counts = audit.summarize(sites)
    assert counts['kind'] == expected
    # What the count was on manila 23.0.1 when this test was written.
    assert expected == {'external': 23, 'internal': 28, 'distributed': 8,
                        'threading': 5}


def test_what_a_looser_grep_finds_beyond_the_sites_is_explained(
        manila_drivers, audited):
    sites, _ = audited
    strict, loose = _grep(manila_drivers)
    assert loose - set(strict) == set(NOT_SITES)
    for (relative, line), text in NOT_SITES.items():
        source = (manila_drivers / relative).read_text().split('\n')
        assert source[line - 1].strip() == text
    assert not set(NOT_SITES) & {_key(s, manila_drivers) for s in sites}


def test_verdicts_follow_the_documented_rules(manila_drivers, audited):
    sites, _ = audited
    by_key = {_key(s, manila_drivers): s for s in sites}
    for site in sites:
        assert (site.kind == 'distributed') == (
            site.verdict == 'already-distributed'), site
        if site.kind == 'external':
            # A file lock the HA manager leaves is replaced, unless its name
            # needs a look or it is local on purpose.
            assert site.verdict in ('replace', 'review', 'swapped',
                                    'rewrapped', 'keep'), site
            if site.verdict == 'keep':
                assert _key(site, manila_drivers) in LOCAL_ON_PURPOSE
        if site.verdict in ('replace', 'review') and site.kind != \
                'threading' and not site.runtime.startswith('etcd '):
            # the cluster lock manila's own call sites take
            assert site.suggestion.startswith(
                "hacluster.synchronized('manila-"), site
        if site.runtime.startswith('etcd '):
            assert site.suggestion == '', site
        # never a cluster lock in the reason of a node-local lock
        if site.runtime.startswith(('file ', 'in-process')):
            assert 'the HA manager makes it' not in site.reason, site
    # Hand-checked examples of each rule.
    assert by_key[('service_instance.py', 281)].reason == (
        'lazy one-time set-up of self._network_helper: each process builds '
        'its own')
    assert by_key[('weka/driver.py', 152)].verdict == 'keep'   # a dict
    assert by_key[('weka/driver.py', 155)].verdict == 'review'  # org create
    assert by_key[('qnap/qnap.py', 300)].verdict == 'replace'
    assert by_key[('huawei/v3/helper.py', 135)].verdict == 'review'
    vlan = by_key[('netapp/dataontap/cluster_mode/lib_multi_svm.py', 996)]
    assert (vlan.verdict, vlan.name, vlan.runtime) == (
        'review', 'netapp-VLAN-{vlan_id}', 'etcd manila-netapp-VLAN-{vlan_id}')
    assert by_key[('helpers.py', 174)].name == 'nfs-{...}'
    # Creating an fpolicy takes a file lock, deleting one a coordination
    # lock of the same name: with manila's own manager they do not exclude
    # each other; under the HA manager both are one cluster lock.
    fpolicy = by_key[('netapp/dataontap/cluster_mode/lib_base.py', 5389)]
    assert fpolicy.reason.endswith(
        'the distributed lock at line 5495 has the same name: under the HA '
        'manager both are the cluster lock manila-netapp-fpolicy-{vserver} '
        '(with manila\'s own manager the two do not exclude each other)')
    assert by_key[('netapp/dataontap/cluster_mode/lib_base.py', 5495)] \
        .runtime == 'etcd manila-netapp-fpolicy-{vserver}'
    # What the HA manager makes of the 40 node-local locks manila names.
    verdicts = {}
    for site in sites:
        verdicts.setdefault(site.verdict, set()).add(
            _key(site, manila_drivers))
    assert verdicts['swapped'] == SWAPPED
    assert SWAPPED_REVIEW <= verdicts['review']
    assert verdicts['rewrapped'] == REWRAPPED
    assert LOCAL_ON_PURPOSE <= verdicts['keep']
    assert verdicts['replace'] == NODE_LOCAL
    assert len(SWAPPED | REWRAPPED | LOCAL_ON_PURPOSE | NODE_LOCAL) == 40
    for key in SWAPPED | SWAPPED_REVIEW | REWRAPPED:
        assert by_key[key].runtime == (
            'etcd manila-' + by_key[key].name), by_key[key]
    # The totals, as reviewed by hand on manila 23.0.1.
    assert audit.summarize(sites)['verdict'] == {
        'replace': 13, 'review': 11, 'keep': 6, 'swapped': 17,
        'rewrapped': 9, 'already-distributed': 8, 'error': 0}


def test_the_command_reports_them_and_exits_1(manila_drivers):
    out, err = io.StringIO(), io.StringIO()
    status = cli_main.main(['audit', '-f', 'json', str(manila_drivers)],
                           stdout=out, stderr=err)
    rows = json.loads(out.getvalue())
    assert status == 1
    assert len(rows) == 64
    assert err.getvalue().splitlines()[-1] == (
        'hacluster audit: 64 lock sites in 184 files; kind: external 23, '
        'internal 28, distributed 8, threading 5; verdict: replace 13, '
        'review 11, keep 6, swapped 17, rewrapped 9, already-distributed 8; '
        '0 files not audited')


def test_the_suggested_fixes_apply_and_leave_nothing_to_replace(
        manila_drivers, tmp_path):
    # (under manila/share/drivers/: what the HA manager re-wraps is found
    # by module, manila.share.drivers.service_instance)
    copy = tmp_path / 'manila' / 'share' / 'drivers'
    copy.parent.mkdir(parents=True)
    subprocess.run(['cp', '-r', str(manila_drivers), str(copy)], check=True)
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cli_main.main(['audit', '--fix-suggestions', 'manila/share/drivers'],
                      stdout=out, stderr=io.StringIO())
    finally:
        os.chdir(cwd)
    (tmp_path / 'fix.diff').write_text(out.getvalue())
    subprocess.run(['git', 'apply', 'fix.diff'], cwd=tmp_path, check=True)
    before = {_key(s, manila_drivers): s for s in
              audit.audit_paths([str(manila_drivers)])[0]}
    sites, _ = audit.audit_paths([str(copy)])
    counts = audit.summarize(sites)['verdict']
    assert counts['error'] == 0
    assert counts['replace'] == 0
    assert counts['already-distributed'] == 8 + 13
    # Each fixed site takes the cluster lock manila- + its old name (the
    # diff changes no line count: the import goes on a line of its own,
    # before the first import it sorts ahead of, so look them up by name).
    fixed = sorted(s.runtime for s in sites
                   if s.verdict == 'already-distributed' and
                   s.family == 'hacluster')
    assert fixed == sorted('etcd manila-' + before[key].name
                           for key in NODE_LOCAL)
