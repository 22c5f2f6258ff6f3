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

"""hacluster.audit and ``hacluster audit``, over small sources written for
the purpose (inline, and under ``audit_fixtures/``)."""

import ast
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from hacluster import audit
from hacluster.cli import main as cli_main

FIXTURES = pathlib.Path(__file__).resolve().parent / 'audit_fixtures'


def sites_of(source):
    return audit.audit_source(textwrap.dedent(source), 'drv.py')


def only(source):
    sites = sites_of(source)
    assert len(sites) == 1, sites
    return sites[0]


# -- forms and aliases ------------------------------------------------------

def test_manila_utils_synchronized_is_internal_unless_external_true():
    sites = sites_of('''
        from manila import utils

        class FooShareDriver(object):
            @utils.synchronized('a')
            def create_share(self, context, share):
                self.client.create(share)

            @utils.synchronized('b', external=True)
            def delete_share(self, context, share):
                self.client.delete(share)

            @utils.synchronized('c', external=False)
            def extend_share(self, share, size):
                self.client.extend(share, size)
    ''')
    assert [(s.name, s.kind, s.external) for s in sites] == [
        ('a', 'internal', False), ('b', 'external', True),
        ('c', 'internal', False)]
    assert {s.usage for s in sites} == {'decorator'}


@pytest.mark.parametrize('imports, call', [
    ('from manila import utils as u', 'u.synchronized'),
    ('import manila.utils', 'manila.utils.synchronized'),
    ('import manila.utils as mu', 'mu.synchronized'),
    ('from manila.utils import synchronized', 'synchronized'),
    ('from manila.utils import synchronized as sync', 'sync'),
])
def test_manila_utils_is_found_through_any_alias(imports, call):
    site = only('''
        %s

        @%s('n', external=True)
        def f():
            pass
    ''' % (imports, call))
    assert (site.kind, site.name, site.usage) == ('external', 'n',
                                                  'decorator')


@pytest.mark.parametrize('imports, call', [
    ('from oslo_concurrency import lockutils', 'lockutils.lock'),
    ('from oslo_concurrency import lockutils as lu', 'lu.lock'),
    ('import oslo_concurrency.lockutils', 'oslo_concurrency.lockutils.lock'),
    ('from oslo_concurrency.lockutils import lock', 'lock'),
])
def test_lockutils_lock_is_found_through_any_alias(imports, call):
    site = only('''
        %s

        def f(x):
            with %s('n'):
                x.go()
    ''' % (imports, call))
    assert (site.kind, site.usage, site.where) == ('internal', 'context', 'f')


def test_lockutils_takes_external_positionally_too():
    sites = sites_of('''
        from oslo_concurrency import lockutils

        @lockutils.synchronized('a', 'prefix-', True)
        def f():
            pass

        @lockutils.synchronized('b', 'prefix-')
        def g():
            pass

        def h():
            lock = lockutils.external_lock('c')
            other = lockutils.internal_lock('d')
    ''')
    assert [(s.name, s.kind, s.usage) for s in sites] == [
        ('a', 'external', 'decorator'), ('b', 'internal', 'decorator'),
        ('c', 'external', 'call'), ('d', 'internal', 'call')]


def test_a_prefixed_wrapper_assigned_in_the_module_is_a_lock_form():
    sites = sites_of('''
        from oslo_concurrency import lockutils

        synchronized = lockutils.synchronized_with_prefix('manila-')
        lock = lockutils.lock_with_prefix('manila-')

        @synchronized('x', external=True)
        def f():
            pass

        def g(share):
            with lock('y'):
                share.go()

        @lockutils.synchronized_with_prefix('p-')('z', external=True)
        def h():
            pass
    ''')
    assert [(s.line, s.name, s.kind, s.usage) for s in sites] == [
        (7, 'x', 'external', 'decorator'), (12, 'y', 'internal', 'context'),
        (15, 'z', 'external', 'decorator')]


def test_coordination_and_hacluster_locks_are_already_distributed():
    sites = sites_of('''
        import hacluster
        from hacluster import synchronized as hs
        from manila import coordination
        from manila.coordination import synchronized as cs

        @coordination.synchronized('a-{share.id}')
        def f(share):
            with coordination.Lock('b-{x}', {'x': share.id}):
                pass

        @cs('c')
        def g():
            pass

        @hacluster.synchronized('d-{share.id}', 'e')
        def h(share):
            pass

        @hs('f')
        def i():
            pass
    ''')
    assert [(s.name, s.usage) for s in sites] == [
        ('a-{share.id}', 'decorator'), ('b-{x}', 'context'),
        ('c', 'decorator'), ('d-{share.id}, e', 'decorator'),
        ('f', 'decorator')]
    assert {(s.kind, s.verdict) for s in sites} == {
        ('distributed', 'already-distributed')}
    assert {s.suggestion for s in sites} == {''}


