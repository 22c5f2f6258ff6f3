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

"""The verdict rules, one function per lock family: each fills in a site's
kind, name, verdict and reason (and, for oslo locks, the proposal from
:mod:`hacluster.audit.suggestions`) as :mod:`hacluster.audit` documents
them, reading the module's :class:`~hacluster.audit.calls._Auditor` for
its parents, lock names and guard.
"""

import ast

from hacluster.audit.guarded import _CONDITION_METHODS
from hacluster.audit.guarded import _Guard
from hacluster.audit.naming import _name_arg
from hacluster.audit.naming import _origin
from hacluster.audit.naming import _show
from hacluster.audit import runtime as _runtime
from hacluster.audit.scopes import _lookup
from hacluster.audit.suggestions import _suggest

# The public methods of manila 23's ShareDriver: a lock on one of these is
# a lock on a driver operation.
_DRIVER_OPERATIONS = frozenset('''
    allocate_admin_network allocate_network allow_access
    check_for_setup_error check_update_share_server_network_allocations
    check_update_share_server_security_service
    choose_share_server_compatible_with_share
    choose_share_server_compatible_with_share_group connection_get_info
    create_backup create_backup_continue create_replica
    create_replicated_snapshot create_share create_share_from_snapshot
    create_share_group create_share_group_from_share_group_snapshot
    create_share_group_snapshot create_snapshot deallocate_network
    delete_backup delete_replica delete_replicated_snapshot delete_share
    delete_share_group delete_share_group_snapshot delete_snapshot
    deny_access do_setup ensure_share ensure_shares extend_share
    get_backend_info get_share_server_network_info get_share_server_pools
    get_share_stats get_share_status manage_existing
    manage_existing_snapshot manage_existing_snapshot_with_server
    manage_existing_with_server manage_server migration_cancel
    migration_check_compatibility migration_complete migration_continue
    migration_get_progress migration_start promote_replica restore_backup
    restore_backup_continue revert_to_replicated_snapshot revert_to_snapshot
    setup_server share_server_migration_cancel
    share_server_migration_check_compatibility
    share_server_migration_complete share_server_migration_continue
    share_server_migration_get_progress share_server_migration_start
    shrink_share snapshot_update_access teardown_server transfer_accept
    unmanage unmanage_server unmanage_snapshot unmanage_snapshot_with_server
    unmanage_with_server update_access update_admin_network_allocation
    update_network_allocation update_replica_state
    update_replicated_snapshot update_share_from_metadata
    update_share_network_subnet_from_metadata
    update_share_server_network_allocations
    update_share_server_security_service update_share_usage_size
'''.split())


def _keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _judge_distributed(auditor, site, call, scope, flavour):
    """Coordination and hacluster locks, ``ha_lock``: cluster locks under
    the HA manager (a hacluster lock without a coordinator only there)."""
    site.kind = 'distributed'
    site.verdict = 'already-distributed'
    site.family = flavour
    if flavour == 'hacluster':
        names = [a for a in call.args if not isinstance(a, ast.Starred)]
        shown = [_show(auditor.names.parts(n, scope)) for n in names]
        site.name = ', '.join(shown)
        site.cluster = tuple(shown)
        external = _keyword(call, 'external')
        local = 'in-process' if isinstance(external, ast.Constant) and \
            external.value is False else 'file'
        if _keyword(call, 'coordinator') is not None:
            site.runtime = 'coordinator ' + site.name
            site.reason = ('hacluster lock on the coordinator given '
                           '(coordinator=): a cluster lock when that is an '
                           'etcd coordinator')
        else:
            site.runtime = 'etcd ' + site.name
            site.reason = (
                'hacluster lock: the cluster lock %s in manila-share under '
                'the HA manager, which sets the default coordinator; in a '
                'process without one (single-node mode, any other program) '
                'an oslo.concurrency %s lock' % (site.name, local))
        return
    name = _name_arg(call, 'name' if flavour == 'ha_lock' else 'lock_name')
    if name is not None:
        site.name = _show(auditor.names.parts(name, scope))
        site.cluster = _runtime.cluster_name(site.name)
        site.runtime = 'etcd ' + site.cluster
    if flavour == 'ha_lock':
        shared = _keyword(call, 'shared')
        mode = ' (shared)' if shared is not None and not (
            isinstance(shared, ast.Constant) and shared.value is False) \
            else ''
        site.reason = ("HAShareDriverMixin.ha_lock%s: the cluster lock %s "
                       "under the HA manager; manila's own file lock of "
                       "that name in single-node mode"
                       % (mode, site.cluster or _runtime.PREFIX + '<name>'))
    else:
        site.reason = ("manila coordination lock: the cluster lock %s under "
                       "the HA manager, which replaces manila's lock "
                       "coordinator; with manila's own manager a tooz lock "
                       "on [coordination] backend_url"
                       % (site.cluster or _runtime.PREFIX + '<name>'))


