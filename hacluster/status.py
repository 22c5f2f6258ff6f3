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

"""The cluster as an operator sees it: members, leader, tasks, locks, claims,
warnings and health, read from etcd.

:func:`collect` is read-only: it never joins the cluster (no session, no
member record) and needs only read access to ``/hacluster/v1/<cluster>/``.
Everything is read at one etcd revision -- one consistent snapshot: one
transaction reads the members, the leader queue, the tasks, the late
results and the first :data:`FIRST_PAGE` lock entries and claims; the rest
of those two, if any, is read in pages of :data:`PAGE_SIZE` at that same
revision (two reader threads, so etcd prepares the next pages while this
process decodes the last), plus one lease lookup per member (the age of
its last renewal).
Nothing is left out: paging bounds each answer (a single range of 200,000
records took etcd and the gateway longer than a request timeout), not what
is shown.

Health follows the Nagios plugin convention (:data:`OK` 0, :data:`WARNING` 1,
:data:`CRITICAL` 2, :data:`UNKNOWN` 3): critical when the cluster has no
member or no leader; warning on configuration drift, mixed versions, a member
late renewing its lease, claims waiting for or stuck in recovery, failing or
paused tasks.
"""

import json
import queue
import threading
import time

from hacluster import claims as _claims
from hacluster import election as _election
from hacluster import etcd as _etcd
from hacluster import exceptions
from hacluster import keys as _keys
from hacluster import locks as _locks
from hacluster import membership as _membership
from hacluster import protocol as _protocol
from hacluster import url as _url

#: Lock entries or claims per range request. Smaller pages cost more in
#: all (each is a request, and etcd 3.4 walks its index to the end of the
#: range for every limited range: 100,000 claims took 7.4 s in pages of
#: 1,000, 2.7 s in pages of 20,000); much larger ones make answers that can
#: outlast a request timeout (a single range of 100,000 did, under load).
PAGE_SIZE = 20000
#: Lock entries or claims in the snapshot's own transaction: few, so that
#: it answers quickly and the two readers (two requests at once: etcd
#: serves them on two cores) fetch the bulk while this process decodes.
FIRST_PAGE = 1000
#: Snapshots started again when etcd compacts the revision being paged.
_COMPACTED_RETRIES = 3

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
HEALTH_NAMES = {OK: 'OK', WARNING: 'WARNING', CRITICAL: 'CRITICAL',
                UNKNOWN: 'UNKNOWN'}


def _rel(key, prefix):
    return key[len(prefix):]


def collect(client, cluster, now=None, page_size=None, lock_values=True):
    """Read the state of ``cluster``.

    :param client: a :class:`hacluster.etcd.Client`.
    :param page_size: lock entries or claims per range request (default
        :data:`PAGE_SIZE`).
    :param lock_values: False to read the lock queues without their
        values (keys only: less than half of what etcd sends for them, for
        a view that shows a few locks and counts the rest): every lock row
        is there, with ``name``, ``mode``, ``token`` and ``waiters``, but
        ``holder``, ``member_id``, ``pid`` and ``age_s`` are None until
        :func:`fill_lock_rows` reads them for the rows that are shown.
    :returns: a JSON-able dict: ``cluster``, ``revision``, ``members``,
        ``leader``, ``tasks``, ``locks``, ``claims``, ``warnings``
        (list of ``{level, text}``), ``health`` (0-3), ``health_name``,
        ``snapshot`` (how it was read: ``revision``, ``page_size``,
        ``range_requests``, ``lock_values``). Every lock held and every
        claim, however many: pages are an implementation detail, not a
        summary.
    :raises BackendUnavailable: etcd could not be reached (the message
        names the scrubbed endpoints).

    Blocks for ``1 + (locks + claims) / page_size`` range requests (two at
    a time) and one lease lookup per member.
    """
    page_size = page_size or PAGE_SIZE
    for attempt in range(_COMPACTED_RETRIES):
        try:
            return _collect(client, cluster, now, page_size, lock_values)
        except _etcd.Compacted:
            # etcd compacted the snapshot's revision while we paged: take a
            # new snapshot (a page of another revision would mix states).
            if attempt == _COMPACTED_RETRIES - 1:
                raise


