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

"""Where a manila-share RPC operation spends its time (benchmarks/manila.py).

Loaded into every manila-share process of the benchmark -- manila's own
``ShareManager`` and hacluster's ``HAShareManager`` alike -- through a
``sitecustomize`` the benchmark puts on ``PYTHONPATH`` (see
:func:`sitecustomize_dir`): nothing in hacluster or manila changes. It
wraps, as their modules are imported:

* oslo.messaging's ``RPCDispatcher._do_dispatch``: one record per RPC
  operation named in ``HACLUSTER_TRACE_METHODS`` (default
  ``create_share_instance``), appended as one JSON line to
  ``$HACLUSTER_TRACE`` when the handler returns;
* the time the handler's thread spends in each category, exclusive (an
  inner category pauses the outer one; whatever is left is ``manila``,
  manila's own Python between the calls below):

  ``claim_open``, ``claim_finish``, ``claim_end``
             hacluster's claim (``hacluster.claims``): its record written
             before the operation, marked finishing before the final
             write, removed after it;
  ``lock``   cluster locks: acquire and release (``hacluster.locks``);
  ``fence``  the fenced database layer's own work: its conditional UPDATE
             (``cas_status``), the row ids it reads once, its checks
             (``hacluster.manila.claims.FencedDB``);
  ``db``     manila's database API (``manila.db.api``, every function);
  ``driver`` the share driver's ``create_share``/``delete_share``
             (the benchmark's driver sleeps there);
  ``etcd``   etcd requests outside a claim or lock (member reads...);

* etcd requests (``hacluster.etcd.Client.call``), counted per operation
  (those its thread sends, by gateway path) and per process;
* when the final status write happened (``final``): the ``status`` write
  of the operation's own row that leaves ``creating``/``deleting`` (what
  a user waits for).

Each record::

    {"method": ..., "id": <share instance id>, "pid": ..., "start": <unix>,
     "final": <unix>, "end": <unix>, "s": {"claim_open": 0.004, ...},
     "cpu": {"claim_open": 0.0008, ...} (the thread's CPU time in each),
     "etcd": {"claim_open /kv/put": 1, ...}, "etcd_total_process": 123,
     "calls": {"share_instance_update": [2, 0.011], ...}}
"""

import functools
import importlib.abc
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time

_local = threading.local()
_lock = threading.Lock()
_process_requests = [0]

CATEGORIES = ('claim_open', 'claim_finish', 'claim_end', 'lock', 'fence',
              'db', 'driver', 'etcd', 'manila')
_CLAIM_PARTS = {'_open': 'claim_open', '_finish': 'claim_finish',
                '_close': 'claim_end', '_record_late': 'claim_end'}
_METHODS = frozenset(
    (os.environ.get('HACLUSTER_TRACE_METHODS') or
     'create_share_instance').split(','))
_TRANSITIONAL = ('creating', 'deleting')
#: categories whose etcd requests count as theirs (not as ``etcd``)
_ETCD_OWNERS = frozenset(('claim_open', 'claim_finish', 'claim_end', 'lock'))


def sitecustomize_dir():
    """A new directory holding a ``sitecustomize.py`` that loads this
    module: put it first on ``PYTHONPATH`` of the traced processes."""
    path = tempfile.mkdtemp(prefix='hacluster-trace-')
    with open(os.path.join(path, 'sitecustomize.py'), 'w') as f:
        # (by its path: benchmarks/ on sys.path would shadow manila with
        # benchmarks/manila.py)
        f.write('import importlib.util\n'
                'spec = importlib.util.spec_from_file_location(\n'
                '    "_manila_trace", %r)\n'
                'module = importlib.util.module_from_spec(spec)\n'
                'spec.loader.exec_module(module)\n'
                'module.install()\n' % os.path.abspath(__file__))
    return path


class _Op:
    __slots__ = ('method', 'id', 'start', 'final', 'spent', 'stack',
                 'since', 'etcd', 'calls', 'cpu', 'cpu_since')

    def __init__(self, method, ident):
        self.method = method
        self.id = ident
        self.start = time.time()
        self.final = None
        self.spent = dict.fromkeys(CATEGORIES, 0.0)
        self.stack = ['manila']
        self.since = time.perf_counter()
        #: the same, in this thread's CPU time
        self.cpu = dict.fromkeys(CATEGORIES, 0.0)
        self.cpu_since = time.thread_time()
        self.etcd = {}
        #: ``{name: [calls, seconds]}`` of the database and etcd calls
        self.calls = {}


def _enter(category):
    op = getattr(_local, 'op', None)
    if op is None:
        return None
    now = time.perf_counter()
    cpu = time.thread_time()
    op.spent[op.stack[-1]] += now - op.since
    op.cpu[op.stack[-1]] += cpu - op.cpu_since
    op.stack.append(category)
    op.since, op.cpu_since = now, cpu
    return op


def _leave(op):
    now = time.perf_counter()
    cpu = time.thread_time()
    category = op.stack.pop()
    op.spent[category] += now - op.since
    op.cpu[category] += cpu - op.cpu_since
    op.since, op.cpu_since = now, cpu


