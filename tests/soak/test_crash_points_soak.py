"""make soak: the pull, the first copy and the master's direct snapshot killed
at every call that changes the disk (the spreads of tests/integration/test_crash_points.py's
SAMPLED and LIGHT for the calls that come by the hundred), not the few calls of
each kind of `make test`: the same tests, collected here with SOAK=1."""

from __future__ import annotations

from tests.integration.test_crash_points import (
    test_clone_killed_at_every_disk_change,
    test_direct_snapshot_serve_killed_at_every_disk_change,
    test_pull_killed_at_every_disk_change,
)

__all__ = ["test_clone_killed_at_every_disk_change", "test_direct_snapshot_serve_killed_at_every_disk_change",
           "test_pull_killed_at_every_disk_change"]  # collected here under SOAK=1