class _Pages:
    """The records under ``prefix``: those of ``first`` (a RangePage), then
    those of the later pages, read at ``revision`` by a thread of its own
    that starts at once and stays at most two pages ahead of the consumer
    (etcd prepares the next page while this process decodes the last, and
    memory stays bounded). An error of the reader is raised by
    :meth:`records`. Call :meth:`close` when done (idempotent)."""

    def __init__(self, client, prefix, first, revision, page_size,
                 keys_only=False):
        self.requests = 0
        self._first = first
        self._queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = None
        if first.more:
            self._thread = threading.Thread(
                target=self._read, daemon=True, name='hacluster-status-pages',
                args=(client, prefix, revision, page_size, keys_only))
            self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _read(self, client, prefix, revision, page_size, keys_only):
        page = self._first
        try:
            while page.more:
                page = client.range_page(prefix, start=page.last_key + '\0',
                                         limit=page_size, revision=revision,
                                         keys_only=keys_only)
                self.requests += 1
                if not self._put(page):
                    return
            self._put(None)
        except Exception as exc:     # raised in the consumer
            self._put(exc)

    def records(self):
        """Yield ``(key, create_revision, lease, data)`` in key order."""
        yield from self._first.records()
        if self._thread is None:
            return
        while True:
            page = self._queue.get()
            if page is None:
                return
            if isinstance(page, Exception):
                raise page
            yield from page.records()

    def close(self):
        self._stop.set()


def _collect(client, cluster, now, page_size, lock_values):
    layout = _keys.Layout(cluster)
    now = time.time() if now is None else now
    first = min(FIRST_PAGE, page_size)
    whole = [layout.members, layout.leader, layout.tasks, layout.late]
    resp = client.txn(success=[_etcd.range_op(p, _keys.prefix_end(p))
                               for p in whole] +
                      [_etcd.range_op(layout.locks,
                                      _keys.prefix_end(layout.locks),
                                      limit=first,
                                      keys_only=not lock_values),
                       _etcd.range_op(layout.claims,
                                      _keys.prefix_end(layout.claims),
                                      limit=first)])
    revision = resp.revision
    members_kv, leader_kv, tasks_kv, late_kv = [
        resp.kvs(i) for i in range(len(whole))]
    first_locks, first_claims = resp.page(len(whole)), \
        resp.page(len(whole) + 1)
    # Both readers start now: etcd prepares the claims' pages while this
    # thread works through the locks.
    lock_pages = _Pages(client, layout.locks, first_locks, revision,
                        page_size, keys_only=not lock_values)
    claim_pages = _Pages(client, layout.claims, first_claims, revision,
                         page_size)
    try:
        state = _assemble(client, layout, cluster, now, members_kv,
                          leader_kv, tasks_kv, late_kv,
                          lock_pages.records(), claim_pages.records(),
                          lock_values)
    finally:
        lock_pages.close()
        claim_pages.close()
    state['revision'] = revision
    state['snapshot'] = {
        'revision': revision, 'page_size': page_size,
        'range_requests': 1 + lock_pages.requests + claim_pages.requests,
        'lock_values': lock_values}
    return state


