# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replica side: pull what is new from the master and apply it atomically.

Commit point: the rename of misc/.replica.incoming to journal/replica.tar.
Before it the replica is unchanged; after it, recovery finishes the job.
"""

from __future__ import annotations

import errno
import gzip
import os
import time

from . import journal, ustar
from .options import PullOptions
from .protocol import (
    Request,
    Session,
    ask_with_fallback,
    master_failure,
    pull_request_options,
    request_version,
)
from .standing import refuse_if_promoted
from .storage import (
    ZERO_TID,
    Busy,
    Corrupt,
    DSError,
    Storage,
    TransportError,
    classify,
    fsync_path,
    hex_tid,
    tid_to_datetime,
    tid_to_epoch,
)
from .transport import Throttle, open_channel, refuse_same_folder

INCOMING = ".replica.incoming"
# errors of the replica's own disk while receiving (not of the network)
LOCAL_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


def validate_increment(checker, before):
    """The increment must be whole transactions chained onto `before`."""
    txns, revisions, currents, serial = _sort_members(checker.names)
    if not txns:
        if serial != before or revisions or currents:
            raise Corrupt("the increment moves x.serial without transactions")
        return []
    order = _chain_order(txns, serial, before)
    _check_revisions(order, revisions, currents)
    return order


def _sort_members(names):
    """(transactions by tid, {(oid, tid)} revisions, currents by oid, x.serial)."""
    txns = {}
    revisions = set()
    currents = {}
    serial = None
    for name, parsed in names.items():
        kind, a, b = classify(name)
        if kind == "t":
            txns[a] = parsed
        elif kind == "o":
            revisions.add((a, b))
        elif kind == "c":
            currents[a] = parsed
        elif name == "x.serial":
            serial = parsed
        elif name == "x.packed":
            raise Corrupt("the increment carries x.packed, which replication never sends")
    if serial is None:
        raise Corrupt("the increment has no x.serial")
    return txns, revisions, currents, serial


def _chain_order(txns, serial, before):
    """The transactions from x.serial back to `before`, oldest first; all of them."""
    order = []
    tid = serial
    while tid != before:
        txn = txns.get(tid)
        if txn is None:
            raise Corrupt("the increment is not whole transactions: %s is missing from its chain" % hex_tid(tid))
        order.append(txn)
        tid = txn.prev
        if len(order) > len(txns):
            raise Corrupt("the increment's transaction chain loops")
    if len(order) != len(txns):
        raise Corrupt("the increment holds transactions outside its chain")
    order.reverse()
    return order


def _check_revisions(order, revisions, currents):
    """Exactly the revisions the transactions wrote, and current-revision
    files pointing to each object's newest one."""
    newest = {}
    for txn in order:
        for oid in txn.oids:
            if (oid, txn.tid) not in revisions:
                raise Corrupt("the increment lacks revision %s of object %s" % (hex_tid(txn.tid), hex_tid(oid)))
            newest[oid] = txn.tid
    if len(revisions) != sum(len(t.oids) for t in order):
        raise Corrupt("the increment holds object revisions no transaction wrote")
    for oid, tid in newest.items():
        if currents.get(oid) != tid:
            raise Corrupt("the increment's current-revision file of object %s does not point to %s"
                          % (hex_tid(oid), hex_tid(tid)))
    if set(currents) - set(newest):
        raise Corrupt("the increment holds current-revision files of objects it did not change")


def lock_replica(st):
    lock = st.lock()
    if not lock.acquire():
        pid = lock.holder()
        raise Busy("replica %s is in use (misc/lock is held%s): a storage process or another pull has it"
                   % (st.home, " by pid %d" % pid if pid else ""),
                   "stop the storage that uses the replica, or wait for the other pull to end")
    sub = st.sublock()
    if not sub.acquire():
        lock.release()
        raise Busy("replica %s is in use (misc/sublock is held)" % st.home, "wait and try again")
    return lock, sub


