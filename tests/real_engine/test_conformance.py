"""The simulated master against what the real engine does (conformance.py):
`make test` plays every scenario on the model; `make real-engine-check`
(REAL_ENGINE=1) plays them on the real engine too, and both must match what
the real engine was seen to do."""

from __future__ import annotations

import os

import pytest

from tests.real_engine import conformance

DRIVERS = {"model": conformance.ModelDriver, "real": conformance.RealDriver}
CHOSEN = ["real", "model"] if os.environ.get("REAL_ENGINE") == "1" else ["model"]


@pytest.mark.parametrize("driver", CHOSEN)
@pytest.mark.parametrize("scenario", sorted(conformance.SCENARIOS))
def test_journal_and_snapshot_as_the_real_engine(tmp_path, driver, scenario):
    seen = conformance.run(DRIVERS[driver], str(tmp_path), [scenario])[scenario]
    assert seen == conformance.EXPECTED[scenario], list(zip(conformance.SCENARIOS[scenario], seen, strict=True))