def _assemble(client, layout, cluster, now, members_kv, leader_kv, tasks_kv,
              late_kv, lock_records, claim_records, lock_values):
    lease_ttls = {}

    def lease_ttl(lease):
        """Seconds left of ``lease`` (-1 gone, None unknown); one request
        per distinct lease."""
        if lease not in lease_ttls:
            try:
                lease_ttls[lease] = client.lease_time_to_live(lease)
            except exceptions.HAClusterError:
                lease_ttls[lease] = None
        return lease_ttls[lease]

    members = []
    by_member_id = {}
    for kv in members_kv:
        rec = kv.json()
        rec['node'] = rec.get('node') or _rel(kv.key, layout.members)
        rec['joined_for_s'] = round(now - rec['joined_at'], 1) \
            if rec.get('joined_at') else None
        rec['lease_remaining_s'] = None
        rec['since_renewal_s'] = None
        if kv.lease:
            ttl = lease_ttl(kv.lease)
            if ttl is not None and ttl >= 0:
                rec['lease_remaining_s'] = ttl
                if rec.get('lease_ttl'):
                    rec['since_renewal_s'] = max(0, rec['lease_ttl'] - ttl)
        members.append(rec)
        by_member_id[rec.get('member_id')] = rec
    members.sort(key=lambda r: r['node'])

    leader = None
    if leader_kv:
        head = _election.head_of(leader_kv)
        value = head.json()
        leader = dict(by_member_id.get(value.get('member_id'), {}), **value)
        leader['term'] = head.create_revision
        leader['candidates'] = len(leader_kv)

    queues = {}
    name_of = layout.lock_name_from_key
    for key, token, _lease, value in lock_records:
        queues.setdefault(name_of(key), []).append((token, key, value))
    lock_rows = []
    for name in sorted(queues):
        entries = queues[name]
        if len(entries) == 1:
            held = entries       # alone in its queue: it holds
        else:
            entries.sort()
            # the queue rule of the locks themselves (locks.holders)
            holding = set(_locks.holders([e[:2] for e in entries]))
            held = [e for e in entries if e[:2] in holding]
        waiting = len(entries) - len(held)
        for token, key, value in held:
            shared = _locks.entry_mode(key) == _locks.SHARED
            row = {'name': name, 'mode': 'shared' if shared else 'exclusive',
                   'token': token, 'waiters': waiting}
            if lock_values:
                _holder_fields(row, value, now)
            else:
                row.update(holder=None, member_id=None, pid=None, age_s=None,
                           _key=key)
            lock_rows.append(row)

    claims = []

    def orphaned(rec):
        # recovery's rule (claims.holder): the holder's lease is gone
        held_by = _claims.holder(rec)
        if held_by is None:
            return False
        member_id, lease = held_by
        if lease is None:
            return member_id not in by_member_id
        return int(lease) == 0 or lease_ttl(int(lease)) == -1

    for _key, _rev, _lease, rec in claim_records:
        state = rec.get('state')
        if orphaned(rec):
            state = 'recovering (recoverer gone)' \
                if state == _claims.RECOVERING else 'orphaned'
        started_at = rec.get('started_at')
        claims.append({
            'claim_id': rec.get('claim_id'), 'node': rec.get('node'),
            'member_id': rec.get('member_id'),
            'resource_type': rec.get('resource_type'),
            'resource_id': rec.get('resource_id'),
            'operation': rec.get('operation'), 'state': state,
            'age_s': round(now - started_at, 1) if started_at else None,
            'attempt': rec.get('attempt', 0),
            'recoverer': rec.get('recoverer_node'),
            'last_error': rec.get('last_error')})

    late = []
    for kv in late_kv:
        rec = kv.json()
        late.append({k: rec.get(k) for k in (
            'claim_id', 'node', 'resource_type', 'resource_id', 'operation',
            'recovered_by', 'at', 'message')})
    late.sort(key=lambda r: r.get('at') or 0)

    tasks = {}
    for kv in tasks_kv:
        name, what, node = layout.parse_task_key(kv.key)
        task = tasks.setdefault(name, {
            'name': name, 'mode': None, 'spacing': None,
            'paused': False, 'nodes': {}, 'last_cycle': None})
        if what == 'control':
            task['paused'] = bool(kv.json().get('paused'))
        elif what == 'cycle':
            task['last_cycle'] = kv.json()
        elif what == 'stats':
            st = kv.json()
            task['nodes'][node] = st
            task['mode'] = st.get('mode') or task['mode']
            task['spacing'] = st.get('spacing') or task['spacing']
    task_rows = []
    for name, t in sorted(tasks.items()):
        nodes = t['nodes']
        last = max(nodes.values(), key=lambda s: s.get('last_run_at') or 0,
                   default={})
        task_rows.append({
            'name': name, 'mode': t['mode'], 'spacing': t['spacing'],
            'paused': t['paused'],
            'last_run_at': last.get('last_run_at'),
            'last_run_ago_s': round(now - last['last_run_at'], 1)
            if last.get('last_run_at') else None,
            'last_run_on': last.get('node') if last.get('last_run_at')
            else None,
            'last_duration_s': last.get('last_duration'),
            'runs': sum(s.get('runs', 0) for s in nodes.values()),
            'skips': sum(s.get('skips', 0) for s in nodes.values()),
            'failures': sum(s.get('failures', 0) for s in nodes.values()),
            'last_error': last.get('last_error'),
            'items_handled': sum(s.get('items_handled', 0)
                                 for s in nodes.values()),
            'last_cycle': t['last_cycle'],
            # each node's own counts (check --node judges one member)
            'by_node': {n: {k: st.get(k) for k in (
                'runs', 'skips', 'failures', 'last_run_at', 'last_error',
                'items_handled')} for n, st in sorted(nodes.items())}})

    warnings, health = _assess(members, leader, claims, task_rows, late)
    return {'cluster': cluster, 'revision': None, 'snapshot': None,
            'collected_at': now, 'members': members, 'leader': leader,
            'tasks': task_rows, 'locks': lock_rows, 'claims': claims,
            'late_results': late, 'warnings': warnings, 'health': health,
            'upgrade': _protocol.upgrade_view(members),
            'health_name': HEALTH_NAMES[health]}