def test_threading_locks_are_found_through_any_alias():
    sites = sites_of('''
        import threading
        import threading as th
        from threading import Lock, RLock as R

        A = threading.Lock()
        B = th.RLock()
        C = th.Semaphore(2)
        D = threading.BoundedSemaphore()
        E = threading.Condition()
        F = Lock()
        G = R()
    ''')
    assert [s.line for s in sites] == [6, 7, 8, 9, 10, 11, 12]
    assert {(s.kind, s.usage) for s in sites} == {('threading', 'call')}


def test_names_that_only_look_like_lock_forms_are_not_sites():
    sites = sites_of('''
        from . import utils
        from manila.common import utils as common_utils
        from manila.share.drivers.zfsonlinux import utils as zfs_utils
        from mylib import threading

        @utils.synchronized('relative import: not manila.utils')
        def a():
            pass

        @zfs_utils.zfs_dataset_synchronized
        def b(self, dataset):
            pass

        @common_utils.synchronized('not manila.utils either')
        def c():
            pass

        LOCK = threading.Lock()

        def d(lockutils):
            with lockutils.lock('an argument, not oslo'):
                pass
    ''')
    assert sites == []


# -- lock names --------------------------------------------------------------

@pytest.mark.parametrize('expression, name', [
    ("'share-' + share['id']", "share-{share['id']}"),
    ("'share-%s-%d' % (share.id, size)", 'share-{share.id}-{size}'),
    ("'share-%(id)s' % {'id': share.id}", 'share-{share.id}'),
    ("'share-%(id)s' % share", "share-{share['id']}"),
    ("'share-{}-{size}'.format(share.id, size=size)",
     'share-{share.id}-{size}'),
    ("'share-{0[id]}'.format(share)", "share-{share['id']}"),
    ("f'share-{share.id!r}-{size:>4}'", 'share-{share.id}-{size}'),
    ("'-'.join(['share', share.id])", 'share-{share.id}'),
    ("'share-' + PREFIX", 'share-manila'),
    ("'share-' + str(share.get('export_location', {}).get('path'))",
     'share-{...}'),
])
def test_names_are_rebuilt_as_templates(expression, name):
    site = only('''
        from oslo_concurrency import lockutils

        PREFIX = 'manila'

        def extend(share, size):
            with lockutils.lock(%s, external=True):
                share.go()
    ''' % expression)
    assert site.name == name


def test_a_name_held_in_a_local_variable_is_shown_as_its_value():
    site = only('''
        from manila import utils

        def nfs_synchronized(f):
            def wrapped_func(self, *args, **kwargs):
                key = "nfs-%s" % args[0].get("lock_name",
                                             args[0]["instance_id"])

                @utils.synchronized(key, external=True)
                def source_func(self, *args, **kwargs):
                    return f(self, *args, **kwargs)

                return source_func(self, *args, **kwargs)
            return wrapped_func
    ''')
    assert site.name == 'nfs-{...}'
    assert site.where == 'nfs_synchronized.wrapped_func.source_func'
    # utils.synchronized is looked up each time wrapped_func runs: the HA
    # manager's cluster lock, named as manila names it.
    assert (site.verdict, site.runtime) == ('swapped', 'etcd manila-nfs-{...}')
    assert site.reason == (
        "manila's utils.synchronized, looked up each time "
        "nfs_synchronized.wrapped_func runs: the HA manager makes it the "
        "cluster lock manila-nfs-{...}")
    assert site.suggestion == ''


def test_a_name_imported_from_manila_utils_is_not_swapped():
    site = only('''
        from manila.utils import synchronized

        def nfs_synchronized(f):
            def wrapped_func(self, *args, **kwargs):
                key = "nfs-%s" % args[0]["instance_id"]

                @synchronized(key, external=True)
                def source_func(self, *args, **kwargs):
                    return f(self, *args, **kwargs)

                return source_func(self, *args, **kwargs)
            return wrapped_func
    ''')
    # args is an argument of the function the decorator runs in.
    assert (site.verdict, site.runtime) == (
        'replace', 'file manila-nfs-{args[0]["instance_id"]}')
    assert site.suggestion == "hacluster.synchronized('manila-' + key)"


def test_a_with_lock_named_from_arguments_suggests_an_arg_template():
    site = only('''
        from oslo_concurrency import lockutils

        class NetAppLibrary(object):
            def create_share(self, context, share, share_server=None):
                with lockutils.lock('share-%s' % share['id'], external=True):
                    self.client.create(share)
    ''')
    assert (site.where, site.kind, site.usage, site.verdict) == (
        'NetAppLibrary.create_share', 'external', 'context', 'replace')
    assert site.name == "share-{share['id']}"
    assert site.runtime == "file share-{share['id']}"
    assert site.suggestion == (
        "hacluster.synchronized('manila-share-{share[id]}') on "
        "create_share, or @hacluster.synchronized('manila-' + 'share-%s' % "
        "share['id']) on a nested function holding the block")
    assert site.fix is None


