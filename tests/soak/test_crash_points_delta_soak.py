"""make soak: `clone --delta` (issue 11) and the in-place re-seed (issue 19)
killed at every call that changes the disk, not the few calls of each kind of
`make test`: the same tests, collected here with SOAK=1, where
tests/integration/test_crash_points_delta.py enumerates every call of every
kind (a spread of 60 of the kinds that come by the hundred)."""

from __future__ import annotations

from tests.integration.test_crash_points_delta import (
    test_clone_delta_killed_at_every_disk_change,
    test_in_place_reseed_killed_at_every_disk_change,
)

__all__ = ["test_clone_delta_killed_at_every_disk_change",
           "test_in_place_reseed_killed_at_every_disk_change"]  # collected here under SOAK=1