def _holder_fields(row, value, now):
    queued_at = value.get('queued_at')
    row.update(holder=value.get('node'), member_id=value.get('member_id'),
               pid=value.get('pid'),
               age_s=round(now - queued_at, 1) if queued_at else None)


def fill_lock_rows(client, state, rows):
    """Fill ``holder``, ``member_id``, ``pid`` and ``age_s`` of ``rows``
    (lock rows of a ``state`` collected with ``lock_values=False``), read
    at the state's revision (now, if etcd has compacted it: an entry gone
    since keeps its fields None). Rows already filled are left alone.
    Blocks for one request (none if nothing is left to fill).

    :raises BackendUnavailable: etcd could not be reached.
    """
    todo = [r for r in rows if r.get('_key')]
    if not todo:
        return
    try:
        resp = client.txn(success=[
            _etcd.range_op(r['_key'], revision=state['revision'])
            for r in todo])
    except _etcd.Compacted:
        resp = client.txn(success=[_etcd.range_op(r['_key'])
                                   for r in todo])
    for i, row in enumerate(todo):
        kvs = resp.kvs(i)
        if kvs:
            _holder_fields(row, kvs[0].json(), state['collected_at'])
        del row['_key']


def list_clusters(client):
    """Every cluster found under the etcd root (``/hacluster/v1/``), with
    its counts: live members, leader (node and term) and candidates, locks
    with a holder or waiter, open claims.

    Two requests: the root's keys (no values), then one transaction over
    the election queues of the clusters that have one. Read-only.

    :returns: ``[{cluster, members, leader, term, candidates, locks,
        claims}]`` sorted by name (``leader`` and ``term`` None when there
        is none).
    :raises BackendUnavailable: etcd could not be reached.
    """
    kvs, _ = client.get_prefix(_keys.ROOT, keys_only=True)
    clusters = {}
    for kv in kvs:
        name, _, rest = kv.key[len(_keys.ROOT):].partition('/')
        if not name:
            continue
        section, _, sub = rest.partition('/')
        c = clusters.setdefault(name, {
            'cluster': name, 'members': 0, 'leader': None, 'term': None,
            'candidates': 0, 'locks': set(), 'claims': 0})
        if section == 'members':
            c['members'] += 1
        elif section == 'leader':
            c['candidates'] += 1
        elif section == 'locks':
            c['locks'].add(sub.partition('/')[0])
        elif section == 'claims':
            c['claims'] += 1
    electing = [c for _, c in sorted(clusters.items()) if c['candidates']]
    if electing:
        prefixes = [_keys.ROOT + c['cluster'] + '/leader/' for c in electing]
        resp = client.txn(success=[_etcd.range_op(p, _keys.prefix_end(p))
                                   for p in prefixes])
        for i, c in enumerate(electing):
            head = _election.head_of(resp.kvs(i))
            if head is not None:
                c['leader'] = head.json().get('node')
                c['term'] = head.create_revision
    rows = []
    for _, c in sorted(clusters.items()):
        c['locks'] = len(c['locks'])
        rows.append(c)
    return rows