def test_a_with_lock_in_a_driver_method_suggests_ha_lock():
    sites = sites_of('''
        from oslo_concurrency import lockutils

        from hacluster.manila import driver as ha_driver

        class NetAppDriver(object):
            def create_share(self, context, share, share_server=None):
                with lockutils.lock('share-%s' % share['id'], external=True):
                    self.client.create(share)

        class HADriver(ha_driver.HAShareDriverMixin, object):
            def extend_share(self, share, new_size, share_server=None):
                with lockutils.lock('share-%s' % share['id'],
                                    lock_file_prefix='manila-',
                                    external=True):
                    self.client.extend(share)
    ''')
    assert [s.verdict for s in sites] == ['replace', 'replace']
    # without the mixin: said, not rewritten
    assert sites[0].suggestion == (
        "with self.ha_lock('share-%s' % share['id']) (mix "
        "hacluster.manila.driver.HAShareDriverMixin into NetAppDriver)")
    assert sites[0].fix is None
    assert sites[1].runtime == "file manila-share-{share['id']}"
    assert sites[1].suggestion == "with self.ha_lock('share-%s' % share['id'])"
    assert sites[1].fix[4] == "self.ha_lock('share-%s' % share['id'])"


def test_literal_braces_in_an_oslo_name_are_escaped_in_the_template():
    site = only('''
        from manila import utils

        @utils.synchronized('share-{id}', external=True)
        def f(id):
            pass
    ''')
    assert site.suggestion == (
        "hacluster.synchronized('manila-share-{{id}}')")


# -- verdicts ----------------------------------------------------------------

def test_nested_functions_are_named_by_their_full_path():
    site = only('''
        from manila import utils

        class GenericShareDriver(object):
            def _attach_volume(self, context, share, instance_id, volume):
                @utils.synchronized(
                    "attach_detach_%s" % instance_id, external=True)
                def do_attach(volume):
                    return self.compute.attach(instance_id, volume)
                return do_attach(volume)
    ''')
    assert site.where == 'GenericShareDriver._attach_volume.do_attach'
    assert site.verdict == 'swapped'
    assert site.runtime == 'etcd manila-attach_detach_{instance_id}'


@pytest.mark.parametrize('setup, expression, culprit', [
    ('', 'self.tag', 'self, instance state'),
    ('', 'CONF.host', 'CONF, a global'),
    ('    vlan = None\n    if share:\n        vlan = share.vlan\n',
     "'vlan-%s' % vlan", 'vlan, a local variable'),
])
@pytest.mark.parametrize('form', ['lockutils.synchronized',
                                  'utils.synchronized'])
def test_a_name_not_built_from_arguments_is_for_review(
        setup, expression, culprit, form):
    site = only('''
from manila import utils
from oslo_concurrency import lockutils
from oslo_config import cfg
CONF = cfg.CONF

def f(self, share):
%s
    @%s(%s, external=True)
    def inner():
        share.go()
    return inner()
''' % (setup, form, expression))
    assert site.verdict == 'review'
    question = ('named from %s: check it names the same resource on every '
                'node' % culprit)
    if form == 'lockutils.synchronized':
        assert site.reason == question
    else:
        # a cluster lock under the HA manager all the same
        assert site.runtime.startswith('etcd manila-')
        assert site.reason.startswith("manila's utils.synchronized, looked "
                                      "up each time f runs")
        assert site.reason.endswith('; but ' + question)
        assert site.suggestion == ''


def test_in_process_oslo_locks_get_their_verdict_from_what_they_guard():
    sites = sites_of('''
        from manila import utils

        class FooShareDriver(object):
            @utils.synchronized('driver-op')
            def create_share(self, context, share):
                self.client.create(share)

        class RestHelper(object):
            @utils.synchronized('rest-session')
            def call(self, url):
                return self.session.post(url)

            @property
            @utils.synchronized('lazy')
            def client(self):
                """The client."""
                if self._client is None:
                    self._client = make_client()
                return self._client

            @utils.synchronized('cache')
            def remember(self, key, value):
                LOG.debug('remember %s', key)
                self._cache[key] = len(value)
                self._cache.setdefault('n', 0)

            def __init__(self):
                self._cache = {}

        class Mediator(object):
            def quota(self, fstore, size):
                @lockutils.synchronized('quota-' + fstore)
                def locked(fstore, size):
                    self.client.setquota(fstore, size)
                locked(fstore, size)
    '''.replace('from manila import utils',
                'from manila import utils\n'
                '        from oslo_concurrency import lockutils'))
    verdicts = [(s.name, s.verdict) for s in sites]
    assert verdicts == [('driver-op', 'replace'), ('rest-session', 'review'),
                        ('lazy', 'keep'), ('cache', 'keep'),
                        ('quota-{fstore}', 'replace')]
    assert sites[0].reason == (
        'in-process lock in a driver method: other nodes run the same code '
        'at the same time; applied at import, before the HA manager makes '
        'manila\'s locks cluster locks')
    assert sites[0].runtime == 'in-process driver-op'
    assert sites[4].reason == ('in-process lock named after a resource: '
                               'other nodes run the same code at the same '
                               'time')
    assert sites[1].reason.startswith(
        'in-process lock around self.session.post() (line 13)')
    assert sites[2].reason == ('lazy one-time set-up of self._client: '
                               'each process builds its own')
    assert sites[3].suggestion == ''
    assert sites[4].suggestion == (
        "hacluster.synchronized('manila-' + 'quota-' + fstore, "
        "external=False)")


