"""The audit's results: a :class:`Site` per lock site (or per file not
audited), its row in the order of :data:`COLUMNS`; :func:`unify`, which
makes the verdicts of sites that share a lock name agree across files and
notes oslo and distributed locks that look alike but exclude nothing of
each other; and :func:`summarize`, the counts by kind and verdict.
"""

import dataclasses

COLUMNS = ('file', 'line', 'where', 'kind', 'usage', 'name', 'verdict',
           'reason', 'suggestion')
KINDS = ('external', 'internal', 'distributed', 'threading')
VERDICTS = ('replace', 'review', 'keep', 'already-distributed', 'error')


@dataclasses.dataclass
class Site:
    """One lock site (or, with verdict ``error``, one file not audited).

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
    external: object = None
    fix: object = None
    proposal: object = dataclasses.field(default=None, repr=False,
                                         compare=False)

    def row(self):
        """The values of :data:`COLUMNS`, in order."""
        return tuple(getattr(self, column) for column in COLUMNS)


_STRICTNESS = {'keep': 0, 'review': 1, 'replace': 2}


def unify(sites):
    """Give oslo sites that share a fixed lock name one verdict, and set
    ``suggestion``/``fix`` from ``proposal`` by the final verdict.

    Sites sharing a name exclude each other (whatever their kinds), so a
    lock cannot be replaced at one and kept at another: all get the
    strictest verdict among them (replace > review > keep), with a note.

    :param sites: sites of one audit (any number of files); changed in
        place.
    :returns: ``sites``.
    """
    groups = {}
    for site in sites:
        if site.proposal is not None and site.verdict in _STRICTNESS and \
                site.name and '{' not in site.name:
            groups.setdefault(site.name, []).append(site)
    for group in groups.values():
        strictest = max(group, key=lambda s: _STRICTNESS[s.verdict])
        for site in group:
            if _STRICTNESS[site.verdict] < _STRICTNESS[strictest.verdict]:
                where = ('line %d' % strictest.line
                         if strictest.file == site.file else
                         '%s:%d' % (strictest.file, strictest.line))
                site.reason = ('shares its name with %s (%s there); on its '
                               'own: %s' % (where, strictest.verdict,
                                            site.reason))
                site.verdict = strictest.verdict
    _note_other_systems(sites)
    for site in sites:
        if site.proposal is None:
            continue
        suggestion, fix = site.proposal
        site.suggestion = suggestion if site.verdict != 'keep' else ''
        site.fix = fix if site.verdict == 'replace' else None
    return sites


def _note_other_systems(sites):
    """Say so where an oslo lock and a distributed one have the same name:
    they look alike and exclude nothing of each other."""
    distributed, local = {}, {}
    for site in sites:
        if site.name and site.kind == 'distributed':
            distributed.setdefault(site.name, []).append(site)
        elif site.name and site.kind in ('external', 'internal'):
            local.setdefault(site.name, []).append(site)
    for name in set(distributed) & set(local):
        for group, others in ((distributed[name], local[name]),
                              (local[name], distributed[name])):
            for site in group:
                other = others[0]
                where = ('line %d' % other.line if other.file == site.file
                         else '%s:%d' % (other.file, other.line))
                note = ('; the %s lock at %s has the same name: the two do '
                        'not exclude each other' % (other.kind, where))
                if note not in site.reason:
                    site.reason += note


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
