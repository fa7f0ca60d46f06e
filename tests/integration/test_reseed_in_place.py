"""The in-place re-seed (issue 19): an old master or a diverged standby is
rewound to the anchor and brought to the master through the journal; only
the diverged transactions' files (and the files they changed) are kept
aside, in a folder laid out as a storage; the tree method remains for what
the in-place one cannot do."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from dirstorage_replica import delta, errors, journal, keep_aside, protocol, reseed_inplace, snapshot, storage
from dirstorage_replica.fleet_marks import mark_promoted, promoted, set_upstream, upstream
from dirstorage_replica.info import verify
from dirstorage_replica.replica import pull
from dirstorage_replica.reseed import reseed as reseed_asked
from testbed.fakes.simulated_storage import SimulatedStorage
from tests.integration.test_failover_engine import DS_REPLICA, commit, copy
from tests.support.checks import assert_objects, assert_reads_as, manifest
from tests.support.crash_calls import outside_misc


def reseed(master, dest, **kwargs):
    """The in-place method (the default), asked for explicitly: these tests are about it."""
    return reseed_asked(master, dest, in_place=True, **kwargs)


def kept_files(aside):
    st = storage.Storage(str(aside))
    return sorted(name for _rel, name in st.iter_files("A") if name)


def a_files(home):
    st = storage.Storage(str(home))
    return {name for _rel, name in st.iter_files("A") if name}


def failover(d):
    """The bushy replica promoted (d/new) and written on; the old master
    (d/master) wrote two transactions it never saw.  Returns (new master,
    the late tids)."""
    new = copy(d / "master", d / "new")
    commit(new, b"after failover")
    mark_promoted(str(d / "master"), storage.Storage(str(d / "master")).last_tid())
    late = commit(d / "master", b"late order 1", b"late order 2")
    return new, late


def test_an_old_master_is_rewound_and_keeps_aside_only_what_it_would_lose(unpack_fixture):
    d = unpack_fixture("bushy")
    new, late = failover(d)
    old_files = a_files(d / "master")
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place"
    assert [t["tid"] for t in result["diverged_transactions"]] == late
    assert [t["description"] for t in result["diverged_transactions"]] == ["late order 1", "late order 2"]
    assert_reads_as(d / "master", new)
    assert verify(str(d / "master"), str(new))["ok"]
    assert promoted(str(d / "master")) is None
    assert pull(str(new), str(d / "master"))["transactions"] == 0
    # the keep-aside: the two transactions, their revisions, the o….c and x.* they replaced; no other file
    aside = Path(result["kept_aside"])
    assert aside.name.startswith("master.before-reseed-") and aside.parent == d
    kept = kept_files(aside)
    late_names = {storage.transaction_name(bytes.fromhex(t)) for t in late}
    assert {n for n in kept if n.startswith("t")} == late_names
    assert {n for n in kept if n.startswith("x.")} == {"x.serial", "x.oid"}
    assert len(kept) < 20, kept
    assert (aside / "config" / "identity").read_bytes() == (d / "master" / "config" / "identity").read_bytes()
    assert (aside / "config" / "promoted").exists() and not (aside / "misc" / keep_aside.PENDING).exists()
    # nothing of the diverged transactions is left in PATH; everything else stayed
    assert not late_names & a_files(d / "master")
    assert old_files - set(kept) <= a_files(d / "master")


def test_objects_the_diverged_transactions_created_with_the_new_masters_oids(unpack_fixture):
    """Both masters allocate the next oid from the same x.oid: the old
    master's new objects and the new master's share their oids."""
    d = unpack_fixture("bushy")
    new = copy(d / "master", d / "new")
    with SimulatedStorage(str(new)) as s:
        oid = s.new_oid()
        s.commit({oid: b"the new master's object"}, user=b"bob", description=b"new")
    with SimulatedStorage(str(d / "master")) as s:
        assert s.new_oid() == oid
        s.commit({oid: b"the old master's object"}, user=b"alice", description=b"old")
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place"
    assert_reads_as(d / "master", new)
    assert storage.Storage(str(d / "master")).load(oid.to_bytes(8, "big"))[1] == b"the new master's object"
    kept = storage.Storage(result["kept_aside"])
    old_tid = bytes.fromhex(result["diverged_transactions"][0]["tid"])
    assert kept.load(oid.to_bytes(8, "big"))[1] == b"the old master's object"
    assert kept.read(storage.current_name(oid.to_bytes(8, "big"))) == old_tid


def test_an_object_only_the_diverged_transactions_created_is_gone(unpack_fixture):
    d = unpack_fixture("bushy")
    new = copy(d / "master", d / "new")
    commit(new, b"after failover")  # writes object 1 and a new object
    with SimulatedStorage(str(d / "master")) as s:
        for _unused in range(3):
            s.new_oid()  # an oid the new master never allocated
        lonely = s.new_oid()
        s.commit({lonely: b"only the old master had this"}, user=b"alice", description=b"lonely")
    lonely = lonely.to_bytes(8, "big")
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place"
    assert_reads_as(d / "master", new)
    assert storage.current_name(lonely) not in a_files(d / "master")
    assert storage.current_name(lonely) in kept_files(result["kept_aside"])


def test_the_diverged_golden_case_reads_as_the_master(unpack_fixture):
    d = unpack_fixture("diverged")
    m = manifest(d)
    result = reseed(str(d / "master"), str(d / "replica"))
    assert result["method"] == "in-place"
    assert len(result["diverged_transactions"]) == 2
    assert_reads_as(d / "replica", d / "master")
    assert_objects(d / "replica", m["master"]["objects"])
    assert verify(str(d / "replica"), str(d / "master"))["ok"]


def test_the_keep_aside_folder_is_listed(unpack_fixture):
    d = unpack_fixture("bushy")
    new, late = failover(d)
    aside = reseed(str(new), str(d / "master"))["kept_aside"]
    proc = subprocess.run([DS_REPLICA, "kept-aside", "--json", aside], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [t["tid"] for t in listed["transactions"]] == late
    assert [t["description"] for t in listed["transactions"]] == ["late order 1", "late order 2"]
    assert all(t["user"] == "alice" and t["time"] and len(t["oids"]) == 2 for t in listed["transactions"])
    text = subprocess.run([DS_REPLICA, "kept-aside", aside], capture_output=True, text=True, check=False)
    assert text.returncode == 0 and "description='late order 2'" in text.stdout and late[0] in text.stdout
    bad = subprocess.run([DS_REPLICA, "kept-aside", str(d)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "not a folder a re-seed kept aside" in bad.stderr


def test_a_divergence_deeper_than_the_window_falls_back_to_a_new_tree(unpack_fixture, monkeypatch):
    d = unpack_fixture("bushy")
    new, _late = failover(d)
    monkeypatch.setattr(reseed_inplace, "WINDOW", 2)  # only the two late transactions
    result = reseed(str(new), str(d / "master"))
    assert (result["method"], result["method_reason"]) == ("tree", "no transaction of the chain window is the master's")
    assert_reads_as(d / "master", new)


def test_a_master_packed_past_the_anchor_falls_back_to_a_new_tree(unpack_fixture):
    """The `packed-since` golden case: the pull is refused and names the cure."""
    d = unpack_fixture("packed-since")
    with pytest.raises(errors.Refused) as refused:
        pull(str(d / "master"), str(d / "replica"))
    assert "packed since the last replica" in str(refused.value)
    assert "'ds-replica clone --delta MASTER REPLICA'" in str(refused.value)
    result = reseed(str(d / "master"), str(d / "replica"))
    assert result["method"] == "tree"
    assert result["method_reason"].startswith("the master is packed past the anchor"), result["method_reason"]
    assert_reads_as(d / "replica", d / "master")
    assert pull(str(d / "master"), str(d / "replica"))["transactions"] == 0


def test_a_partial_clone_to_resume_falls_back_to_a_new_tree(unpack_fixture):
    d = unpack_fixture("bushy")
    dead = subprocess.Popen(["true"])
    dead.wait()
    partial = copy(d / "replica", d / (".replica.clone-%d" % dead.pid))
    shutil.rmtree(partial / "A" / "x")
    result = reseed(str(d / "master"), str(d / "replica"))
    assert (result["method"], result["method_reason"]) == ("tree", "a partial clone to resume")
    assert_reads_as(d / "replica", d / "master")
    assert not partial.exists()


class Crash(Exception):
    pass


def _crash(monkeypatch, module, name):
    def boom(*args, **kwargs):
        raise Crash(name)
    monkeypatch.setattr(module, name, boom)


@pytest.mark.parametrize("where", ["before the commit point", "before the apply", "before the removal"])
def test_the_next_run_finishes_an_interrupted_in_place_reseed(unpack_fixture, monkeypatch, where):
    d = unpack_fixture("bushy")
    new, late = failover(d)
    with monkeypatch.context() as m:
        if where == "before the commit point":
            _crash(m, reseed_inplace, "commit_increment")
        elif where == "before the apply":
            _crash(m, journal, "apply_archive")
        else:
            _crash(m, reseed_inplace, "remove_kept")
        with pytest.raises(Crash):
            reseed(str(new), str(d / "master"))
    asides = sorted(d.glob("master.before-reseed-*"))
    assert len(asides) == 1 and (asides[0] / "misc" / keep_aside.PENDING).exists()
    assert [t["tid"] for t in keep_aside.list_kept(str(asides[0]))["transactions"]] == late
    if where == "before the commit point":
        assert storage.Storage(str(d / "master")).last_tid().hex().upper() == late[-1]
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place"
    assert_reads_as(d / "master", new)
    asides = sorted(d.glob("master.before-reseed-*"))
    assert len(asides) == 1 and not (asides[0] / "misc" / keep_aside.PENDING).exists()
    assert [t["tid"] for t in keep_aside.list_kept(str(asides[0]))["transactions"]] == late
    late_names = {storage.transaction_name(bytes.fromhex(t)) for t in late}
    assert not late_names & a_files(d / "master")
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []


def test_verify_finishes_an_interrupted_in_place_reseed(unpack_fixture, monkeypatch):
    d = unpack_fixture("bushy")
    new, late = failover(d)
    with monkeypatch.context() as m:
        _crash(m, reseed_inplace, "remove_kept")
        with pytest.raises(Crash):
            reseed(str(new), str(d / "master"))
    late_names = {storage.transaction_name(bytes.fromhex(t)) for t in late}
    assert late_names <= a_files(d / "master")  # files nothing reaches
    result = verify(str(d / "master"), str(new))
    assert result["ok"], result["problems"]
    assert result["finished_reseed"] and not late_names & a_files(d / "master")
    assert_reads_as(d / "master", new)


def test_the_verify_module_finishes_an_interrupted_reseed_only_outside_check_mode_and_says_so(unpack_fixture,
                                                                                              monkeypatch):
    from tests.integration.test_modules import run_module

    d = unpack_fixture("bushy")
    new, late = failover(d)
    with monkeypatch.context() as m:
        _crash(m, reseed_inplace, "remove_kept")
        with pytest.raises(Crash):
            reseed(str(new), str(d / "master"))
    late_names = {storage.transaction_name(bytes.fromhex(t)) for t in late}
    (aside,) = keep_aside.pending_keep_asides(str(d / "master"))
    args = {"path": str(d / "master"), "master": str(new)}
    ok, checked = run_module("verify", args, check=True)
    assert checked["changed"] is True and checked["pending_reseed"] == [Path(aside).name], checked
    assert checked["settled_reseed"] is False and late_names <= a_files(d / "master")  # check mode: untouched
    ok, done = run_module("verify", args)
    assert ok and done["changed"] is True and done["finished_reseed"] == [aside], done
    assert not late_names & a_files(d / "master") and keep_aside.pending_keep_asides(str(d / "master")) == []
    ok, again = run_module("verify", args)
    assert ok and again["changed"] is False and again["pending_reseed"] == [], again
    assert_reads_as(d / "master", new)


def test_a_new_tree_keeps_aside_what_diverged_above_the_anchor_of_a_master_packed_past_it(unpack_fixture):
    """A master packed past the anchor: the tree method; the old master's
    own transactions, below the new master's pack point but above the
    anchor, were never the master's (not packed away): kept aside."""
    d = unpack_fixture("bushy")
    new = copy(d / "master", d / "new")
    late = commit(d / "master", b"late order 1", b"late order 2")
    commit(new, b"after failover")  # after the late ones: the pack point below is above them
    st = storage.Storage(str(new))
    (new / "A").joinpath(*st.relpath("x.packed").split("/")[1:]).write_bytes(st.last_tid())
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "tree"
    assert result["method_reason"].startswith("the master is packed past the anchor")
    assert [t["tid"] for t in result["diverged_transactions"]] == late
    assert [t["tid"] for t in keep_aside.list_kept(result["kept_aside"])["transactions"]][-2:] == late
    assert_reads_as(d / "master", new)


