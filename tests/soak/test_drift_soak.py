"""make soak (SOAK=1): every playbook against every kind of drift, each
stopping in the drift play, naming it, with every storage unchanged (make
test runs each playbook once, tests/integration/test_drift_playbooks.py)."""

from __future__ import annotations

import pytest

from tests.integration.test_drift_playbooks import DRIFTS, PLAYBOOKS, assert_stops_on_drift, fleet

__all__ = ["fleet"]  # the fixture, shared with test_drift_playbooks.py


@pytest.mark.parametrize("make_drift", DRIFTS, ids=[d.__name__ for d in DRIFTS])
@pytest.mark.parametrize("playbook", sorted(PLAYBOOKS))
def test_every_playbook_stops_on_every_drift(fleet, playbook, make_drift):
    assert_stops_on_drift(fleet, playbook, make_drift)