def _assess(members, leader, claims, tasks, late=()):
    warnings = []

    def warn(level, text):
        warnings.append({'level': HEALTH_NAMES[level], 'text': text})

    if not members:
        warn(CRITICAL, 'no member is alive')
    elif leader is None:
        warn(CRITICAL, 'no leader (%d members alive)' % len(members))
    drift = _drift(members)
    if drift:
        warn(WARNING, 'configuration drift: %s' % drift)
    upgrade = _protocol.upgrade_view(members)
    if upgrade and upgrade['incompatible']:
        warn(CRITICAL, 'members that share no protocol: %s (not a rolling '
             'upgrade one version at a time)' % ', '.join(
                 '%s/%s' % pair for pair in upgrade['incompatible']))
    for m in members:
        since, late_after = _late_renewal(m)
        if since is not None and late_after is not None and \
                since > late_after:
            warn(WARNING, 'member %s has not renewed its lease for ~%ss '
                 '(%ss left)' % (m['node'], since,
                                 m.get('lease_remaining_s')))
    orphaned = [c for c in claims if c['state'] == 'orphaned']
    if orphaned:
        warn(WARNING, '%d claims of departed members await recovery'
             % len(orphaned))
    stuck = [c for c in claims if c['state'] == 'failed' or
             (c['state'] or '').startswith('recovering (')]
    if stuck:
        warn(WARNING, '%d claims stuck in recovery (e.g. %s %s/%s: %s)' % (
            len(stuck), stuck[0]['operation'], stuck[0]['resource_type'],
            stuck[0]['resource_id'], stuck[0]['last_error'] or
            stuck[0]['state']))
    if late:
        warn(WARNING, '%d operations finished after they were recovered '
             'elsewhere (their results were not written; check the backend '
             'for leftovers, then clear with "hacluster claim late-clear"), '
             'e.g. %s' % (len(late), late[-1]['message']))
    for t in tasks:
        if t['paused']:
            warn(WARNING, 'task %s is paused for the cluster' % t['name'])
        if t['last_error']:
            warn(WARNING, 'task %s failed on its last run on %s: %s'
                 % (t['name'], t['last_run_on'], t['last_error']))
    levels = [k for k, v in HEALTH_NAMES.items()
              if any(w['level'] == v for w in warnings)]
    return warnings, max(levels, default=OK)