def pull(master, replica_dir, opts=None, log=None, progress=None):
    """One replication event.  Returns a result dict; raises DSError."""
    opts = opts or PullOptions()
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    refuse_same_folder(master, replica_dir)
    st = Storage(replica_dir)
    refuse_if_promoted(st.home)  # issue 11: never pull into a promoted storage
    st.require_full("replica")
    lock, sub = lock_replica(st)
    incoming = st.sub("misc", INCOMING)
    try:
        _recover(st, opts.check, log)
        before = st.last_tid()
        req = _pull_request(st, before, opts)
        log("replica %s at %s (%s); asking for what is new" % (st.home, hex_tid(before), _when(before)))

        def ask(req):
            return _exchange(master, st, req, opts, log, incoming, before, progress)

        result = ask_with_fallback(ask, req, log)
        if not opts.check:
            _apply(st, incoming, result, log)
        return _report(result, st, before, opts.check, t0)
    finally:
        _remove(incoming)
        sub.release()
        lock.release()


def _recover(st, check, log):
    """Finish what an interrupted pull left (check mode only says so)."""
    if check:
        # check mode changes nothing, not even a recovery: only say so
        journal.check_journal(st)
        report = {"replica_tar": False, "rolled_forward": 0, "rolled_back": 0, "recombined": 0}
        if st.journal_entries():
            log("the replica's journal needs recovery; the next real pull will do it first")
    else:
        report = journal.recover(st)
    if report["replica_tar"]:
        log("applied an increment left pending by an interrupted pull")
    elif report["rolled_forward"] or report["rolled_back"] or report["recombined"]:
        log("recovered the replica's journal")


def _pull_request(st, before, opts):
    try:
        md5 = st.transaction_md5(before)
    except FileNotFoundError:
        raise Corrupt("replica %s: its newest transaction %s has no file" % (st.home, hex_tid(before)),
                      "verify the replica; make a new copy with 'ds-replica clone'")
    options = pull_request_options(opts.check, opts.compress, opts.snapshot_timeout, opts.snapshot_interval)
    return Request("request", request_version(opts.protocol, options), st.identity, before, md5, options)


def _apply(st, incoming, result, log):
    """Pass the commit point and apply the increment (or, with nothing new,
    leave the replica marked as a snapshot)."""
    if result["transactions"]:
        _commit(st, incoming)
        log("commit point passed; applying %d files" % result["files"])
        try:
            journal.apply_archive(st)
        except OSError as e:
            raise DSError("cannot apply the increment to %s (%s%s)" % (
                st.home, e.strerror or e, ": %s" % e.filename if e.filename else ""),
                "it stays pending in journal/replica.tar: fix the cause (free space?) and pull again, "
                "which finishes it first")
    elif st.snapshot_code() is None:
        st.write_snapshot_marker("shutdown")


def _report(result, st, before, check, t0):
    after = before if check else st.last_tid()
    result.setdefault("wire_bytes", 0)
    result.update(before_tid=hex_tid(before), after_tid=hex_tid(after),
                  changed=bool(result["transactions"]) and not check)
    newest = result.pop("master_newest", None) or (after if not check else None)
    if newest is not None and newest != ZERO_TID and after != ZERO_TID:
        result["lag_seconds"] = round(max(0.0, tid_to_epoch(newest) - tid_to_epoch(after)), 3)
    else:
        result["lag_seconds"] = 0.0
    result["elapsed_seconds"] = round(time.monotonic() - t0, 3)
    return result


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _when(tid):
    when = tid_to_datetime(tid)
    return "empty" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _exchange(master, st, req, opts, log, incoming, before, progress):
    """Ask the master once; receive its increment into `incoming`."""
    chan = _WireCounter(open_channel(master, opts, log))
    try:
        with Session(chan, req) as session:
            info = session.start()
            if info.get("dry_run"):
                session.finish_ok()
                return _result(info, info["transactions"], info["files"], info["bytes"])
            read = _answer_reader(chan.read, info, opts.bwlimit)
            checker, count = _receive_increment(session, read, st, incoming, info, progress)
            session.finish_ok()
    except (OSError, EOFError) as e:
        raise _transfer_error(e, incoming)
    order = validate_increment(checker, before)
    return _received(info, order, count, chan.wire, log)