def test_a_master_of_an_earlier_version_is_re_seeded_from_by_a_new_tree(unpack_fixture, monkeypatch):
    """A master whose request grammar does not know the `reseed` option
    refuses it: the standby asks again for the tree method."""
    d = unpack_fixture("bushy")
    new, late = failover(d)
    options = dict(protocol.OPTIONS)
    del options[delta.IN_PLACE]
    monkeypatch.setattr(protocol, "OPTIONS", options)  # the master, served in-process, as an earlier version
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "tree"
    assert result["method_reason"] == "the master does not re-seed in place (an earlier version)"
    assert [t["tid"] for t in result["diverged_transactions"]] == late
    assert_reads_as(d / "master", new)


@pytest.mark.parametrize("where", ["before the commit point", "before the apply"])
def test_the_upstream_changes_with_the_files_at_the_commit_point(unpack_fixture, monkeypatch, where):
    """config/upstream names the new master exactly when the files are the new master's: staged
    before the commit point, installed by the apply (or the recovery any tool opening the storage
    runs); a run cut before its commit point leaves the old upstream, and its staged one is dropped."""
    d = unpack_fixture("bushy")
    new, _late = failover(d)
    home = str(d / "master")
    set_upstream(home, "old-upstream:/srv/zodb")
    with monkeypatch.context() as m:
        if where == "before the commit point":
            _crash(m, reseed_inplace, "commit_increment")
        else:
            _crash(m, journal, "apply_archive")
        with pytest.raises(Crash):
            reseed(str(new), home)
    st = storage.Storage(home)
    with st.lock(), st.sublock():
        journal.recover(st)
    assert upstream(home) == ("old-upstream:/srv/zodb" if where == "before the commit point" else str(new))
    assert not (d / "master" / "misc" / journal.STAGED_UPSTREAM).exists()