def test_threading_locks_are_kept_only_when_guarding_in_process_state():
    sites = sites_of('''
        import threading

        _MOUNTS = {}
        _MOUNTS_LOCK = threading.Lock()

        def mount_lock(path):
            with _MOUNTS_LOCK:
                if path not in _MOUNTS:
                    _MOUNTS[path] = threading.Lock()
                return _MOUNTS[path]

        class Driver(object):
            def __init__(self):
                self._copies = {}
                self._copies_lock = threading.Lock()
                self._org_lock = threading.Lock()
                self._manual = threading.Lock()
                self._given = threading.RLock()
                self._cond = threading.Condition()
                helper(self._given)

            def status(self, share_id):
                with self._copies_lock:
                    return self._copies.get(share_id)

            def org(self, project):
                with self._org_lock:
                    if not self.client.get_org(project):
                        self.client.create_org(project)

            def manual(self):
                self._manual.acquire()

            def wait(self):
                with self._cond:
                    self._cond.wait(1)
    ''')
    by_line = {s.line: (s.verdict, s.reason) for s in sites}
    assert by_line[5] == ('keep', '_MOUNTS_LOCK guards only in-process '
                                  'objects (with blocks at line 8)')
    assert by_line[10] == ('review', 'lock object stored in a container or '
                                     'passed on: cannot see what it guards')
    assert by_line[16][0] == 'keep'
    assert by_line[17] == (
        'review', 'self._org_lock guards a call to self.client.get_org() '
        '(line 29): if that changes backend state, other nodes may do it at '
        'the same time')
    assert by_line[18] == ('review', 'self._manual is acquired by hand (line '
                                     '33): cannot see what it guards')
    assert by_line[19] == ('review', 'self._given is passed on (line 21): '
                                     'cannot see what it guards')
    assert by_line[20][0] == 'keep'
    assert {s.where for s in sites if s.line >= 16} == {'Driver.__init__'}
    assert {s.where for s in sites if s.line < 16} == {'<module>',
                                                       'mount_lock'}


def test_sites_sharing_a_fixed_name_get_the_strictest_verdict():
    sites = sites_of('''
        from manila import utils

        class Layout(object):
            def __init__(self):
                self.used = set()

            @utils.synchronized('vols')
            def pop(self):
                vol = self.backend.pick()
                self.used.add(vol)
                return vol

            @utils.synchronized('vols')
            def push(self, vol):
                self.used.remove(vol)
    ''')
    assert [s.verdict for s in sites] == ['review', 'review']
    assert sites[1].reason.startswith(
        'shares its name with line 8 (review there); on its own: guards '
        'only in-process objects')
    assert sites[1].suggestion == (
        "hacluster.synchronized('manila-vols', external=False)")


# -- errors, files, summary --------------------------------------------------

def test_a_syntax_error_is_an_error_row_and_the_audit_goes_on(tmp_path):
    (tmp_path / 'a_broken.py').write_text('def f(:\n    pass\n')
    (tmp_path / 'b_latin1.py').write_bytes(b'# one\n# two\nx = "caf\xe9"\n')
    (tmp_path / 'c_dangling.py').symlink_to(tmp_path / 'nowhere.py')
    shutil.copy(FIXTURES / 'driver_pkg' / 'driver.py', tmp_path / 'd.py')
    sites, files = audit.audit_paths([str(tmp_path)])
    assert files == 4
    errors = [(os.path.basename(s.file), s.line, s.reason)
              for s in sites if s.verdict == 'error']
    assert errors[0] == ('a_broken.py', 1, 'syntax error: invalid syntax')
    assert errors[1][0] == 'b_latin1.py' and \
        errors[1][2].startswith('cannot decode')
    assert errors[2][0] == 'c_dangling.py' and \
        errors[2][2].startswith('cannot read')
    assert len([s for s in sites if s.verdict != 'error']) == 4


def test_a_coding_cookie_is_honoured(tmp_path):
    (tmp_path / 'old.py').write_bytes(
        b'# -*- coding: latin-1 -*-\n'
        b'from manila import utils\n'
        b'@utils.synchronized("caf\xe9", external=True)\n'
        b'def f():\n'
        b'    pass\n')
    sites, _ = audit.audit_paths([str(tmp_path)])
    assert [(s.line, s.name, s.verdict) for s in sites] == [
        (3, 'caf\u00e9', 'replace')]


def test_a_path_that_does_not_exist_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.py'):
        audit.audit_paths([str(tmp_path / 'nope.py')])