class _WireCounter(object):
    """A channel that counts the bytes of the answer as they come off the wire."""

    def __init__(self, chan):
        self.chan = chan
        self.wire = 0

    def read(self, n):
        data = self.chan.read(n)
        self.wire += len(data)
        return data

    def readline(self, limit):
        data = self.chan.readline(limit)
        self.wire += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.chan, name)


def _answer_reader(read, info, bwlimit):
    if bwlimit:  # the cap is on the wire, before any decompression
        read = Throttle(read, bwlimit).read
    if info.get("compress") == "gzip":
        read = gzip.GzipFile(fileobj=_Reader(read), mode="rb").read
    return read


def _receive_increment(session, read, st, incoming, info, progress):
    """Check every member and spool the archive into `incoming`; returns
    (checker, [files, bytes])."""
    checker = journal.MemberChecker(st.format)
    spool = _Spool(incoming, st.sync)
    count = [0, 0]
    try:
        for member in ustar.iter_members(read, sink=spool.write):
            checker.check(member)
            member.data = None  # spooled already: keep memory flat
            count[0] += 1
            count[1] += member.size
            if progress:
                progress(count[0], count[1], info.get("files"), info.get("bytes"))
    except Corrupt:
        # a broken archive from a master that failed: say why it failed
        status, err = session.finish()
        if status != 0 or not spool.size:
            raise master_failure(status or 1, err)
        raise
    finally:
        spool.close()
    return checker, count


def _received(info, order, count, wire, log):
    result = _result(info, len(order), count[0] if order else 0, count[1] if order else 0)
    result["wire_bytes"] = wire
    if order:
        result["master_newest"] = max(order[-1].tid, _tid(info.get("master_newest_tid")))
    log("received %d transactions, %d files, %d bytes" % (len(order), count[0], count[1]))
    if "snapshot_seconds" in info:
        log("master held in snapshot mode for %.3fs" % info["snapshot_seconds"])
    return result


def _transfer_error(e, incoming):
    if getattr(e, "errno", None) in LOCAL_DISK_ERRORS:
        return DSError("cannot store the increment in %s (%s)" % (incoming, e.strerror),
                       "free space on the replica's disk (or fix its permissions); the replica is unchanged")
    reason = getattr(e, "strerror", None) or e
    return TransportError("the transfer from the master broke off (%s)" % reason,
                          "check the network and the master; the replica is unchanged")


def _tid(text):
    return bytes.fromhex(text) if text else ZERO_TID


def _result(info, transactions, files, nbytes):
    res = {"transactions": transactions, "files": files, "bytes": nbytes,
           "snapshot_seconds": info.get("snapshot_seconds", 0.0), "master_tid": info.get("master_tid")}
    if info.get("master_newest_tid"):
        res["master_newest"] = _tid(info["master_newest_tid"])
    return res


class _Reader(object):
    def __init__(self, read):
        self._read = read

    def read(self, n=-1):
        return self._read(n if n and n > 0 else 1 << 16)


class _Spool(object):
    """misc/.replica.incoming, created on the first byte, truncated first."""

    def __init__(self, path, sync):
        self.path = path
        self.sync = sync
        self.f = None
        self.size = 0

    def write(self, data):
        if self.f is None:
            self.f = open(self.path, "wb")
        self.f.write(data)
        self.size += len(data)

    def close(self):
        if self.f is not None:
            self.f.flush()
            if self.sync:
                os.fsync(self.f.fileno())
            self.f.close()
            self.f = None


def _commit(st, incoming):
    """The commit point: the archive becomes journal/replica.tar."""
    target = os.path.join(st.journal_dir, journal.REPLICA_TAR)
    os.replace(incoming, target)
    fsync_path(st.journal_dir, directory=True)
    if st.sync:
        fsync_path(st.sub("misc"), directory=True)