def test_a_storage_already_the_masters_is_left_as_it_is(unpack_fixture):
    """A second re-seed (a rejoin run again) finds nothing diverged and nothing to apply: no commit
    point, no apply, not a name changed (not even misc/replica.previous), and changed is false."""
    d = unpack_fixture("bushy")
    new, _late = failover(d)
    home = d / "master"
    assert reseed(str(new), str(home))["changed"]

    def every_name():
        return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.name not in ("lock", "sublock"))

    names, files = every_name(), outside_misc(home)
    again = reseed(str(new), str(home))
    assert (again["method"], again["changed"], again["transactions"], again["kept_aside"]) == ("in-place", False, 0,
                                                                                               None)
    assert every_name() == names and outside_misc(home) == files
    assert_reads_as(home, new)


def test_the_window_ends_before_the_digests_pass_the_masters_bound(unpack_fixture, monkeypatch):
    """Transactions that wrote many objects make long window entries ("MD5+OIDS"): the standby's
    window ends where the master's bound (delta.WINDOW_DIGEST_CHARS) would be passed, instead of
    sending a request the master refuses as malformed (found by bench scenario r: 2,048
    transactions of ~8 objects each passed the bound). Here the bound holds three entries: the
    two diverged transactions and the anchor."""
    d = unpack_fixture("bushy")
    new, late = failover(d)
    entries, _txns = reseed_inplace.chain_window(storage.Storage(str(d / "master")))
    assert len(entries) > 3
    bound = sum(len(dig) for _name, _size, dig in entries[:3])
    monkeypatch.setattr(reseed_inplace, "WINDOW_DIGEST_CHARS", bound)
    small, _txns = reseed_inplace.chain_window(storage.Storage(str(d / "master")))
    assert small == entries[:3]
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place" and [t["tid"] for t in result["diverged_transactions"]] == late
    assert_reads_as(d / "master", new)


