"""Pure functions of the pull: checking that an increment is whole transactions."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from dirstorage_replica.errors import Corrupt
from dirstorage_replica.increment import validate_increment
from dirstorage_replica.storage import (
    build_transaction,
    current_name,
    parse_transaction,
    revision_name,
    transaction_name,
)


def _tid(n):
    return n.to_bytes(8, "big")


T0, T1, T2, T3 = _tid(0x0100), _tid(0x0200), _tid(0x0300), _tid(0x0400)
A, B = _tid(1), _tid(2)


def _txn(tid, prev, oids):
    return parse_transaction(build_transaction(tid, prev, oids))


def _checker(serial=T2, txns=((T1, T0, [A]), (T2, T1, [A, B])), revisions=None, currents=None, extra=None):
    """What journal's checker keeps: a transaction's header, x.serial and .c files'
    tids, None for a revision."""
    names = {"x.serial": serial} if serial is not None else {}
    for tid, prev, oids in txns:
        names[transaction_name(tid)] = _txn(tid, prev, oids)
    if revisions is None:
        revisions = [(oid, tid) for tid, _prev, oids in txns for oid in oids]
    for oid, tid in revisions:
        names[revision_name(oid, tid)] = None
    if currents is None:
        currents = {A: T2, B: T2}
    for oid, tid in currents.items():
        names[current_name(oid)] = tid
    names.update(extra or {})
    return SimpleNamespace(names=names)


def test_a_whole_increment_gives_its_transactions_oldest_first():
    order = validate_increment(_checker(), T0)
    assert [(t.tid, t.oids) for t in order] == [(T1, [A]), (T2, [A, B])]


def test_an_increment_that_moves_nothing_is_empty():
    assert validate_increment(_checker(serial=T0, txns=(), currents={}), T0) == []


@pytest.mark.parametrize("checker,message", [
    (_checker(extra={"x.packed": T0}), "the increment carries x.packed, which replication never sends"),
    (_checker(serial=None), "the increment has no x.serial"),
    (_checker(serial=T1, txns=(), currents={}), "the increment moves x.serial without transactions"),
    (_checker(serial=T0, txns=(), revisions=[(A, T1)], currents={}),
     "the increment moves x.serial without transactions"),
    (_checker(txns=((T2, T1, [A, B]),), currents={A: T2, B: T2}),
     "the increment is not whole transactions: 0000000000000200 is missing from its chain"),
    (_checker(serial=T2, txns=((T1, T2, [A]), (T2, T1, [A, B]))), "the increment's transaction chain loops"),
    (_checker(txns=((T1, T0, [A]), (T2, T1, [A, B]), (T3, T2, [A])), currents={A: T2, B: T2}),
     "the increment holds transactions outside its chain"),
    (_checker(revisions=[(A, T1), (A, T2)]),
     "the increment lacks revision 0000000000000300 of object 0000000000000002"),
    (_checker(revisions=[(A, T1), (A, T2), (B, T2), (B, T1)]),
     "the increment holds object revisions no transaction wrote"),
    (_checker(currents={A: T1, B: T2}),
     "the increment's current-revision file of object 0000000000000001 does not point to 0000000000000300"),
    (_checker(currents={A: T2}),
     "the increment's current-revision file of object 0000000000000002 does not point to 0000000000000300"),
    (_checker(currents={A: T2, B: T2, _tid(3): T1}),
     "the increment holds current-revision files of objects it did not change"),
], ids=["x.packed", "no-serial", "serial-moves-alone", "revision-without-transaction", "chain-gap", "loop",
        "outside-chain", "missing-revision", "extra-revision", "current-behind", "current-missing", "extra-current"])
def test_an_increment_that_is_not_whole_transactions_is_refused(checker, message):
    with pytest.raises(Corrupt) as err:
        validate_increment(checker, T0)
    assert str(err.value) == message


def test_a_file_already_there_is_replaced_by_rename_never_written_through(tmp_path):
    """An increment applied over a name that already exists (a re-run after
    a crash; a diverged transaction at the very tid of one of the master's,
    whose file an in-place re-seed keeps aside as a hard link) must leave the
    other link's bytes alone."""
    from dirstorage_replica import durable

    target, kept = tmp_path / "t040D", tmp_path / "kept"
    target.write_bytes(b"the diverged transaction")
    os.link(target, kept)
    durable.write_file(str(target), b"the master's", 0o640)
    assert target.read_bytes() == b"the master's" and (target.stat().st_mode & 0o777) == 0o640
    assert kept.read_bytes() == b"the diverged transaction"
    assert not (tmp_path / "t040D.tmp").exists()
