"""Every power cut (make soak: SOAK=1): for each operation of
tests/support/power_ops.py (pull, clone, clone --force, the master's direct
snapshot, clone --delta, promote), on ext4 data=ordered, ext4 data=writeback
and xfs, a cut after
every disk-changing call, each with both kinds of image (strict, tick), and
after the command reported success.  Only `write`, `close`, `unlinkat` and
`link` (hundreds of calls, one per file) are spread: SOAK_POWER_SPREAD of each
(default 40, first and last included; 0 = every one).

At least power_ops.IN_FLIGHT_FLOOR of the cuts at a call must freeze the
operation in flight, on every file system (a call number no tracee reaches
cuts nothing and proves nothing).

Collected only with SOAK=1 (see tests/conftest.py).  Figures go to
tests/output/reliability.json (power_cut_soak_<operation>).
"""

from __future__ import annotations

import os

import pytest

from testbed.harness import power_cut
from testbed.harness.reliability import report
from tests.support import power_ops

SPREAD = int(os.environ.get("SOAK_POWER_SPREAD", "40"))
MANY = ("write", "close", "unlinkat", "link")


@pytest.mark.parametrize("name", list(power_ops.OPERATIONS))
def test_power_cut_at_every_write(request, name):
    power_cut.require_machine(tuple(power_cut.FILESYSTEMS))
    sampled = {call: SPREAD for call in MANY} if SPREAD else None
    with power_cut.workdir("ds-power-soak-%s-" % name) as workdir:
        ref, figures = power_ops.run_operation(name, workdir,
                                               lambda counts, _i, fs: power_ops.every_cut(counts, fs, sampled))
    planned = len([c for c in power_ops.every_cut(ref["counts"], "any", sampled) if c.call != "exit"])
    assert all(counted[power_ops.PLANNED] == planned for counted in figures.values()), (planned, figures)
    power_ops.assert_cut_in_flight(figures)
    report(request, "power_cut_soak_" + name, {"calls": dict(sorted(ref["counts"].items())),
                                               **{fs: dict(sorted(c.items())) for fs, c in figures.items()}})
