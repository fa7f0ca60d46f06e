# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Questions about a storage, answered as dicts: `storage_info` (facts),
`self_check` and `verify` (checks), `master_lag` (what a pull would bring).

The command line around them (`ds-replica status` and `verify`, their exit
codes and printing) is in cli.py.
"""

from __future__ import annotations

import datetime
import os
import time

from . import fleet_marks, journal
from .durable import read_file
from .errors import Corrupt
from .follow_state import follower_state
from .keep_aside import finish_pending_unlocked, pending_keep_asides
from .options import PullOptions
from .positions import standby_horizon
from .protocol import Request, Session, require_fields
from .storage import (
    EMPTY_MD5,
    ZERO_TID,
    Storage,
    chain_digests,
    classify,
    hex_tid,
    parse_current,
    parse_revision,
    revision_name,
    tid_to_datetime,
    tid_to_epoch,
    transaction_name,
)
from .transport import open_channel


def _iso(tid):
    when = tid_to_datetime(tid)
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def storage_info(path, max_age_days=None):
    """Facts about a storage folder (never changes anything).  Raises
    Corrupt when its x.serial, x.oid or x.packed could not be opened.  A
    master's `horizon` and `standbys` are those of `standby_horizon`."""
    st = Storage(path)
    flushed, packed = st.last_tid(), st.packed_tid()
    last = st.newest_tid()  # a live storage's newest commits wait in its journal until a batch is flushed
    problems = mutable_problems(st)
    if problems:
        raise Corrupt("%s: %s" % (st.home, problems[0]), "check it with 'ds-replica verify'")
    lock_held, lock_pid = st.lock().probe()
    sub_held, sub_pid = st.sublock().probe()
    entries = st.journal_entries()
    done = [e for e in entries if e.endswith("_done")]
    prev = st.sub("misc", "replica.previous")
    last_rep = os.path.getmtime(prev) if os.path.exists(prev) else None
    b_files = sum(len(files) for _d, _s, files in os.walk(st.b_dir)) if os.path.isdir(st.b_dir) else 0
    return {
        "path": st.home,
        "identity": st.identity,
        "classname": st.classname,
        "format": st.format,
        "version": st.version,
        "last_tid": hex_tid(last),
        "last_time": _iso(last),
        "flushed_tid": hex_tid(flushed),
        "packed_tid": hex_tid(packed),
        "packed_time": _iso(packed),
        "snapshot": st.snapshot_code() is not None,
        "snapshot_code": st.snapshot_code(),
        "lock": {"held": lock_held, "pid": lock_pid},
        "sublock": {"held": sub_held, "pid": sub_pid},
        "journal_backlog": len(done),
        "journal_pending_replica": journal.REPLICA_TAR in entries,
        "spill_files": b_files,
        "last_replication": (datetime.datetime.fromtimestamp(last_rep, datetime.timezone.utc)
                             .strftime("%Y-%m-%dT%H:%M:%SZ") if last_rep else None),
        "last_replication_age_seconds": round(time.time() - last_rep, 1) if last_rep else None,
        "age_seconds": round(time.time() - tid_to_epoch(last), 1) if last != ZERO_TID else None,
        "follower": follower_state(st.home),
        "promoted": fleet_marks.promoted(st.home),  # {promoted_at, tid} once promoted, else None
        "upstream": fleet_marks.upstream(st.home),
        **_horizon_fields(standby_horizon(st.home, max_age_days)),
    }


def _horizon_fields(report):
    return {"horizon": report["horizon"], "standbys": report["standbys"], "silent_standbys": report["silent_behind"]}


def _tid_or_none(read):
    """A tid read by `read` (st.last_tid...), or None when its file is not 8
    bytes (mutable_problems says so)."""
    try:
        return read()
    except Corrupt:
        return None


def _eight_bytes(st, name, problems, required=False):
    """The 8 bytes of mutable file `name` (None if absent or not 8 bytes;
    absent is a problem when `required`)."""
    try:
        data = st.read(name)
    except FileNotFoundError:
        if required:
            problems.append("%s is missing" % st.relpath(name))
        return None
    if len(data) != 8:
        problems.append("%s is %d bytes, not 8" % (st.relpath(name), len(data)))
        return None
    return data


def mutable_problems(st, highest_oid=None):
    """What would stop the storage engine opening the mutable files:
    x.serial exists (every storage has one from its creation on: without
    it the storage reads as empty), x.serial, x.oid and x.packed are 8
    bytes each, x.serial names a
    transaction that exists, and x.oid is not below `highest_oid` (the
    highest oid the chain wrote, when known)."""
    problems = []
    serial = _eight_bytes(st, "x.serial", problems, required=True)
    oid = _eight_bytes(st, "x.oid", problems)
    _eight_bytes(st, "x.packed", problems)
    if serial not in (None, ZERO_TID) and not os.path.exists(st.path(transaction_name(serial))):
        problems.append("%s names transaction %s, which is missing" % (st.relpath("x.serial"), hex_tid(serial)))
    if oid is not None and highest_oid is not None and oid < highest_oid:
        problems.append("%s is %s, below object %s written by the transaction chain"
                        % (st.relpath("x.oid"), hex_tid(oid), hex_tid(highest_oid)))
    return problems


def self_check(st):
    """A storage against its own checksums: the chain down to the pack, every
    revision those transactions wrote, every current-revision file, and the
    mutable files x.serial, x.oid and x.packed."""
    problems = []
    checked_txns, checked_files, highest_oid = _check_chain(st, problems)
    checked_files += _check_currents(st, problems)
    problems += mutable_problems(st, highest_oid)
    return problems, checked_txns, checked_files


