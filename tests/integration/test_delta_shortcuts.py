"""`clone --delta`'s shortcuts (issue 11's speed target): below the newest
transaction both sides hold (the anchor), transaction files and o….c files
go by name and size only.  What must still hold: a corrupt file kept on that
trust is replaced, an object a transaction above the anchor wrote (on either
side) gets the master's o….c, and a divergence deeper than the chain window
falls back to every digest.  These are the tree method's (issue 11): the
in-place method (issue 19, test_reseed_in_place.py) is kept out of them by
an empty chain window of its own, which no master can anchor."""

from __future__ import annotations

import shutil

import pytest

from dirstorage_replica import reseed as tree_method
from dirstorage_replica import reseed_inplace, storage
from dirstorage_replica.reseed import reseed
from testbed.fakes.simulated_storage import SimulatedStorage
from tests.integration.test_failover_engine import as_cloned, outside_misc
from tests.support.checks import assert_reads_as


@pytest.fixture(autouse=True)
def by_tree(monkeypatch):
    monkeypatch.setattr(reseed_inplace, "WINDOW", 0)


def commit(home, objects, description):
    """One transaction writing `objects` ({oid int or None for a new one: pickle})."""
    with SimulatedStorage(str(home)) as s:
        objs = {(s.new_oid() if oid is None else oid): pickle for oid, pickle in objects.items()}
        return s.commit(objs, user=b"alice", description=description)


def existing_oids(home):
    st = storage.Storage(str(home))
    return sorted(int(name[1:17], 16) for _rel, name in st.iter_files("A") if name and name.endswith(".c"))


def shared_history(d):
    """The old master (d/master) with two transactions of its own that the
    promoted standby (returned) copied, then one more on the new master."""
    old = d / "master"
    first = commit(old, {None: b"shared one"}, b"shared one")
    commit(old, {None: b"shared two"}, b"shared two")
    new = d / "standby1"
    shutil.copytree(old, new, symlinks=True)
    commit(new, {None: b"after failover"}, b"after failover")
    return old, new, first


def test_the_chain_window_lets_the_master_skip_what_both_hold(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    old, new, _first = shared_history(d)
    anchor = storage.Storage(str(old)).last_tid()
    result = reseed(str(new), str(old))
    assert result["method"] == "tree" and result["anchor_tid"] == storage.hex_tid(anchor)
    assert outside_misc(old) == as_cloned(new, tmp_path)
    assert result["diverged_transactions"] == [] and result["kept_aside"] is None
    assert result["files"] <= 8, result  # the new transaction, its object's two files, x.*; config


def test_a_corrupt_transaction_file_kept_on_trust_is_replaced(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    old, new, first = shared_history(d)
    path = storage.Storage(str(old)).path(storage.transaction_name(first))
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x20  # same size, its MD5 no longer holds
    with open(path, "wb") as f:
        f.write(bytes(data))
    reseed(str(new), str(old))
    assert outside_misc(old) == as_cloned(new, tmp_path)
    storage.Storage(str(old)).transaction(first)  # reads back, MD5 checked


def test_a_corrupt_current_file_kept_on_trust_is_replaced(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    old, new, _first = shared_history(d)
    oid = existing_oids(old)[0]
    path = storage.Storage(str(old)).path(storage.current_name(oid.to_bytes(8, "big")))
    with open(path, "wb") as f:
        f.write(b"\x03\xd4\x00\x00\x00\x00\x00\x01")  # 8 bytes: a revision the storage never wrote
    reseed(str(new), str(old))
    assert outside_misc(old) == as_cloned(new, tmp_path)
    assert_reads_as(old, new)


def test_objects_written_above_the_anchor_on_either_side_get_the_masters_current_file(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    old, new, _first = shared_history(d)
    oids = existing_oids(old)
    commit(old, {oids[0]: b"only the old master wrote this"}, b"unseen order")
    commit(new, {oids[1]: b"only the new master wrote this"}, b"new order")
    result = reseed(str(new), str(old))
    assert [t["description"] for t in result["diverged_transactions"]] == ["unseen order"]
    assert_reads_as(old, new)
    assert outside_misc(old) == as_cloned(new, tmp_path)


def test_a_divergence_deeper_than_the_window_asks_again_with_every_digest(unpack_fixture, tmp_path, monkeypatch):
    d = unpack_fixture("bushy")
    old, new, _first = shared_history(d)
    oids = existing_oids(old)
    commit(old, {oids[0]: b"unseen 1"}, b"unseen 1")
    commit(old, {oids[1]: b"unseen 2"}, b"unseen 2")
    monkeypatch.setattr(tree_method, "WINDOW", 1)
    logged = []
    result = reseed(str(new), str(old), log=logged.append)
    assert any("asking again with every digest" in line for line in logged), logged
    assert [t["description"] for t in result["diverged_transactions"]] == ["unseen 1", "unseen 2"]
    assert_reads_as(old, new)
    assert outside_misc(old) == as_cloned(new, tmp_path)


def test_a_transaction_below_the_masters_pack_point_is_sent_again(unpack_fixture, tmp_path, monkeypatch):
    d = unpack_fixture("bushy")
    monkeypatch.setattr(tree_method, "WINDOW", 1)  # only "shared two" goes with its MD5
    old, new, first = shared_history(d)
    # the new master packs at "shared two": "first"'s predecessor goes (renamed aside, as
    # delay_delete does) and "first"'s "previous tid" field is relinked past it
    st = storage.Storage(str(new))
    data = bytearray(st.transaction_data(first))
    gone = bytes(data[24:32])
    data[24:32] = st.transaction(gone, check_md5=False).prev
    with open(st.path(storage.transaction_name(first)), "wb") as f:
        f.write(bytes(data))
    gone_path = st.path(storage.transaction_name(gone))
    shutil.move(gone_path, gone_path + "-1700000000-deleted")
    second = st.transaction(st.last_tid(), check_md5=False).prev
    with open(st.path("x.packed"), "wb") as f:
        f.write(second)
    reseed(str(new), str(old))
    assert outside_misc(old) == as_cloned(new, tmp_path)