def _timed(category, fn, detail=False):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        op = _enter(category)
        if op is None:
            return fn(*args, **kwargs)
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _leave(op)
            if detail:
                _count(op, fn.__name__, time.perf_counter() - began)
    wrapper._hacluster_traced = True
    return wrapper


def _count(op, name, seconds):
    entry = op.calls.setdefault(name, [0, 0.0])
    entry[0] += 1
    entry[1] += seconds


def _wrap(owner, name, category):
    fn = getattr(owner, name, None)
    if fn is None or getattr(fn, '_hacluster_traced', False):
        return
    setattr(owner, name, _timed(category, fn))


# -- what is wrapped, per module ---------------------------------------------

def _patch_dispatcher(module):
    cls = module.RPCDispatcher
    original = cls._do_dispatch

    @functools.wraps(original)
    def _do_dispatch(self, endpoint, method, ctxt, args):
        if method not in _METHODS or getattr(_local, 'op', None) is not None:
            return original(self, endpoint, method, ctxt, args)
        ident = None
        for name in ('share_instance_id', 'share_id', 'snapshot_id'):
            if name in args:
                ident = args[name]
                break
        if ident is None and isinstance(args.get('share_instance'), dict):
            ident = args['share_instance'].get('id')
        op = _local.op = _Op(method, ident)
        try:
            return original(self, endpoint, method, ctxt, args)
        finally:
            _leave(op)
            _local.op = None
            _write(op)
    cls._do_dispatch = _do_dispatch


def _write(op):
    path = os.environ.get('HACLUSTER_TRACE')
    if not path:
        return
    line = json.dumps({
        'method': op.method, 'id': op.id, 'pid': os.getpid(),
        'start': op.start, 'final': op.final, 'end': time.time(),
        's': {k: round(v, 6) for k, v in op.spent.items()},
        'cpu': {k: round(v, 6) for k, v in op.cpu.items()},
        'etcd': op.etcd, 'etcd_total_process': _process_requests[0],
        'calls': {k: [n, round(t, 6)] for k, (n, t) in op.calls.items()},
    }) + '\n'
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _patch_etcd_client(module):
    cls = module.Client
    original = cls.call

    @functools.wraps(original)
    def call(self, path, payload, *args, **kwargs):
        with _lock:
            _process_requests[0] += 1
        op = getattr(_local, 'op', None)
        if op is None:
            return original(self, path, payload, *args, **kwargs)
        inner = op.stack[-1] in _ETCD_OWNERS
        # by purpose: "claim_open /kv/put", "lock /kv/txn", "etcd /kv/range"
        key = '%s %s' % (op.stack[-1] if inner else 'etcd', path)
        op.etcd[key] = op.etcd.get(key, 0) + 1
        if not inner:
            _enter('etcd')
        began = time.perf_counter()
        try:
            return original(self, path, payload, *args, **kwargs)
        finally:
            if not inner:
                _leave(op)
            _count(op, 'etcd ' + path, time.perf_counter() - began)
    call._hacluster_traced = True
    cls.call = call


def _patch_claims(module):
    for name, category in _CLAIM_PARTS.items():
        _wrap(module.ClaimBook, name, category)


def _patch_locks(module):
    for name in ('acquire', 'release'):
        _wrap(module.Lock, name, 'lock')


def _patch_manila_claims(module):
    module.cas_status = _timed('fence', module.cas_status, detail=True)
    _wrap(module.FencedDB, '_write', 'fence')
    _wrap(module._Operation, 'row_ids', 'fence')


def _patch_db_api(module):
    for name, fn in list(vars(module).items()):
        if name.startswith('_') or not callable(fn) or \
                getattr(fn, '__module__', None) != module.__name__:
            continue
        wrapped = _timed('db', fn, detail=True)
        if 'update' in name:
            wrapped = _noting_final(wrapped)
        setattr(module, name, wrapped)


def _noting_final(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        op = getattr(_local, 'op', None)
        if op is not None and op.final is None and len(args) > 1 and \
                args[1] == op.id:
            values = kwargs.get('values') or (
                args[2] if len(args) > 2 and isinstance(args[2], dict)
                else None)
            status = (values or {}).get('status')
            if status is not None and status not in _TRANSITIONAL:
                op.final = time.time()
        return result
    wrapper._hacluster_traced = True
    return wrapper


def _patch_driver(module):
    for name in ('create_share', 'delete_share'):
        _wrap(module.HADummyDriver, name, 'driver')


_PATCHES = {
    'oslo_messaging.rpc.dispatcher': _patch_dispatcher,
    'hacluster.etcd.client': _patch_etcd_client,
    'hacluster.claims': _patch_claims,
    'hacluster.locks': _patch_locks,
    'hacluster.manila.claims': _patch_manila_claims,
    'manila.db.api': _patch_db_api,
    'hacluster.testing.manila_driver': _patch_driver,
}


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, patch)
                return spec
        return None


def install():
    """Wrap the modules above as they are imported (already imported ones
    now). Only in processes with ``$HACLUSTER_TRACE`` set."""
    if not os.environ.get('HACLUSTER_TRACE'):
        return
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _Finder())
