"""A rolling upgrade of three real manila-share 23.0.1 nodes, grenade-style,
on one machine: N (a real older commit) to N+1 (the working tree) to the
canary N+2. The steps and checks are in :mod:`hacluster.testing.upgrade`
(shared with ``tools/demo --upgrade``)."""

import pytest

from hacluster.testing import upgrade


@pytest.fixture(scope='module')
def old_tree(tmp_path_factory):
    """The hacluster package of upgrade.OLD_COMMIT, extracted once."""
    return upgrade.extract_old_tree(str(tmp_path_factory.mktemp('N')))


def test_a_rolling_upgrade_from_n_to_n_plus_1_and_a_canary(
        manila_cluster, old_tree):
    def report(step, status):
        print('step ok: %s' % step)
    upgrade.run(manila_cluster(nodes=upgrade.NODES), old_tree, report)
