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

"""The audit's results: a :class:`Site` per lock site (or per file not
audited), its row in the order of :data:`COLUMNS`; :func:`unify`, which
makes the verdicts of sites that share a lock name agree across files --
a node-local lock sharing its name with one that is a cluster lock under
the HA manager must become that cluster lock too -- and notes locks of
different kinds that look alike, saying whether they exclude each other;
and :func:`summarize`, the counts by kind and verdict.
"""

import dataclasses

COLUMNS = ('file', 'line', 'where', 'kind', 'usage', 'name', 'runtime',
           'verdict', 'reason', 'suggestion')
KINDS = ('external', 'internal', 'distributed', 'threading')
VERDICTS = ('replace', 'review', 'keep', 'swapped', 'rewrapped',
            'already-distributed', 'error')


@dataclasses.dataclass
class Site:
    """One lock site (or, with verdict ``error``, one file not audited).

    ``runtime`` is the lock the site takes in manila-share under the HA
    manager, clustered: ``etcd <name>`` (a cluster lock), ``file <name>``
    or ``in-process <name>`` (node-local), ``coordinator <name>`` (a
    hacluster lock on the coordinator given), ``in-process`` (threading).
    ``cluster`` is the cluster lock name the site takes there, or would
    take once replaced as suggested (None for threading locks).

    ``external`` is True/False for oslo locks (None when it is not a
    literal, and for other kinds). ``fix`` is, for a ``replace`` decorator,
    ``(lineno, col, end_lineno, end_col, text)``: the decorator call's span
    (ast positions: 1-based lines, UTF-8 byte columns) and its replacement.
    ``proposal`` is the ``(suggestion, fix)`` an oslo site gets when its
    verdict is ``replace`` or ``review`` (see :func:`unify`).
    """

    file: str
    line: int
    where: str
    kind: str
    usage: str
    name: str
    verdict: str
    reason: str
    suggestion: str = ''
    runtime: str = ''
    cluster: object = None
    external: object = None
    fix: object = None
    proposal: object = dataclasses.field(default=None, repr=False,
                                         compare=False)
    #: for distributed sites: ``manila`` (coordination), ``ha_lock`` or
    #: ``hacluster``
    family: str = dataclasses.field(default='', repr=False, compare=False)

    def clusters(self):
        """The cluster lock names of :attr:`cluster` (a str, a tuple of
        them for a hacluster lock with several names, or None), as a
        tuple."""
        if self.cluster is None:
            return ()
        if isinstance(self.cluster, str):
            return (self.cluster,)
        return tuple(self.cluster)

    def row(self):
        """The values of :data:`COLUMNS`, in order."""
        return tuple(getattr(self, column) for column in COLUMNS)


_STRICTNESS = {'keep': 0, 'review': 1, 'replace': 2}
_OSLO = ('external', 'internal')


def _clustered(site):
    """Whether ``site`` is a cluster lock in manila-share under the HA
    manager as written."""
    return site.runtime.startswith('etcd ')


def _where(site, other):
    """How ``site``'s reason names ``other``."""
    if other.file == site.file:
        return 'line %d' % other.line
    return '%s:%d' % (other.file, other.line)