def test_summary_counts_sites_per_kind_and_per_verdict():
    sites, _ = audit.audit_paths([str(FIXTURES / 'driver_pkg')])
    counts = audit.summarize(sites)
    assert counts['sites'] == 6
    assert counts['kind'] == {'external': 2, 'internal': 0,
                              'distributed': 2, 'threading': 2}
    assert counts['verdict'] == {'replace': 2, 'review': 0, 'keep': 2,
                                 'swapped': 0, 'rewrapped': 0,
                                 'already-distributed': 2, 'error': 0}


# -- fix suggestions ---------------------------------------------------------

FIXABLE = '''\
"""A driver."""

import os

from oslo_concurrency import lockutils
from oslo_log import log

from manila import utils as mutils

synchronized = lockutils.synchronized_with_prefix('drv-')


class CafeShareDriver(object):
    """Caf\u00e9: a non-ASCII line before the sites."""

    @mutils.synchronized('create', external=True)
    def create_share(self, context, share):
        return os.path.join('\u00e9', share['id'])

    @synchronized('delete')
    def delete_share(self, context, share):
        self.client.delete(share)

    def _mount(self, server):
        @lockutils.synchronized('mounts_'
                                '%s' % server['id'], external=True)
        def locked():
            self.client.mount(server)
        return locked()
'''


def test_fix_source_switches_replace_decorators_and_still_parses():
    sites = audit.audit_source(FIXABLE, 'drv.py')
    assert [s.verdict for s in sites] == ['replace'] * 3
    fixed = audit.fix_source(FIXABLE, sites)
    ast.parse(fixed)
    # manila's name for each: its cluster lock under the HA manager
    assert "    @ha_synchronized('manila-create')\n" in fixed
    assert "    @ha_synchronized('manila-delete', external=False)\n" in fixed
    assert ("        @ha_synchronized('manila-' + 'mounts_'\n"
            "                                     '%s' % server['id'])\n"
            ) in fixed
    # The import goes where OpenStack's import order wants it.
    assert fixed.index(audit.FIX_IMPORT) < fixed.index(
        'from oslo_concurrency import lockutils')
    assert fixed.count(audit.FIX_IMPORT) == 1
    again = audit.audit_source(fixed, 'drv.py')
    assert [s.verdict for s in again] == ['already-distributed'] * 3
    assert [s.runtime for s in again] == [
        'etcd manila-create', 'etcd manila-delete',
        "etcd manila-mounts_{server['id']}"]


def test_fix_source_leaves_a_source_without_replace_sites_alone():
    source = (FIXTURES / 'driver_pkg' / 'clean.py').read_text()
    sites = audit.audit_source(source, 'clean.py')
    assert audit.fix_source(source, sites) == source
    assert audit.fix_diff('clean.py', source, sites) == ''


# -- the command -------------------------------------------------------------

def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    status = cli_main.main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_the_json_output_has_the_documented_columns():
    status, out, err = run_cli('audit', '-f', 'json',
                               str(FIXTURES / 'driver_pkg'))
    rows = json.loads(out)
    assert status == 1
    assert [list(r) for r in rows] == [list(audit.COLUMNS)] * len(rows)
    assert [(r['line'], r['kind'], r['usage'], r['verdict'])
            for r in rows if r['file'].endswith('driver.py')] == [
        (15, 'threading', 'call', 'keep'),
        (17, 'external', 'decorator', 'replace'),
        (22, 'external', 'context', 'replace'),
        (25, 'distributed', 'decorator', 'already-distributed')]
    assert err.splitlines()[-1] == (
        'hacluster audit: 6 lock sites in 2 files; kind: external 2, '
        'internal 0, distributed 2, threading 2; verdict: replace 2, '
        'review 0, keep 2, swapped 0, rewrapped 0, already-distributed 2; '
        '0 files not audited')


def test_columns_can_be_chosen_and_exit_status_is_0_when_nothing_to_replace():
    status, out, _ = run_cli('audit', '-f', 'value', '-c', 'line', '-c',
                             'verdict', str(FIXTURES / 'driver_pkg' /
                                            'clean.py'))
    assert status == 0
    assert out.splitlines() == ['8 keep', '16 already-distributed']


def test_files_not_audited_are_rows_on_stdout_and_lines_on_stderr(tmp_path):
    (tmp_path / 'broken.py').write_text('x = (\n')
    shutil.copy(FIXTURES / 'driver_pkg' / 'clean.py', tmp_path)
    status, out, err = run_cli('audit', '-f', 'json', str(tmp_path))
    assert status == 1
    errors = [r for r in json.loads(out) if r['verdict'] == 'error']
    assert [(r['line'], r['kind'], r['reason']) for r in errors] == [
        (1, '', "syntax error: '(' was never closed")]
    assert "broken.py:1: syntax error: '(' was never closed" in err
    assert '1 files not audited' in err


def test_a_missing_path_is_named_and_exits_2(tmp_path):
    status, out, err = run_cli('audit', str(tmp_path / 'missing'))
    assert status == 2
    assert out == ''
    assert 'no such file or directory: %s' % (tmp_path / 'missing') in err