def _check_chain(st, problems):
    """(transactions, revisions checked, highest oid written) of the chain
    from x.serial down to the pack."""
    checked_txns = checked_files = 0
    highest_oid = ZERO_TID
    newest = _tid_or_none(st.last_tid)
    if newest is None:
        return 0, 0, None
    try:
        for txn in st.chain(newest=newest, stop=_tid_or_none(st.packed_tid) or ZERO_TID):
            checked_txns += 1
            for oid in txn.oids:
                highest_oid = max(highest_oid, oid)
                checked_files += _check_revision(st, oid, txn.tid, problems)
    except Corrupt as e:
        problems.append(str(e))
    return checked_txns, checked_files, highest_oid


def _check_revision(st, oid, tid, problems):
    """1 if revision `tid` of object `oid` is whole, else 0 (and a problem)."""
    name = revision_name(oid, tid)
    try:
        parse_revision(st.read(name), expect_oid=oid, expect_tid=tid, what=st.relpath(name))
        return 1
    except FileNotFoundError:
        problems.append("%s is missing (written by transaction %s)" % (st.relpath(name), hex_tid(tid)))
    except Corrupt as e:
        problems.append(str(e))
    return 0


def _check_currents(st, problems):
    """Every current-revision file points to a whole revision; returns how
    many were checked."""
    checked = 0
    for rel, name in st.iter_files("A"):
        if name is None or not name.endswith(".c"):
            continue
        _kind, oid, _unused = classify(name)
        try:
            tid = parse_current(read_file(os.path.join(st.a_dir, *rel.split("/"))), what="A/" + rel)
        except Corrupt as e:
            problems.append(str(e))
            continue
        target = revision_name(oid, tid)
        try:
            parse_revision(st.read(target), expect_oid=oid, expect_tid=tid, what=st.relpath(target))
            checked += 1
        except FileNotFoundError:
            problems.append("A/%s points to revision %s, which is missing" % (rel, hex_tid(tid)))
        except Corrupt as e:
            problems.append(str(e))
    return checked


def verify(path, master=None, opts=None, log=None, finish=True):
    """Check a storage against its own checksums and, given a master, against
    the master's transaction history up to the replica's newest transaction.
    An interrupted in-place re-seed (its keep-aside named in `pending_reseed`)
    is finished first (`finished_reseed`; `settled_reseed` says whether the
    storage changed for it), unless not `finish` (check mode)."""
    home = os.path.abspath(path)
    pending = [os.path.basename(p) for p in pending_keep_asides(home)]
    finished, problem = finish_pending_unlocked(home, log or (lambda msg: None)) if finish else ([], None)
    settled = bool(pending) and finish and problem is None
    st = Storage(path)
    problems, txns, files = self_check(st)
    if problem:
        problems.append(problem)
    last = _tid_or_none(st.last_tid) or ZERO_TID
    result = {"path": st.home, "last_tid": hex_tid(last), "checked_transactions": txns,
              "checked_files": files, "master_checked_transactions": 0, "finished_reseed": finished,
              "pending_reseed": pending, "settled_reseed": settled}
    if master:
        since = _tid_or_none(st.packed_tid) or ZERO_TID
        mine = dict(chain_digests(st, last, since))
        theirs = _master_digests(master, st, last, since, opts, log)
        result["master_tid"] = theirs["master_tid"]
        result["master_checked_transactions"] = _compare_chains(mine, theirs, problems)
    result["problems"] = problems
    result["ok"] = not problems
    return result


def _compare_chains(mine, theirs, problems):
    """Our transaction digests against the master's; returns how many match."""
    their_chain = dict((t, m) for t, m in theirs["chain"])
    for t in sorted(set(their_chain) - set(mine)):
        problems.append("master transaction %s is missing from the replica's history" % t)
    matched = 0
    for t, m in sorted(mine.items()):
        if t not in their_chain:
            if t > theirs["packed_tid"]:
                problems.append("transaction %s is not on the master" % t)
        elif their_chain[t] != m:
            problems.append("transaction %s differs from the master's" % t)
        else:
            matched += 1
    return matched


def _ask(master, req, opts, log, needed, limit=65536):
    """Send one request that is answered by its header alone; returns the
    header, once it holds the fields `needed` (their form is checked by
    protocol.parse_answer_header)."""
    with Session(open_channel(master, opts or PullOptions(), log or (lambda m: None)), req) as session:
        answer = session.start(limit)
        session.finish_ok()
    return require_fields(answer, needed)


def _master_digests(master, st, last, since, opts, log):
    req = Request("verify", 1, st.identity, last, EMPTY_MD5.hex(), {"since": hex_tid(since)})
    return _ask(master, req, opts, log, ("master_tid", "packed_tid", "chain"), limit=1 << 26)


def master_lag(path, master, opts=None, log=None):
    """Ask the master what a pull would bring (a dry run, no snapshot mode,
    no lock on the replica): transactions waiting and the lag in seconds."""
    st = Storage(path)
    before = st.last_tid()
    req = Request("request", 1, st.identity, before, st.transaction_md5(before), {"dry-run": "1"})
    answer = _ask(master, req, opts, log, ("master_newest_tid", "transactions", "bytes"))
    newest = bytes.fromhex(answer["master_newest_tid"])
    lag = 0.0
    if newest > before and before != ZERO_TID:
        lag = round(tid_to_epoch(newest) - tid_to_epoch(before), 3)
    return {"master_tid": answer["master_newest_tid"], "master_time": _iso(newest), "lag_seconds": lag,
            "waiting_transactions": answer["transactions"],
            "waiting_bytes": answer["bytes"] if answer["transactions"] else 0}