def _drift(members):
    """Configuration drift, judged so that an upgrade does not look like
    drift: per key on the keys two members both fingerprint
    (``config_fingerprints``), and, for members of versions without
    per-key fingerprints, on the whole fingerprint among members of one
    version only. Returns a description, or ''."""
    keyed = [m for m in members if isinstance(m.get('config_fingerprints'),
                                              dict)]
    keys = set()
    for i, a in enumerate(keyed):
        for b in keyed[i + 1:]:
            keys.update(_membership.drifted(a['config_fingerprints'],
                                            b['config_fingerprints']))
    if keys:
        return 'options %s differ (%s)' % (', '.join(sorted(keys)), ', '.join(
            '%s=%s' % (m['node'], m.get('config_fingerprint'))
            for m in keyed))
    by_version = {}
    for m in members:
        if m not in keyed and m.get('config_fingerprint'):
            by_version.setdefault(m.get('version'), []).append(m)
    for version, group in sorted(by_version.items(), key=str):
        if len({m['config_fingerprint'] for m in group}) > 1:
            return ', '.join('%s=%s' % (m['node'], m['config_fingerprint'])
                             for m in group)
    return ''


def upgrade_note(state):
    """``upgrade in progress: 2 of 3 members at X, fan-out RPC pinned to
    Y`` while members run different versions, else None."""
    up = state.get('upgrade')
    if not up:
        return None
    return ('upgrade in progress: %d of %d members at %s (%s), fan-out RPC '
            'pinned to %s' % (
                up['at_newest'], up['members'], up['newest'],
                '; '.join('%s: %s' % (v, ', '.join(n)) for v, n in
                          sorted(up['versions'].items())), up['rpc_pin']))


def summary(state):
    """One line for monitoring: ``OK: cluster c: 3 members, leader n1 ...``."""
    leader = state['leader']
    line = '%s: cluster %s: %d members, leader %s' % (
        state['health_name'], state['cluster'], len(state['members']),
        '%s (term %d)' % (leader.get('node'), leader['term'])
        if leader else 'none')
    note = upgrade_note(state)
    if note:
        line += '; ' + note
    if state['warnings']:
        line += '; ' + '; '.join(w['text'] for w in state['warnings'])
    return _url.scrub(line)


def perf(label, value, uom='', warn='', crit=''):
    """One Nagios performance datum: ``label=VALUE[UOM];WARN;CRIT;`` (the
    minimum and maximum left empty). A value of None is written ``U``
    (Nagios's "unknown")."""
    if value is None:
        value, uom = 'U', ''
    elif isinstance(value, float):
        value = ('%.3f' % value).rstrip('0').rstrip('.') or '0'
    return '%s=%s%s;%s;%s;' % (label, value, uom, _threshold(warn),
                               _threshold(crit))


def _threshold(value):
    if value in ('', None):
        return ''
    if isinstance(value, float):
        return ('%.3f' % value).rstrip('0').rstrip('.') or '0'
    return str(value)


def perfdata(state):
    """The cluster's Nagios performance data (after ``|`` in ``hacluster
    check``): members, leader term, candidates, locks held, claims (open,
    orphaned, failed), late results, task failures (a counter, ``c``),
    warnings."""
    claims = state.get('claims') or []
    leader = state.get('leader')
    return ' '.join([
        perf('members', len(state.get('members') or [])),
        perf('leader_term', leader['term'] if leader else 0),
        perf('candidates', leader.get('candidates', 1) if leader else 0),
        perf('locks', len(state.get('locks') or [])),
        perf('claims', len(claims)),
        perf('claims_orphaned', sum(1 for c in claims
                                    if c['state'] == 'orphaned')),
        perf('claims_failed', sum(1 for c in claims
                                  if c['state'] == _claims.FAILED)),
        perf('late_results', len(state.get('late_results') or [])),
        perf('task_failures', sum(t.get('failures') or 0 for t in
                                  state.get('tasks') or []), 'c'),
        perf('warnings', len(state.get('warnings') or []))])


def _late_renewal(member):
    """``(seconds since the member's last renewal, threshold)``: late when
    the first exceeds the second (two renewals missed, and a second for
    the coarse lease TTL etcd reports); the threshold is None when the
    record does not say its timings."""
    interval = member.get('renew_interval')
    if not interval or not member.get('lease_ttl'):
        return member.get('since_renewal_s'), None
    return member.get('since_renewal_s'), max(2 * interval, 1) + 1