def test_fix_suggestions_print_a_diff_that_applies_and_parses(
        tmp_path, monkeypatch):
    (tmp_path / 'drv').mkdir()
    (tmp_path / 'drv' / 'fixable.py').write_text(FIXABLE, encoding='utf-8')
    shutil.copy(FIXTURES / 'driver_pkg' / 'driver.py', tmp_path / 'drv')
    before = {p.name: p.read_bytes() for p in (tmp_path / 'drv').iterdir()}
    monkeypatch.chdir(tmp_path)
    status, diff, err = run_cli('audit', '--fix-suggestions', 'drv')
    assert status == 1
    assert 'hacluster audit: 7 lock sites' in err
    assert {p.name: p.read_bytes() for p in (tmp_path / 'drv').iterdir()} \
        == before, 'the audit wrote a file'
    assert diff.startswith('--- a/drv/driver.py\n+++ b/drv/driver.py\n')
    assert '+++ b/drv/fixable.py\n' in diff
    # The with-statement site is not rewritten: only decorators are.
    assert "with lockutils.lock('fixture-share-%s'" not in diff
    (tmp_path / 'fix.diff').write_text(diff, encoding='utf-8')
    subprocess.run(['git', 'apply', 'fix.diff'], cwd=tmp_path, check=True)
    for path in (tmp_path / 'drv').iterdir():
        ast.parse(path.read_text(encoding='utf-8'))
    status, out, _ = run_cli('audit', '-f', 'value', '-c', 'verdict', 'drv')
    assert out.split().count('replace') == 1      # the with-statement


