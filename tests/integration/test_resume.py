"""A clone killed after X% of its bytes, resumed with `clone --delta` into
the same path, receives at most (100 - X)% + 10% of a full clone's bytes:
what the dead clone wrote (its hidden partial folder) is kept.  The bytes
are counted on the wire by an ssh stand-in that also kills the clone.

A file the kill cut short is not sent again whole: the clone keeps what
arrived of a large file (A/<path>.part), and the master sends the rest.
The `flat` case's largest revision is 45% of its bytes: a kill at 30% cuts
it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.harness.reliability import DS_REPLICA
from tests.support.checks import assert_reads_as

COUNTING_SSH = str(Path(__file__).resolve().parents[2] / "testbed" / "ssh_standins" / "counting_ssh.py")


def wire(tmp_path, what, limit, *args):
    """`ds-replica ARGS` through the counting stand-in; (process, bytes of the answer)."""
    count = tmp_path / ("%s.count" % what)
    proc = subprocess.run([DS_REPLICA, *args[:-2], "-e", "%s %s %s %d" % (sys.executable, COUNTING_SSH, count, limit),
                           "--remote-command", DS_REPLICA, "master.invalid:%s" % args[-2], args[-1]],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc, int(count.read_text())


@pytest.mark.parametrize(("fixture", "share"), [("bushy", 0.3), ("bushy", 0.8), ("flat", 0.3), ("flat", 0.8)])
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


def test_a_large_member_with_a_hostile_name_is_refused_before_anything_is_written(tmp_path):
    # what a killed clone keeps of a large file is written as it arrives: its name is checked first
    import io

    from dirstorage_replica import errors, ustar
    from dirstorage_replica import partial as new_copy
    out = io.BytesIO()
    writer = ustar.Writer(out)
    writer.add_bytes("config/settings", b"[structure]\nformat: flat\n")
    writer.add_bytes("A/../../victim", b"x" * 100_000)
    writer.close()
    partial = tmp_path / "partial"
    partial.mkdir()
    keeper = new_copy.PrefixKeeper(str(partial))
    members = ustar.iter_members(io.BytesIO(out.getvalue()).read, on_large=keeper.start)
    with pytest.raises(errors.Corrupt, match="'..' component"):
        new_copy.write_members(members, str(partial), None, keeper)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "partial", "partial/config", "partial/config/settings"]


def test_a_master_may_send_from_an_offset_only_what_the_standby_offered():
    from dirstorage_replica import errors, reseed
    name = "o0000000000000004.040D44D793041BDD"
    offered = {name: ("/nowhere", 1000, "prefix:" + "0" * 32)}
    assert reseed.tails_offered({"tails": {"A/" + name: 1000}}, offered, "flat") == {"A/" + name: offered[name]}
    for hostile in ({"A/" + name: 999}, {"A/o0000000000000005.040D44D793041BDD": 1000}, {"A/../" + name: 1000},
                    ["A/" + name]):
        with pytest.raises(errors.Corrupt, match="tails|offset"):
            reseed.tails_offered({"tails": hostile}, offered, "flat")