def member_health(state, node):
    """The health of one member of a :func:`collect`-ed ``state``: is it a
    member (CRITICAL if not), does it renew its lease, does it lead, its
    claims (open; orphaned or failed: WARNING), its late results
    (WARNING), its periodic tasks (a failed last run here: WARNING).

    :returns: a JSON-able dict: ``node``, ``present``, ``member``
        (its record or None), ``leader``, ``term``, ``since_renewal_s``,
        ``lease_remaining_s``, ``claims``, ``recovering`` (claims it is
        recovering), ``tasks`` (``{task: its counts here}``),
        ``warnings``, ``health``, ``health_name``, ``perfdata``.
    """
    member = next((m for m in state.get('members') or []
                   if m['node'] == node), None)
    leader = state.get('leader')
    leads = bool(member and leader and leader.get('node') == node and
                 leader.get('member_id') == member.get('member_id'))
    claims = [c for c in state.get('claims') or [] if c['node'] == node]
    recovering = [c for c in state.get('claims') or []
                  if c.get('recoverer') == node and c['node'] != node]
    late = [r for r in state.get('late_results') or []
            if r.get('node') == node]
    tasks = {t['name']: dict(t['by_node'][node], mode=t['mode'])
             for t in state.get('tasks') or []
             if node in (t.get('by_node') or {})}
    warnings = []

    def warn(level, text):
        warnings.append({'level': HEALTH_NAMES[level], 'text': text})

    since, late_after = _late_renewal(member or {})
    if member is None:
        warn(CRITICAL, 'not a member (members: %s)' % (
            ', '.join(m['node'] for m in state.get('members') or [])
            or 'none'))
    else:
        if member.get('state') not in (None, 'active'):
            warn(WARNING, 'member %s is %s' % (node, member.get('state')))
        if since is None:
            warn(WARNING, 'the age of its last lease renewal is unknown '
                 '(its lease could not be read)')
        elif late_after is not None and since > late_after:
            warn(WARNING, 'has not renewed its lease for ~%ss (%ss left)' % (
                since, member.get('lease_remaining_s')))
    orphaned = [c for c in claims if c['state'] == 'orphaned']
    if orphaned:
        warn(WARNING, '%d claims of an earlier incarnation await recovery'
             % len(orphaned))
    stuck = [c for c in claims if c['state'] == _claims.FAILED or
             (c['state'] or '').startswith('recovering (')]
    if stuck:
        warn(WARNING, '%d of its claims stuck in recovery (e.g. %s %s/%s: '
             '%s)' % (len(stuck), stuck[0]['operation'],
                      stuck[0]['resource_type'], stuck[0]['resource_id'],
                      stuck[0]['last_error'] or stuck[0]['state']))
    if late:
        warn(WARNING, '%d of its operations finished after they were '
             'recovered elsewhere, e.g. %s'
             % (len(late), late[-1]['message']))
    for name, t in sorted(tasks.items()):
        if t.get('last_error'):
            warn(WARNING, 'task %s failed on its last run here: %s'
                 % (name, t['last_error']))
    levels = [k for k, v in HEALTH_NAMES.items()
              if any(w['level'] == v for w in warnings)]
    health = max(levels, default=OK)
    lease_ttl = (member or {}).get('lease_ttl')
    perf_items = [
        perf('present', int(member is not None)),
        perf('since_renewal', since, 's', late_after, lease_ttl),
        perf('lease_remaining', (member or {}).get('lease_remaining_s'),
             's'),
        perf('leader', int(leads)),
        perf('claims', len(claims)),
        perf('claims_stuck', len(orphaned) + len(stuck)),
        perf('recovering', len(recovering)),
        perf('tasks', len(tasks)),
        perf('task_failures', sum(t.get('failures') or 0
                                  for t in tasks.values()), 'c')]
    return {'cluster': state['cluster'], 'node': node,
            'present': member is not None, 'member': member,
            'leader': leads, 'term': leader['term'] if leads else None,
            'since_renewal_s': since,
            'lease_remaining_s': (member or {}).get('lease_remaining_s'),
            'claims': claims, 'recovering': recovering, 'tasks': tasks,
            'late_results': late, 'warnings': warnings, 'health': health,
            'health_name': HEALTH_NAMES[health],
            'perfdata': ' '.join(perf_items)}