def _judge_oslo(auditor, site, call, scope, flavour, usage, region,
                parent, swappable=False, prefix=None):
    """oslo.concurrency locks (manila's utils.synchronized among them):
    first what the HA manager makes of it (:mod:`hacluster.audit.runtime`),
    then, for a lock that stays node-local, what it guards."""
    external = _external(call, flavour)
    site.external = external
    site.kind = 'internal' if external is False else 'external'
    name_node = _name_arg(call, 'name')
    if name_node is None:
        site.verdict = 'review'
        site.reason = 'no lock name given as written: cannot tell'
        site.runtime = 'file' if external is not False else 'in-process'
        return
    # The scope the name is evaluated in: for a decorator, the one
    # enclosing the decorated function (already ``scope``).
    parts = auditor.names.parts(name_node, scope)
    display = parts
    if isinstance(name_node, ast.Name):
        owner = _lookup(scope, name_node.id)
        values = owner.bindings().get(name_node.id) if owner else None
        if owner is not None and name_node.id not in owner.params and \
                values and len(values) == 1 and values[0] is not None:
            display = auditor.names.parts(values[0], owner)
    site.name = _show(display)
    site.cluster = _runtime.cluster_name(site.name)
    origin = _origin(parts, scope)
    decorated = parent.name if usage == 'decorator' else None
    early = _runtime.too_early(scope)
    if swappable and early is None:
        # manila's own lock, looked up at each call: swapped
        site.runtime = 'etcd ' + site.cluster
        how = ("manila's utils.synchronized, looked up each time %s runs: "
               "the HA manager makes it the cluster lock %s"
               % (_runtime_scope(scope), site.cluster))
        if origin:
            site.verdict = 'review'
            site.reason = ('%s; but named from %s: check it names the same '
                           'resource on every node' % (how, origin))
        else:
            site.verdict = 'swapped'
            site.reason = how
        return
    site.proposal = _suggest(auditor, call, name_node, parts, usage, scope,
                             external, flavour)
    if usage == 'decorator' and swappable:
        entry = _runtime.rewrapped(auditor.filename, scope, decorated,
                                   site.name)
        if entry is not None:
            site.runtime = 'etcd ' + site.cluster
            site.verdict = 'rewrapped'
            site.reason = (
                'applied at import, so it captured the file lock; the HA '
                'manager decorates %s.%s again with the cluster lock %s '
                '(hacluster.manila.locks.IMPORT_TIME_LOCKS)'
                % (entry[1], entry[2], site.cluster))
            return
        why = _runtime.local_on_purpose(auditor.filename, scope, decorated,
                                        site.name)
        if why is not None:
            site.runtime = 'file ' + _runtime.file_name(prefix, site.name)
            site.verdict = 'keep'
            site.reason = ('file lock on this host\'s own state (%s): the HA '
                           'manager leaves it node-local on purpose' % why)
            return
    if external is False:
        site.runtime = 'in-process ' + site.name
    else:
        site.runtime = 'file ' + _runtime.file_name(prefix, site.name)
    # said of manila's own lock where the HA manager cannot swap it
    unswapped = ''
    if swappable:
        unswapped = ('; applied %s, before the HA manager makes manila\'s '
                     'locks cluster locks' % early)
    outside = None
    if external is not True and region is not None:
        lazy = _Guard.lazy_target(region)
        if lazy:
            site.verdict = 'keep'
            site.reason = ('lazy one-time set-up of %s: each process '
                           'builds its own' % lazy)
            return
        outside = auditor.guard.first_outside_call(region)
        if outside is None:
            site.verdict = 'keep'
            site.reason = ('guards only in-process objects (containers, '
                           'attributes, logging)')
            return
    if external is None:
        site.verdict = 'review'
        site.reason = 'external= is not a literal: cannot tell the kind'
        return
    if origin:
        site.verdict = 'review'
        site.reason = ('named from %s: check it names the same resource '
                       'on every node' % origin)
        return
    resource = any(not isinstance(p, str) for p in parts)
    if external:
        site.verdict = 'replace'
        site.reason = ('file lock: excludes processes of this node only'
                       + unswapped)
    elif resource or _in_driver(scope, parent, usage):
        site.verdict = 'replace'
        site.reason = ('in-process lock %s: other nodes run the same '
                       'code at the same time' % (
                           'named after a resource' if resource
                           else 'in a driver method') + unswapped)
    else:
        site.verdict = 'review'
        if outside:
            site.reason = (
                'in-process lock around %s (line %d): replace it if '
                'that changes backend or DB state, keep it if it only '
                'uses this process\'s own objects' % (outside[1],
                                                      outside[0]))
        else:
            site.reason = ('in-process lock object: cannot see what '
                           'it guards')
        return


