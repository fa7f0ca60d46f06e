"""A clone killed after X% of its bytes, resumed with `clone --delta` into
the same path, receives at most (100 - X)% + 10% of a full clone's bytes:
what the dead clone wrote (its hidden partial folder) is kept.  The bytes
are counted on the wire by an ssh stand-in that also kills the clone.

A resume works file by file: a file the kill cut short is sent again whole.
The `flat` case's largest revision is 45% of its bytes, so a kill at 30%
(inside it) costs that file again; the cases here are those where no single
file is larger than the 10% margin at the cut (see the closing notes of the
follow/real-engine issue for the measured flat-30% figure)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checks import assert_reads_as
from tests.support.reliability import DS_REPLICA

COUNTING_SSH = str(Path(__file__).resolve().parents[1] / "support" / "counting_ssh.py")


def wire(tmp_path, what, limit, *args):
    """`ds-replica ARGS` through the counting stand-in; (process, bytes of the answer)."""
    count = tmp_path / ("%s.count" % what)
    proc = subprocess.run([DS_REPLICA, *args[:-2], "-e", "%s %s %s %d" % (sys.executable, COUNTING_SSH, count, limit),
                           "--remote-command", DS_REPLICA, "master.invalid:%s" % args[-2], args[-1]],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc, int(count.read_text())


@pytest.mark.parametrize(("fixture", "share"), [("bushy", 0.3), ("bushy", 0.8), ("flat", 0.8)])
def test_a_resumed_clone_receives_only_what_the_dead_one_had_not(unpack_fixture, tmp_path, fixture, share):
    d = unpack_fixture(fixture)
    master = str(d / "master")
    whole, full = wire(tmp_path, "full", 0, "clone", master, str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    dest = tmp_path / "standby"
    killed, cut = wire(tmp_path, "killed", int(full * share), "clone", master, str(dest))
    assert killed.returncode == -9 and cut == int(full * share)
    assert not dest.exists() and list(tmp_path.glob(".standby.clone-*"))  # what the dead clone wrote
    resumed, got = wire(tmp_path, "resumed", 0, "clone", "--delta", master, str(dest))
    assert resumed.returncode == 0, resumed.stderr
    assert got <= (1 - share + 0.10) * full, (got, full, resumed.stderr)
    assert_reads_as(dest, master)
    assert not list(tmp_path.glob(".standby.clone-*"))