def _count(n, what):
    return '%d %s%s' % (n, what, '' if n == 1 else 's')


def member_summary(health):
    """One line for monitoring one member: ``OK: member n1 of cluster c:
    renewed 1s ago (2s of lease left), leader (term 9), 1 claim open, 2
    tasks`` (the perfdata not included)."""
    if not health['present']:
        line = '%s: member %s of cluster %s: %s' % (
            health['health_name'], health['node'], health['cluster'],
            health['warnings'][0]['text'])
        return _url.scrub(line)
    since = health['since_renewal_s']
    parts = ['renewed %s' % ('%ss ago (%ss of lease left)' % (
        since, health['lease_remaining_s']) if since is not None
        else 'at an unknown time')]
    parts.append('leader (term %d)' % health['term'] if health['leader']
                 else 'not leader')
    parts.append(_count(len(health['claims']), 'claim') + ' open')
    parts.append(_count(len(health['tasks']), 'task'))
    line = '%s: member %s of cluster %s: %s' % (
        health['health_name'], health['node'], health['cluster'],
        ', '.join(parts))
    if health['warnings']:
        line += '; ' + '; '.join(w['text'] for w in health['warnings'])
    return _url.scrub(line)


def set_task_paused(client, cluster, task, paused, by='operator'):
    """Pause or resume a periodic task on every node (the runners watch
    the key). Blocks for one etcd request."""
    layout = _keys.Layout(cluster)
    _keys.validate_lock_name(task)
    client.put(layout.task_control(task), json.dumps(
        {'paused': bool(paused), 'by': by, 'at': time.time()}))


def request_recovery(client, cluster, node):
    """Operator: the claims of ``node`` (known dead) should be recovered now:
    claims waiting for a retry are made due at once. Refused while ``node``
    is a live member.

    :returns: the number of claims of ``node``.
    :raises HAClusterError: ``node`` is alive.
    """
    layout = _keys.Layout(cluster)
    _keys.validate_ident(node, 'node')
    if client.get(layout.member(node)) is not None:
        raise exceptions.HAClusterError(
            'node %r is a live member of cluster %r: refusing to recover its '
            'claims (stop it first, or wait for its lease to expire)'
            % (node, cluster))
    kvs, _ = client.get_prefix(layout.claims_of(node))
    for kv in kvs:
        rec = kv.json()
        if rec.get('state') == 'failed':
            rec['next_retry_at'] = 0
            rec['retry_in'] = 0
            client.txn(compare=[_etcd.mod_revision_is(kv.key,
                                                      kv.mod_revision)],
                       success=[_etcd.put_op(kv.key, json.dumps(rec))])
    # Wakes the leader's recovery loop through its watch.
    client.put(layout.recovery_request(), json.dumps(
        {'node': node, 'at': time.time()}))
    return len(kvs)


def clear_late(client, cluster, claim_id=None):
    """Operator: forget the late results (of ``claim_id``, or all) once the
    backend was checked for what the late operations left. Returns how many
    were removed. Blocks for one etcd request."""
    layout = _keys.Layout(cluster)
    if claim_id is None:
        return client.delete_prefix(layout.late)
    if not claim_id.isalnum():
        raise exceptions.ConfigurationError(
            'claim id must be the hexadecimal id shown by "hacluster claim '
            'late-list", got %r' % claim_id)
    return client.delete(layout.late_result(claim_id))