def test_the_master_refuses_a_window_past_its_bound(monkeypatch):
    """What a hostile standby may send is bounded: digests past WINDOW_DIGEST_CHARS are refused."""
    names = [storage.transaction_name((0x040D000000000000 + i).to_bytes(8, "big")) for i in range(40)]
    lines = [("%s 10 %s+%s\n" % (name, "0" * 32, "0123456789ABCDEF" * 8)).encode("ascii") for name in names]
    body = zlib.compress(b"".join(lines))
    monkeypatch.setattr(delta, "WINDOW_DIGEST_CHARS", len(lines[0]) * 10)
    with pytest.raises(errors.Refused) as refused:
        delta.read_inventory(io.BytesIO(body), len(body), 2 * delta.WINDOW, delta.WINDOW_DIGEST_CHARS)
    assert "too long" in str(refused.value)


OLD_OBJECT = 5  # an object of the bushy case that neither side's commit() writes


def diverge_on_an_old_object(d):
    """As failover(), and the old master's diverged transaction also wrote
    OLD_OBJECT, which the new master has not written since: the master must
    send its o….c (a rewind).  Returns the new master."""
    new = copy(d / "master", d / "new")
    commit(new, b"after failover")
    with SimulatedStorage(str(d / "master")) as s:
        s.commit({OLD_OBJECT: b"the old master changed it"}, user=b"alice", description=b"late")
    return new


