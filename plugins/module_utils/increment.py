# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An increment as the standby receives it: every member checked while it is
spooled into misc/.replica.incoming, the whole checked to be transactions
chained onto the replica's, then the commit point (the rename of
misc/.replica.incoming to journal/replica.tar).  Shared by the pull, follow
and the in-place re-seed."""

from __future__ import annotations

import errno
import gzip
import os

from . import journal, ustar
from .durable import fsync_path
from .errors import Corrupt, LocalDiskError, TransportError
from .packmirror import master_packed
from .protocol import master_failure
from .storage import ZERO_TID, classify, hex_tid
from .transport import Throttle

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


def checked_result(checker, count, before, info, wire, log):
    """The result of a received increment, once it is checked to be whole
    transactions chained onto `before`."""
    order = validate_increment(checker, before)
    return _received(info, order, count, wire, log)


class WireCounter(object):
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


def answer_reader(read, info, bwlimit):
    if bwlimit:  # the cap is on the wire, before any decompression
        read = Throttle(read, bwlimit).read
    if info.get("compress") == "gzip":
        read = gzip.GzipFile(fileobj=_Reader(read), mode="rb").read
    return read


def receive_increment(session, read, st, incoming, info, progress=None):
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
    result = pull_result(info, len(order), count[0] if order else 0, count[1] if order else 0)
    result["wire_bytes"] = wire
    if order:
        result["master_newest"] = max(order[-1].tid, _tid(info.get("master_newest_tid")))
    log("received %d transactions, %d files, %d bytes" % (len(order), count[0], count[1]))
    if "snapshot_seconds" in info:
        log("master held in snapshot mode for %.3fs" % info["snapshot_seconds"])
    return result


def transfer_error(e, incoming):
    if getattr(e, "errno", None) in LOCAL_DISK_ERRORS:
        return LocalDiskError("cannot store the increment in %s (%s)" % (incoming, e.strerror),
                              "free space on the replica's disk (or fix its permissions); the replica is unchanged")
    reason = getattr(e, "strerror", None) or e
    return TransportError("the transfer from the master broke off (%s)" % reason,
                          "check the network and the master; the replica is unchanged")


def _tid(text):
    return bytes.fromhex(text) if text else ZERO_TID


def pull_result(info, transactions, files, nbytes):
    res = {"transactions": transactions, "files": files, "bytes": nbytes,
           "snapshot_seconds": info.get("snapshot_seconds", 0.0), "master_tid": info.get("master_tid")}
    if info.get("master_newest_tid"):
        res["master_newest"] = _tid(info["master_newest_tid"])
    res["master_packed"] = master_packed(info)
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


def commit_increment(st, incoming):
    """The commit point: the archive becomes journal/replica.tar."""
    target = os.path.join(st.journal_dir, journal.REPLICA_TAR)
    os.replace(incoming, target)
    fsync_path(st.journal_dir, directory=True)
    if st.sync:
        fsync_path(st.sub("misc"), directory=True)