def test_the_console_script_runs_the_audit():
    script = os.path.join(os.path.dirname(sys.executable), 'hacluster')
    proc = subprocess.run(
        [script, 'audit', '-f', 'csv', '-c', 'verdict',
         str(FIXTURES / 'driver_pkg' / 'driver.py')],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.split() == ['"verdict"', '"keep"', '"replace"',
                                   '"replace"', '"already-distributed"']
    help_proc = subprocess.run([script, 'help', 'audit'],
                               capture_output=True, text=True, timeout=60)
    assert 'Find the lock sites of a share driver' in help_proc.stdout


def test_constants_in_the_module_or_class_body_become_literal_text():
    sites = sites_of('''
        from manila import utils

        PREFIX = 'drv'

        class FooShareDriver(object):
            LOCK = 'pool'

            @utils.synchronized('%s-%s' % (PREFIX, LOCK), external=True)
            def create_share(self, context, share):
                pass

            @utils.synchronized(f'{PREFIX}-x', external=True)
            def delete_share(self, context, share):
                pass
    ''')
    assert [(s.name, s.verdict, s.suggestion) for s in sites] == [
        ('drv-pool', 'replace', "hacluster.synchronized('manila-drv-pool')"),
        ('drv-x', 'replace', "hacluster.synchronized('manila-drv-x')")]


def test_a_class_attribute_threading_lock_is_followed_through_self():
    site = only('''
        import threading

        class Cache(object):
            _lock = threading.RLock()
            _items = {}

            def put(self, key, value):
                with self._lock:
                    self._items[key] = value
    ''')
    assert (site.where, site.verdict) == ('Cache', 'keep')


FPOLICY = '''
    from manila import coordination
    from manila import utils
    from oslo_concurrency import lockutils

    class Library(object):
        def create(self, vserver):
            @%s('fpolicy-%%s' %% vserver, external=True)
            def locked():
                self.client.create_fpolicy(vserver)
            locked()

        def delete(self, vserver):
            @coordination.synchronized('fpolicy-%%s' %% vserver)
            def locked():
                self.client.delete_fpolicy(vserver)
            locked()
'''


def test_an_oslo_lock_named_like_a_coordination_lock_is_pointed_out():
    # manila's own lock: under the HA manager the same cluster lock
    sites = sites_of(FPOLICY % 'utils.synchronized')
    assert [(s.kind, s.verdict) for s in sites] == [
        ('external', 'swapped'), ('distributed', 'already-distributed')]
    assert [s.runtime for s in sites] == [
        'etcd manila-fpolicy-{vserver}'] * 2
    assert sites[0].reason.endswith(
        '; the distributed lock at line 14 has the same name: under the HA '
        'manager both are the cluster lock manila-fpolicy-{vserver} (with '
        'manila\'s own manager the two do not exclude each other)')
    assert sites[1].reason.endswith(
        '; the external lock at line 8 has the same name: under the HA '
        'manager both are the cluster lock manila-fpolicy-{vserver} (with '
        'manila\'s own manager the two do not exclude each other)')
    # Audit of several files: the note is added once.
    assert audit.unify(sites) == sites and sites[0].reason.count('; the') == 1

    # an oslo lock the HA manager does not swap: they exclude nothing
    sites = sites_of(FPOLICY % 'lockutils.synchronized')
    assert [(s.kind, s.verdict) for s in sites] == [
        ('external', 'replace'), ('distributed', 'already-distributed')]
    assert sites[0].reason.endswith(
        '; the distributed lock at line 14 is the cluster lock '
        'manila-fpolicy-{vserver} under the HA manager, this one is '
        'node-local: the two do not exclude each other')
    assert sites[1].reason.endswith(
        '; the external lock at line 8 has the same name but is node-local: '
        'the two do not exclude each other')
    # the suggested decorator takes that cluster lock
    assert sites[0].suggestion == (
        "hacluster.synchronized('manila-' + 'fpolicy-%s' % vserver)")


# -- what the HA manager makes of each lock -----------------------------------

def test_only_manilas_lock_looked_up_at_call_time_is_swapped():
    sites = sites_of('''
        from manila import utils
        from manila.utils import synchronized

        class FooShareDriver(object):
            def __init__(self):
                self._locked = utils.synchronized('init')(self._go)

            @utils.synchronized('at-import', external=True)
            def create_share(self, context, share):
                self.client.create(share)

            def delete_share(self, context, share):
                @utils.synchronized('call-time', external=True)
                def locked():
                    self.client.delete(share)

                @synchronized('imported', external=True)
                def bound():
                    self.client.delete(share)
                locked()
    ''')
    by_name = {s.name: s for s in sites}
    assert {n: (s.verdict, s.runtime) for n, s in by_name.items()} == {
        'init': ('replace', 'in-process init'),
        'at-import': ('replace', 'file manila-at-import'),
        'call-time': ('swapped', 'etcd manila-call-time'),
        'imported': ('replace', 'file manila-imported')}
    assert by_name['init'].reason.endswith(
        "; applied in __init__, before the HA manager makes manila's locks "
        "cluster locks")
    assert by_name['at-import'].reason == (
        "file lock: excludes processes of this node only; applied at "
        "import, before the HA manager makes manila's locks cluster locks")
    # the fix: the cluster lock manila's call-time sites take
    assert by_name['at-import'].suggestion == (
        "hacluster.synchronized('manila-at-import')")


SERVICE_INSTANCE = '''
from manila import utils


class NeutronNetworkHelper(object):

    @utils.synchronized(
        "service_instance_setup_and_teardown_network_for_instance",
        external=True)
    def setup_network(self, network_info):
        self.neutron_api.create_port(network_info)

    @utils.synchronized("service_instance_plug_interface_in_host",
                        external=True)
    def _plug_interface_in_host(self, interface_name, device, port):
        self.vif_driver.plug(interface_name, port['id'])

    @utils.synchronized("service_instance_get_key", external=True)
    def _get_key(self, context):
        return self.compute_api.keypair_list(context)
'''


def test_import_time_locks_the_manager_rewraps_or_leaves_local():
    sites = audit.audit_source(
        SERVICE_INSTANCE, '/x/manila/share/drivers/service_instance.py')
    assert [(s.line, s.verdict, s.runtime) for s in sites] == [
        (7, 'rewrapped', 'etcd manila-service_instance_setup_and_teardown_'
                         'network_for_instance'),
        (13, 'keep', 'file manila-service_instance_plug_interface_in_host'),
        # (_get_key is ServiceInstanceManager's, not this class's)
        (18, 'replace', 'file manila-service_instance_get_key')]
    assert sites[0].reason == (
        'applied at import, so it captured the file lock; the HA manager '
        'decorates NeutronNetworkHelper.setup_network again with the '
        'cluster lock manila-service_instance_setup_and_teardown_network_'
        'for_instance (hacluster.manila.locks.IMPORT_TIME_LOCKS)')
    assert sites[1].reason == (
        "file lock on this host's own state (it plugs a network interface "
        "into this host, whose interfaces are its own): the HA manager "
        "leaves it node-local on purpose")
    assert [s.suggestion for s in sites[:2]] == ['', '']
    # the same code elsewhere is not what the manager re-wraps
    elsewhere = audit.audit_source(SERVICE_INSTANCE, 'mydriver/helper.py')
    assert [s.verdict for s in elsewhere] == ['replace'] * 3


def test_ha_lock_calls_are_listed_as_cluster_locks():
    sites = sites_of('''
        from hacluster.manila import driver

        class MyDriver(driver.HAShareDriverMixin, object):
            def extend_share(self, share, new_size, share_server=None):
                with self.ha_lock('pool-%s' % share['pool']):
                    self.client.extend(share, new_size)
                with self.ha_lock('snapshots', shared=True):
                    pass
    ''')
    assert [(s.kind, s.usage, s.name, s.runtime, s.verdict) for s in sites] \
        == [('distributed', 'context', "pool-{share['pool']}",
             "etcd manila-pool-{share['pool']}", 'already-distributed'),
            ('distributed', 'context', 'snapshots', 'etcd manila-snapshots',
             'already-distributed')]
    assert sites[0].reason == (
        "HAShareDriverMixin.ha_lock: the cluster lock "
        "manila-pool-{share['pool']} under the HA manager; manila's own file "
        "lock of that name in single-node mode")
    assert sites[1].reason.startswith('HAShareDriverMixin.ha_lock (shared)')


def test_a_hacluster_lock_is_never_said_to_be_on_etcd_unqualified():
    sites = sites_of('''
        import hacluster

        @hacluster.synchronized('manila-a')
        def f():
            pass

        @hacluster.synchronized('b', external=False)
        def g():
            pass

        @hacluster.synchronized('c', coordinator=lambda: COORD)
        def h():
            pass
    ''')
    assert [s.runtime for s in sites] == [
        'etcd manila-a', 'etcd b', 'coordinator c']
    assert sites[0].reason == (
        'hacluster lock: the cluster lock manila-a in manila-share under the '
        'HA manager, which sets the default coordinator; in a process '
        'without one (single-node mode, any other program) an '
        'oslo.concurrency file lock')
    assert sites[1].reason.endswith('an oslo.concurrency in-process lock')
    assert sites[2].reason.startswith(
        'hacluster lock on the coordinator given (coordinator=)')
    assert not any(s.reason == 'hacluster lock on etcd' for s in sites)


def test_a_hacluster_lock_without_manilas_prefix_is_another_lock():
    sites = sites_of('''
        import hacluster
        from manila import utils

        def create(share):
            @utils.synchronized('pool', external=True)
            def locked():
                share.go()
            locked()

        @hacluster.synchronized('pool')
        def delete(share):
            share.gone()

        @hacluster.synchronized('manila-pool')
        def extend(share):
            share.grow()
    ''')
    assert [(s.name, s.verdict, s.runtime) for s in sites] == [
        ('pool', 'swapped', 'etcd manila-pool'),
        ('pool', 'already-distributed', 'etcd pool'),
        ('manila-pool', 'already-distributed', 'etcd manila-pool')]
    assert sites[1].reason.endswith(
        '; the external lock at line 6 has the same name but takes the '
        'cluster lock manila-pool, this one pool: the two do not exclude '
        'each other')
    assert sites[2].reason.endswith(
        '; the external lock at line 6 has the same name: under the HA '
        'manager both are the cluster lock manila-pool')


def test_a_node_local_lock_sharing_a_name_with_a_swapped_one_is_replaced():
    sites = sites_of('''
        from manila import utils

        class Layout(object):
            @utils.synchronized('vols')
            def pop(self):
                return self.used.pop()

            def push(self, vol):
                @utils.synchronized('vols')
                def locked():
                    self.backend.give(vol)
                locked()
    ''')
    assert [(s.verdict, s.runtime) for s in sites] == [
        ('replace', 'in-process vols'), ('swapped', 'etcd manila-vols')]
    assert sites[0].reason.startswith(
        'shares its name with line 10 (swapped there: the cluster lock '
        'manila-vols under the HA manager): this one must take it too, or '
        'the two no longer exclude each other; on its own: in-process lock '
        'around self.used.pop() (line 7)')
    assert sites[0].suggestion == (
        "hacluster.synchronized('manila-vols', external=False)")
    # once fixed, both are that cluster lock
    fixed = audit.fix_source(textwrap.dedent('''
        from manila import utils

        class Layout(object):
            @utils.synchronized('vols')
            def pop(self):
                return self.used.pop()

            def push(self, vol):
                @utils.synchronized('vols')
                def locked():
                    self.backend.give(vol)
                locked()
    '''), sites)
    again = audit.audit_source(fixed, 'drv.py')
    assert {s.runtime for s in again} == {'etcd manila-vols'}


HA_DRIVER = '''\
from oslo_concurrency import lockutils

from hacluster.manila import driver as ha_driver
from manila import utils


class PoolDriver(ha_driver.HAShareDriverMixin, object):

    @utils.synchronized('pool', external=True)
    def create_share(self, context, share, share_server=None):
        return self.client.create(share)

    def extend_share(self, share, new_size, share_server=None):
        with lockutils.lock('share-%s' % share['id'],
                            lock_file_prefix='manila-', external=True):
            self.client.extend(share, new_size)
'''


def test_the_fix_in_a_mixin_driver_takes_manilas_cluster_locks():
    sites = audit.audit_source(HA_DRIVER, 'drv.py')
    assert [s.verdict for s in sites] == ['replace', 'replace']
    fixed = audit.fix_source(HA_DRIVER, sites)
    ast.parse(fixed)
    assert "    @ha_synchronized('manila-pool')\n" in fixed
    assert ("        with self.ha_lock('share-%s' % share['id']):\n"
            in fixed)
    again = audit.audit_source(fixed, 'drv.py')
    assert [(s.verdict, s.runtime) for s in again] == [
        ('already-distributed', 'etcd manila-pool'),
        ('already-distributed', "etcd manila-share-{share['id']}")]
    # only a with-block fixed: no import added
    only_with = HA_DRIVER.replace(
        "    @utils.synchronized('pool', external=True)\n", '')
    fixed = audit.fix_source(only_with, audit.audit_source(only_with, 'd'))
    assert audit.FIX_IMPORT not in fixed
    assert 'self.ha_lock(' in fixed