def _runtime_scope(scope):
    """The function a call-time lock is evaluated in, for a reason."""
    while scope is not None and scope.kind != 'function':
        scope = scope.parent
    return scope.qualname if scope is not None else '<module>'


def _external(call, flavour):
    """``external=`` of an oslo call: True, False, or None when it is
    not a literal."""
    if flavour == 'external':
        return True
    if flavour == 'internal':
        return False
    value = None
    for kw in call.keywords:
        if kw.arg == 'external':
            value = kw.value
    if value is None and flavour in ('synchronized', 'lock') and \
            len(call.args) > 2:
        value = call.args[2]
    if value is None:
        return False
    if isinstance(value, ast.Constant) and isinstance(value.value,
                                                      bool):
        return value.value
    return None


def _in_driver(scope, parent, usage):
    """Whether the lock is in driver code: in a class named ...Driver,
    or in (or on) a function named like a ShareDriver operation."""
    names = []
    if usage == 'decorator':
        names.append(parent.name)
    current = scope
    while current is not None:
        if current.kind == 'function':
            names.append(current.name)
        if current.kind == 'class' and current.name.endswith('Driver'):
            return True
        current = current.parent
    return any(n in _DRIVER_OPERATIONS for n in names)


def _judge_threading(auditor, site, call, scope, usage):
    """``threading`` locks: one stored in a name or a ``self`` attribute is
    judged by the ``with`` blocks that use it; any other is ``review``."""
    site.kind = 'threading'
    site.runtime = 'in-process'
    parent = auditor.parents.get(call)
    target = None
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
        target = parent.targets[0]
    elif isinstance(parent, ast.AnnAssign):
        target = parent.target
    key = None
    if isinstance(target, ast.Name):
        # A class attribute is used as self.X / cls.X.
        key = ('attr' if scope.kind == 'class' else 'name', target.id)
    elif isinstance(target, ast.Attribute) and \
            isinstance(target.value, ast.Name) and \
            target.value.id in ('self', 'cls'):
        key = ('attr', target.attr)
    if usage == 'context':
        site.verdict = 'review'
        site.reason = 'a new lock at every entry: it excludes nothing'
        return
    if key is None:
        site.verdict = 'review'
        site.reason = ('lock object stored in a container or passed on: '
                       'cannot see what it guards')
        return
    _judge_stored_lock(auditor, site, target, scope, key)


def _judge_stored_lock(auditor, site, target, scope, key):
    """A threading lock stored under ``key`` (``('name', n)`` or
    ``('attr', a)``): every ``with`` block using it is what it guards."""
    shown = auditor.names.text(target)
    if key[0] == 'attr':
        area = scope
        while area is not None and area.kind != 'class':
            area = area.parent
        if area is None:
            site.verdict = 'review'
            site.reason = ('%s is set outside a class: cannot see what '
                           'it guards' % shown)
            return

        def matches(node):
            return isinstance(node, ast.Attribute) and \
                node.attr == key[1] and \
                isinstance(node.value, ast.Name) and \
                node.value.id in ('self', 'cls', area.name)
    else:
        area = scope

        def matches(node):
            return isinstance(node, ast.Name) and node.id == key[1] and \
                isinstance(node.ctx, ast.Load)
    regions, lines = [], []
    for node in ast.walk(area.node):
        if not matches(node):
            continue
        holder = auditor.parents.get(node)
        if isinstance(holder, ast.withitem) and \
                holder.context_expr is node:
            regions.append(auditor.parents[holder].body)
            lines.append(node.lineno)
        elif isinstance(holder, ast.Attribute) and \
                holder.attr in _CONDITION_METHODS | {'locked'}:
            continue
        elif isinstance(holder, ast.Attribute) and \
                holder.attr in ('acquire', 'release'):
            site.verdict = 'review'
            site.reason = ('%s is acquired by hand (line %d): cannot see '
                           'what it guards' % (shown, node.lineno))
            return
        elif not isinstance(node.ctx, ast.Load):
            continue
        else:
            site.verdict = 'review'
            site.reason = ('%s is passed on (line %d): cannot see what '
                           'it guards' % (shown, node.lineno))
            return
    if not regions:
        site.verdict = 'review'
        site.reason = '%s is never used in a with block here' % shown
        return
    for region, line in zip(regions, lines):
        if _Guard.lazy_target(region):
            continue
        outside = auditor.guard.first_outside_call(region)
        if outside:
            site.verdict = 'review'
            site.reason = (
                '%s guards a call to %s (line %d): if that changes '
                'backend state, other nodes may do it at the same time'
                % (shown, outside[1], outside[0]))
            return
    site.verdict = 'keep'
    site.reason = ('%s guards only in-process objects (with blocks at '
                   'line %s)' % (shown,
                                 ', '.join(map(str, sorted(lines)))))