def unify(sites):
    """Give oslo sites that share a fixed lock name one verdict, and set
    ``suggestion``/``fix`` from ``proposal`` by the final verdict.

    Sites sharing a name exclude each other (oslo's in-process locks are
    keyed by the name alone), so a lock cannot be replaced at one and kept
    at another: the node-local ones all get the strictest verdict among
    them (replace > review > keep), with a note; and when one of them is a
    cluster lock under the HA manager (swapped, re-wrapped), every
    node-local one is ``replace``: it must take that cluster lock too.

    :param sites: sites of one audit (any number of files); changed in
        place.
    :returns: ``sites``.
    """
    groups = {}
    for site in sites:
        if site.kind in _OSLO and site.name and '{' not in site.name and \
                (site.verdict in _STRICTNESS or _clustered(site)):
            groups.setdefault(site.name, []).append(site)
    for group in groups.values():
        local = [s for s in group
                 if not _clustered(s) and s.verdict in _STRICTNESS]
        if not local:
            continue
        cluster = [s for s in group if _clustered(s)]
        if cluster:
            other = cluster[0]
            for site in local:
                if site.verdict == 'replace':
                    continue
                site.reason = (
                    'shares its name with %s (%s there: the cluster lock %s '
                    'under the HA manager): this one must take it too, or '
                    'the two no longer exclude each other; on its own: %s'
                    % (_where(site, other), other.verdict, other.cluster,
                       site.reason))
                site.verdict = 'replace'
            continue
        strictest = max(local, key=lambda s: _STRICTNESS[s.verdict])
        for site in local:
            if _STRICTNESS[site.verdict] < _STRICTNESS[strictest.verdict]:
                site.reason = ('shares its name with %s (%s there); on its '
                               'own: %s' % (_where(site, strictest),
                                            strictest.verdict, site.reason))
                site.verdict = strictest.verdict
    _note_other_systems(sites)
    for site in sites:
        if site.proposal is None:
            continue
        suggestion, fix = site.proposal
        site.suggestion = suggestion if site.verdict in (
            'replace', 'review') else ''
        site.fix = fix if site.verdict == 'replace' else None
    return sites


def _family(site):
    """oslo, manila coordination, ha_lock or hacluster: sites of different
    families look alike without being the same lock."""
    if site.kind in _OSLO:
        return 'oslo'
    return site.family or site.kind


def _note(site, note):
    if note not in site.reason:
        site.reason += note


def _note_other_systems(sites):
    """Where locks of different families share a name, say whether they
    exclude each other: under the HA manager the cluster lock is what
    counts (``cluster``); with manila's own manager an oslo lock and a
    coordination lock never do."""
    by_name, by_cluster = {}, {}
    for site in sites:
        if site.kind == 'threading' or not site.name or \
                site.verdict == 'error':
            continue
        by_name.setdefault(site.name, []).append(site)
        for cluster in site.clusters():
            by_cluster.setdefault(cluster, []).append(site)
    for cluster, group in by_cluster.items():
        for site in group:
            for other in group:
                if _family(other) == _family(site):
                    continue
                if _clustered(site) and _clustered(other):
                    note = ('; the %s lock at %s has the same name: under the '
                            'HA manager both are the cluster lock %s'
                            % (other.kind, _where(site, other), cluster))
                    if {_family(site), _family(other)} == {'oslo', 'manila'}:
                        note += (' (with manila\'s own manager the two do '
                                 'not exclude each other)')
                elif _clustered(other):
                    note = ('; the %s lock at %s is the cluster lock %s under '
                            'the HA manager, this one is node-local: the two '
                            'do not exclude each other'
                            % (other.kind, _where(site, other), cluster))
                elif _clustered(site):
                    note = ('; the %s lock at %s has the same name but is '
                            'node-local: the two do not exclude each other'
                            % (other.kind, _where(site, other)))
                else:
                    continue
                _note(site, note)
                break
    for name, group in by_name.items():
        for site in group:
            for other in group:
                if set(site.clusters()) & set(other.clusters()) or \
                        _family(other) == _family(site):
                    continue
                _note(site, '; the %s lock at %s has the same name but takes '
                            'the cluster lock %s, this one %s: the two do not '
                            'exclude each other'
                      % (other.kind, _where(site, other),
                         ', '.join(other.clusters()),
                         ', '.join(site.clusters())))
                break


def summarize(sites):
    """Counts: ``{'sites': n, 'kind': {...}, 'verdict': {...}}`` (error
    rows count under verdict only)."""
    kinds = {k: 0 for k in KINDS}
    verdicts = {v: 0 for v in VERDICTS}
    for site in sites:
        if site.kind:
            kinds[site.kind] += 1
        verdicts[site.verdict] += 1
    return {'sites': sum(kinds.values()), 'kind': kinds, 'verdict': verdicts}
