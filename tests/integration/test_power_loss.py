"""Power loss, not just SIGKILL: a cut at the writes of a pull, a clone (new
folder, --force), a re-seed (`clone --delta` in place, and by a new tree keeping the old one aside), a
`promote`, and the master's `direct` snapshot recovery, on real ext4
(data=ordered, data=writeback) and xfs file systems on loop devices.

A SIGKILL loses no write the kernel accepted; a power cut loses everything
not yet on the device.  Here the process is frozen (SIGSTOP through strace's
fault injection) right after its Nth call of a disk-changing syscall and the
loop device's backing file is copied without any sync: only what reached the
device.  The copy is mounted (journal replay) and checked, then the operator's
next run (the next pull, clone, clone --delta or promote) must succeed and
leave the state of a clean run, nothing stray.  See testbed/harness/power_cut.py
(the method, and its self test) and tests/support/power_ops.py (the
operations, one table entry each, and the checks at each cut).

`make test` runs a small sample: each operation on ONE file system, the
operations taking the file systems in turn (SAMPLED_FS), one cut per kind of
call it makes (rotating over first, middle and last call and over the two
kinds of image), plus a cut just after the command reported success; at least
power_ops.IN_FLIGHT_FLOOR of the cuts at a call must freeze the command in
flight (a call number past what the command makes cuts nothing); the self
test runs on all three.  `make soak` (tests/soak/test_power_loss_soak.py) runs
every call on every file system.
"""

from __future__ import annotations

import pytest

from testbed.harness import power_cut
from testbed.harness.reliability import report
from tests.support import power_ops

pytestmark = pytest.mark.slow
FS_NAMES = tuple(power_cut.FILESYSTEMS)


@pytest.fixture(scope="module")
def machine():
    power_cut.require_machine(FS_NAMES)


def test_a_cut_image_holds_only_what_was_synced(machine, request):
    """The harness itself, on every file system and mode: without this the
    other tests would prove nothing."""
    with power_cut.workdir("ds-power-self-") as workdir:
        found = {fs: power_cut.self_test(workdir, fs) for fs in FS_NAMES}
    report(request, "power_cut_self_test", {fs: "strict %s, tick %s" % (f["strict"], f["tick"])
                                            for fs, f in found.items()})


# the file system each operation is cut on in make test: in turn, so that each
# of them takes two operations (make soak runs every operation on all three)
SAMPLED_FS = {name: FS_NAMES[i % len(FS_NAMES)] for i, name in enumerate(power_ops.OPERATIONS)}


@pytest.mark.parametrize("name", list(power_ops.OPERATIONS))
def test_power_cut_at_each_kind_of_write(machine, request, name):
    index = list(power_ops.OPERATIONS).index(name)  # rotates the call numbers and image kinds by operation
    with power_cut.workdir("ds-power-%s-" % name) as workdir:
        ref, figures = power_ops.run_operation(name, workdir,
                                               lambda counts, _i, fs: power_ops.sampled_cuts(counts, index, fs),
                                               filesystems=(SAMPLED_FS[name],))
    assert list(figures) == [SAMPLED_FS[name]]
    for fs, counted in figures.items():
        assert counted[power_ops.PLANNED] == len(ref["counts"]), (fs, counted)  # one cut per kind of call
    power_ops.assert_cut_in_flight(figures)
    report(request, "power_cut_" + name, {"calls": dict(sorted(ref["counts"].items())),
                                          **{fs: dict(sorted(c.items())) for fs, c in figures.items()}})
