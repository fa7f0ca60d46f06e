"""Pure functions of the pull: reading the master argument, turning a failed serve into
one line, and checking that an increment is whole transactions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

# the one place these are imported from (they may move to protocol.py)
from dirstorage_replica.protocol import master_failure
from dirstorage_replica.replica import parse_master, validate_increment
from dirstorage_replica.storage import (
    Busy,
    Corrupt,
    DSError,
    Refused,
    build_transaction,
    current_name,
    parse_transaction,
    revision_name,
    transaction_name,
)
from dirstorage_replica.transport import TransportError

# ------------------------------------------------------------- parse_master


@pytest.mark.parametrize("spec,expected", [
    ("zope@db1:/srv/zodb/main", ("zope", "db1", "/srv/zodb/main")),
    ("db1:/srv/zodb/main", (None, "db1", "/srv/zodb/main")),
    ("db1.example.org:relative/storage", (None, "db1.example.org", "relative/storage")),
    ("192.0.2.7:/srv/s", (None, "192.0.2.7", "/srv/s")),
    ("[::1]:/srv/s", (None, "::1", "/srv/s")),
    ("zope@[fe80::1%eth0]:/srv/s", ("zope", "fe80::1%eth0", "/srv/s")),
    ("db1:/srv/odd:name", (None, "db1", "/srv/odd:name")),       # colons after the first belong to the path
])
def test_parse_master_reads_a_remote_master(spec, expected):
    assert parse_master(spec) == expected


@pytest.mark.parametrize("spec", [
    "/srv/zodb/main",
    "/srv/odd:name",          # absolute path with a colon
    "./db1:/srv/s",           # ./ makes a host-looking name a local path
    "../masters/db1:copy",
    ".old:copy",              # a hidden folder whose name has a colon
    "storage",                # relative, no colon
    "masters/db1:copy",       # a slash before the colon: a path
    "db1:",                   # nothing after the colon
])
def test_parse_master_keeps_a_local_path_as_it_is(spec):
    assert parse_master(spec) == (None, None, spec)


# ----------------------------------------------------------- master_failure

def _line(err):
    text = str(err)
    assert "\n" not in text
    return text


def test_a_lost_connection_says_so_whatever_stderr_holds():
    err = master_failure(-1, "ds-replica serve: cannot enter snapshot mode\n", what="db1")
    assert type(err) is TransportError and err.retryable
    assert _line(err) == ("the connection to db1 was lost before the answer was complete; "
                          "check the network and the master; the replica is unchanged")


@pytest.mark.parametrize("status", [0, 1, None])
def test_a_master_that_ends_silently_is_a_transport_error(status):
    err = master_failure(status, "  \n\n", what="db1")
    assert type(err) is TransportError
    assert _line(err) == ("db1 ended without an answer (exit status %s); check the network and ds-replica on the "
                          "master; the replica is unchanged" % status)


def test_ssh_exit_255_is_an_ssh_failure_with_its_last_line():
    stderr = "Warning: Permanently added 'db1' (ED25519) to the list of known hosts.\r\n" \
             "ssh: connect to host db1 port 2222: Connection refused\r\n"
    err = master_failure(255, stderr, what="db1")
    assert type(err) is TransportError
    assert _line(err) == ("ssh to db1 failed: ssh: connect to host db1 port 2222: Connection refused; "
                          "check the host, user, key and port")


def test_exit_255_after_ds_replica_spoke_is_its_refusal_not_ssh():
    err = master_failure(255, "ds-replica serve: the replica is ahead of the master\n")
    assert type(err) is Refused
    assert _line(err) == "master refused: the replica is ahead of the master"


@pytest.mark.parametrize("status,stderr", [
    (127, "bash: line 1: ds-replica: command not found\n"),
    (1, "sh: 1: ds-replica: not found\n"),
])
def test_a_master_without_ds_replica_says_to_install_it(status, stderr):
    err = master_failure(status, stderr)
    assert type(err) is DSError and not err.retryable
    assert _line(err) == ("the master could not run ds-replica: %s; install ds-replica on the master or give its "
                          "folder with -d" % stderr.strip())


def test_not_found_in_ds_replicas_own_message_is_a_refusal():
    err = master_failure(2, "ds-replica serve: transaction 040D44D78AA51655 not found on the master\n")
    assert type(err) is Refused
    assert _line(err) == "master refused: transaction 040D44D78AA51655 not found on the master"


def test_a_master_in_snapshot_mode_is_busy():
    stderr = "ds-replica serve: cannot enter snapshot mode: /srv/s is in snapshot mode (user/backup); retry later\n"
    err = master_failure(75, stderr)
    assert type(err) is Busy and err.retryable
    assert _line(err) == "master refused: cannot enter snapshot mode: /srv/s is in snapshot mode (user/backup); " \
                         "retry later"


def test_any_other_message_is_a_refusal_with_the_last_ds_replica_line():
    stderr = ("ds-replica serve: note: snapshot taken\n"
              "ds-replica: /srv/s has another identity than the replica\n"
              "Connection to db1 closed.\n")
    err = master_failure(2, stderr)
    assert type(err) is Refused and not err.retryable
    assert _line(err) == "master refused: /srv/s has another identity than the replica"


def test_a_refusal_without_a_ds_replica_line_quotes_the_last_line():
    err = master_failure(1, "Traceback (most recent call last):\n  ...\nPermissionError: [Errno 13] denied\n")
    assert type(err) is Refused
    assert _line(err) == "master refused: PermissionError: [Errno 13] denied"


# ------------------------------------------------------- validate_increment

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
