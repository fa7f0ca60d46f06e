"""Failover in the engine (issue 11): `promote`, and `clone --delta` re-seeding
a standby that is behind, an old master that diverged, and a clone that was
interrupted, on the golden `bushy` storage (real engine files)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dirstorage_replica import errors, reseed_inplace, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.fleet_marks import upstream
from dirstorage_replica.info import storage_info
from dirstorage_replica.promote import promote
from dirstorage_replica.replica import pull
from dirstorage_replica.reseed import reseed
from testbed.fakes.simulated_storage import SimulatedStorage
from tests.support.checks import assert_objects, assert_reads_as, manifest, replica_state

DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))


def outside_misc(path):
    """Every file and folder but misc/ and the standby's own config/upstream,
    by content (a clone writes files 0640, whatever the master's mark bits)."""
    return {k: (v[0], v[2]) for k, v in replica_state(path).items()
            if k != "misc" and not k.startswith("misc/") and k != "config/upstream"}


def as_cloned(master, tmp_path):
    """What a plain clone of `master` holds (pack leftovers are not copied)."""
    dest = tmp_path / ("whole-%d" % len(list(tmp_path.glob("whole-*"))))
    clone(str(master), str(dest))
    return outside_misc(dest)


def commit(home, *descriptions):
    """Commit one transaction per description on the storage at `home`."""
    with SimulatedStorage(str(home)) as s:
        tids = [s.commit({s.new_oid(): b"pickle " + d, 1: b"changed by " + d}, user=b"alice", description=d)
                for d in descriptions]
    return [storage.hex_tid(t) for t in tids]


@pytest.fixture
def by_tree(monkeypatch):
    """Keep the in-place method out (an empty chain window: no anchor)."""
    monkeypatch.setattr(reseed_inplace, "WINDOW", 0)


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_delta_brings_a_standby_that_is_behind_to_the_master(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    m = manifest(d)
    result = reseed(str(d / "master"), str(d / "replica"))
    assert result["method"] == "in-place"
    assert_objects(d / "replica", m["master"]["objects"])
    assert_reads_as(d / "replica", d / "master")
    assert result["diverged_transactions"] == [] and result["kept_aside"] is None
    # only what the replica lacked came over the wire: what a pull brings
    assert result["files"] == len(m["expected_increment"]), result
    assert upstream(str(d / "replica")) == str(d / "master")
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []
    # a standby again: the next pull has nothing to do
    assert pull(str(d / "master"), str(d / "replica"))["transactions"] == 0


def test_delta_by_a_new_tree_keeps_the_whole_old_tree_aside(unpack_fixture, tmp_path, by_tree):
    d = unpack_fixture("bushy")
    new_master = copy(d / "master", d / "standby1")  # the standby that was promoted
    commit(new_master, b"after failover")
    late = commit(d / "master", b"late order 1", b"late order 2")  # the old master wrote on, unseen
    before = outside_misc(d / "master")
    result = reseed(str(new_master), str(d / "master"), in_place=True)
    assert result["method"] == "tree"
    assert result["method_reason"] == "no transaction of the chain window is the master's"
    assert [t["tid"] for t in result["diverged_transactions"]] == late
    assert [t["description"] for t in result["diverged_transactions"]] == ["late order 1", "late order 2"]
    assert all(t["user"] == "alice" and t["time"] for t in result["diverged_transactions"])
    aside = Path(result["kept_aside"])
    assert aside.name.startswith("master.before-reseed-") and aside.parent == d
    assert outside_misc(aside) == before, "the old tree kept aside is not the old master, whole"
    assert_reads_as(d / "master", new_master)
    assert outside_misc(d / "master") == as_cloned(new_master, tmp_path)
    assert result["files"] <= 12, result  # the new transaction, its files, x.*; never the whole storage


def test_a_keep_aside_marker_cut_short_is_not_kept(unpack_fixture, by_tree):
    """A power cut between writing misc/reseed-keep-aside.tmp-PID (fsynced) and
    its rename becoming durable leaves that file in the old tree (found by
    tests/integration/test_power_loss.py, operation `clone-delta`): the next
    clone --delta removes it, so the tree it keeps aside holds nothing of it."""
    d = unpack_fixture("bushy")
    new_master = copy(d / "master", d / "standby1")
    commit(new_master, b"after failover")
    commit(d / "master", b"unseen order")
    (d / "master" / "misc" / "reseed-keep-aside.tmp-999999999").write_text(str(d / "master.before-reseed-x"))
    result = reseed(str(new_master), str(d / "master"))
    assert sorted(p.name for p in (Path(result["kept_aside"]) / "misc").glob("reseed-keep-aside*")) == []


def test_a_tree_kept_aside_loses_its_marker_even_after_a_crash(unpack_fixture, by_tree):
    """A crash or power cut after the old tree was renamed to its aside name,
    before the removal of its misc/reseed-keep-aside reached the disk, left the
    marker in the kept-aside tree for ever (found by
    tests/integration/test_power_loss.py, operation `clone-delta`): the next
    clone --delta removes it."""
    d = unpack_fixture("bushy")
    new_master = copy(d / "master", d / "standby1")
    commit(new_master, b"after failover")
    commit(d / "master", b"unseen order")
    aside = Path(reseed(str(new_master), str(d / "master"))["kept_aside"])
    (aside / "misc" / "reseed-keep-aside").write_text(str(aside))  # as the cut left it
    reseed(str(new_master), str(d / "master"))
    assert sorted(p.name for p in (aside / "misc").glob("reseed-keep-aside*")) == []
    assert sorted(p.name for p in d.glob("master.before-reseed-*")) == [aside.name]


def test_the_command_line_lists_the_transactions_kept_aside(unpack_fixture):
    d = unpack_fixture("bushy")
    new_master = copy(d / "master", d / "standby1")
    commit(new_master, b"after failover")
    commit(d / "master", b"unseen order")
    proc = subprocess.run([DS_REPLICA, "clone", "--delta", str(new_master), str(d / "master")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "1 transaction(s) the master does not hold, kept in %s.before-reseed-" % (d / "master") in proc.stderr
    assert "description='unseen order'" in proc.stderr


def test_an_interrupted_clone_resumes_from_what_it_had_written(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    full = clone(str(d / "master"), str(tmp_path / "whole"))
    # a clone that died half-way: its hidden partial folder, half of A/, a dead pid
    dead = subprocess.Popen(["true"])
    dead.wait()
    partial = d / (".standby.clone-%d" % dead.pid)
    copy(tmp_path / "whole", partial)
    names = sorted(p for p in (partial / "A").rglob("*") if p.is_file())
    for p in names[::2]:
        p.unlink()
    names[1].write_bytes(names[1].read_bytes()[:-1])  # a file cut short: sent again
    result = reseed(str(d / "master"), str(d / "standby"), in_place=True)
    assert (result["method"], result["method_reason"]) == ("tree", "%s holds no storage" % (d / "standby"))
    assert outside_misc(d / "standby") == outside_misc(tmp_path / "whole")
    assert 0 < result["files"] < full["files"] * 0.75, (result["files"], full["files"])
    assert not partial.exists()


def test_delta_refuses_a_copy_of_another_storage(unpack_fixture):
    d = unpack_fixture("foreign")
    before = outside_misc(d / "replica")
    with pytest.raises(errors.DSError, match="is a copy of storage .*, not of this master"):
        reseed(str(d / "master"), str(d / "replica"))
    assert outside_misc(d / "replica") == before


def test_a_promoted_storage_refuses_pulls_and_says_since_when(unpack_fixture):
    d = unpack_fixture("bushy")
    result = promote(str(d / "replica"))
    assert result["changed"] and result["promoted_at"]
    assert storage_info(str(d / "replica"))["promoted"]["promoted_at"] == result["promoted_at"]
    before = outside_misc(d / "replica")
    proc = subprocess.run([DS_REPLICA, str(d / "master"), str(d / "replica")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "was promoted to master at %s" % result["promoted_at"] in proc.stderr
    assert outside_misc(d / "replica") == before
    assert promote(str(d / "replica"))["changed"] is False
    status = subprocess.run([DS_REPLICA, "status", str(d / "replica")], capture_output=True, text=True, check=False)
    assert "promoted to master at %s" % result["promoted_at"] in status.stdout


def test_a_promotion_cut_short_leaves_nothing_behind(unpack_fixture):
    """A power cut between writing config/promoted.tmp-PID (fsynced) and its
    rename becoming durable leaves that file and no marker (found by
    tests/integration/test_power_loss.py, operation `promote`): the next
    promote removes it."""
    d = unpack_fixture("bushy")
    (d / "replica" / "config" / "promoted.tmp-999999999").write_text('{"promoted_at": "x", "tid": "y"}\n')
    promote(str(d / "replica"))
    assert sorted(p.name for p in (d / "replica" / "config").glob("promoted*")) == ["promoted"]


def test_a_promoted_storage_is_left_marked_as_a_stopped_snapshot(unpack_fixture):
    """A power cut after an interrupted pull's increment was applied and
    retired, before misc/snapshot was written again, leaves a whole storage
    without its `shutdown` marker (found by tests/integration/test_power_loss.py,
    operation `promote`): promote marks it, as a pull that finds nothing new does."""
    d = unpack_fixture("bushy")
    (d / "replica" / "misc" / "snapshot").unlink()
    promote(str(d / "replica"))
    assert storage.Storage(d / "replica").snapshot_code() == "shutdown"


def test_a_storage_that_fails_its_check_is_not_promoted(unpack_fixture):
    d = unpack_fixture("bushy")
    st = storage.Storage(d / "replica")
    path = st.path(storage.transaction_name(st.last_tid()))
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    os.chmod(path, 0o644)
    Path(path).write_bytes(bytes(data))
    with pytest.raises(errors.DSError, match="fails its check, refusing to promote it"):
        promote(str(d / "replica"))
    assert storage_info(str(d / "replica"))["promoted"] is None