def test_the_objects_to_rewind_are_read_after_snapshot_mode(unpack_fixture, monkeypatch):
    """The master holds snapshot mode for the anchor and the increment only: the o….c of the
    objects to rewind (hundreds in bench scenario r) are read after it is left."""
    d = unpack_fixture("bushy")
    new = diverge_on_an_old_object(d)
    held, reads = [], []
    enter, leave, read = snapshot.Snapshot.enter, snapshot.Snapshot.leave, storage.Storage.read
    monkeypatch.setattr(snapshot.Snapshot, "enter", lambda self: (enter(self), held.append(True))[0])
    monkeypatch.setattr(snapshot.Snapshot, "leave", lambda self: (held.clear(), leave(self))[1])
    monkeypatch.setattr(storage.Storage, "read",
                        lambda self, name, *a: (reads.append((self.home, name, bool(held))), read(self, name, *a))[1])
    result = reseed(str(new), str(d / "master"))
    served = [(name, in_snapshot) for home, name, in_snapshot in reads if home == str(new)]
    assert result["method"] == "in-place"
    assert_reads_as(d / "master", new)
    rewound = storage.current_name(OLD_OBJECT.to_bytes(8, "big"))
    assert [in_snapshot for name, in_snapshot in served if name == rewound] == [False]
    assert any(in_snapshot for _name, in_snapshot in served)  # the increment's files


def test_the_master_reads_each_transaction_once_in_snapshot_mode(unpack_fixture, monkeypatch):
    """A pull's work in snapshot mode, not more (issue 19): finding the anchor and gathering the
    increment share one walk of the master's chain down to the anchor, so each transaction file is
    read once (the chain was read twice, the anchor search's walk and the pull's)."""
    d = unpack_fixture("bushy")
    new = diverge_on_an_old_object(d)
    reads = []
    read = storage.Storage.read
    monkeypatch.setattr(storage.Storage, "read",
                        lambda self, name, *a: (reads.append((self.home, name)), read(self, name, *a))[1])
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place" and result["transactions"] >= 1, result
    assert_reads_as(d / "master", new)
    transactions = [name for home, name in reads if home == str(new) and re.match(r"^t[0-9A-F]{6}\.[0-9A-F]{10}$",
                                                                                  name)]
    assert len(transactions) >= result["transactions"] + 1  # the increment's and the anchor
    assert sorted(set(transactions)) == sorted(transactions), sorted(transactions)


def test_an_object_to_rewind_written_after_snapshot_mode_is_gathered_again_in_it(unpack_fixture, monkeypatch):
    """A commit between leaving snapshot mode and reading an o….c to rewind replaces it: its
    snapshot's bytes are gone. The master gathers the whole answer again in snapshot mode (so it
    also sends that commit), and the standby reads as the master; sent as read, the rewind would
    name a revision above the anchor, which the standby refuses."""
    d = unpack_fixture("bushy")
    new = diverge_on_an_old_object(d)
    leave, later = snapshot.Snapshot.leave, []

    def leave_then_commit(self):
        leave(self)
        if not later:  # once: the first answer's snapshot mode has just been left
            with SimulatedStorage(str(new)) as s:
                later.append(s.commit({OLD_OBJECT: b"the new master changed it too"}, user=b"bob",
                                      description=b"meanwhile"))

    monkeypatch.setattr(snapshot.Snapshot, "leave", leave_then_commit)
    result = reseed(str(new), str(d / "master"))
    assert result["method"] == "in-place"
    assert result["master_tid"] == storage.hex_tid(later[0])
    assert_reads_as(d / "master", new)
    assert storage.Storage(str(d / "master")).load(OLD_OBJECT.to_bytes(8, "big"))[1] == b"the new master changed it too"
