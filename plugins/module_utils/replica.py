# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replica side: pull what is new from the master and apply it atomically.

Commit point: the rename of misc/.replica.incoming to journal/replica.tar.
Before it the replica is unchanged; after it, recovery finishes the job.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import time

from . import journal, ustar
from .options import PullOptions
from .packmirror import ask_pack_drops, master_packed, mirror_pack
from .protocol import (
    Request,
    Session,
    ask_with_fallback,
    master_failure,
    pull_request_options,
    request_version,
    require_fields,
    standby_name_option,
)
from .snapshot import PEER_WAIT, take_turn
from .standing import refuse_if_promoted
from .storage import (
    ZERO_TID,
    Busy,
    Corrupt,
    DSError,
    FileLock,
    Refused,
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
# the pull's own lock, beside misc/lock: a hot standby's storage process holds misc/lock
PULL_LOCK = ".ds-replica-pull.lock"
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


def in_use(st, lock):
    """The refusal when misc/lock is held by someone else."""
    pid = lock.holder()
    return Busy("replica %s is in use (misc/lock is held%s): a storage process or another pull has it"
                % (st.home, " by pid %d" % pid if pid else ""),
                "stop the storage that uses the replica, or wait for the other pull to end")


def lock_pull(st):
    """The pull's own lock (misc/PULL_LOCK): two pulls into one replica never
    overlap, even while a hot standby's storage process holds misc/lock."""
    lock = FileLock(st.sub("misc", PULL_LOCK))
    if not lock.acquire():
        pid = lock.holder()
        raise Busy("replica %s is in use by another pull%s" % (st.home, " (pid %d)" % pid if pid else ""),
                   "wait for the other pull to end")
    return lock


def _turn_refused(st):
    def refuse(pid, waited):
        return Busy("replica %s is being served to another standby: ds-replica pid %s has held its snapshot "
                    "for %.0fs" % (st.home, pid or "unknown", waited),
                    "retry later (a serve holds it only while it reads the increment)")
    return refuse


class Hold(object):
    """What a pull holds of its replica once it takes it: the snapshot turn
    (a serve to a cascaded standby waits for it), misc/lock and misc/sublock;
    for a hot standby, its storage process is stopped meanwhile."""

    def __init__(self, st, hot=None, log=None):
        self.st = st
        self.hot = hot
        self.log = log or (lambda msg: None)
        self.turn = self.lock = self.sub = None

    @property
    def taken(self):
        return self.lock is not None

    def take(self):
        """Cold: lock now (refused if held).  Hot: stop the storage process,
        wait for misc/lock, lock."""
        st = self.st
        self.turn = take_turn(st, PEER_WAIT, self.log, _turn_refused(st))
        lock = st.lock()
        if self.hot is not None:
            self.hot.stop_and_lock(lock, st.home)
        elif not lock.acquire():
            raise in_use(st, lock)
        self.lock = lock
        sub = st.sublock()
        if not sub.acquire():
            raise Busy("replica %s is in use (misc/sublock is held)" % st.home, "wait and try again")
        self.sub = sub

    def release(self, failure=None):
        """Release the locks, start a stopped storage process, give up the
        turn.  A failed start is its own error (naming `failure`, if any)."""
        for lock in (self.sub, self.lock):
            if lock is not None:
                lock.release()
        self.sub = self.lock = None
        try:
            if self.hot is not None:
                self.hot.start()
        except DSError as e:
            if failure is None:
                raise
            raise DSError("%s; the pull had failed before: %s" % (e.message, failure), e.hint) from failure
        finally:
            if self.turn is not None:
                self.turn.release()
                self.turn = None


def pull(master, replica_dir, opts=None, log=None, progress=None, hot=None):
    """One replication event.  Returns a result dict; raises DSError.
    `hot` (a hot.HotStandby): the replica is served by a storage process,
    stopped only for the commit and apply."""
    opts = opts or PullOptions()
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    with locked_replica(master, replica_dir, opts.check, log, hot) as (st, incoming, hold):
        before = st.last_tid()
        options = pull_request_options(opts.check, opts.compress, opts.snapshot_timeout, opts.snapshot_interval)
        version = request_version(opts.protocol, options)
        options.update(standby_name_option(opts.standby_name))  # version 0 sends no options
        req = reference_request(st, before, version, options)
        log("replica %s at %s (%s); asking for what is new" % (st.home, hex_tid(before), _when(before)))

        def ask(req):
            return _exchange(master, st, req, opts, log, incoming, before, progress)

        result = ask_with_fallback(ask, req, log)
        packed = result.pop("master_packed", None)
        if not opts.check:
            take_and_apply(st, hold, incoming, result, req, log)
            result["pack"] = pack_as_master(master, st, hold, packed, opts, log)
    result["downtime_seconds"] = round(hot.downtime, 3) if hot is not None else 0.0
    return make_report(result, st, before, opts.check, t0)


@contextlib.contextmanager
def locked_replica(master, replica_dir, check, log, hot=None):
    """The replica under the pull's own lock, taken (cold: misc/lock now; hot:
    only when its journal needs recovery first) and recovered (check mode only
    says what recovery would do).  Yields (Storage, path of the incoming spool,
    Hold); on the way out the spool is removed, the locks released and a
    stopped storage process started again."""
    refuse_same_folder(master, replica_dir)
    st = Storage(replica_dir)
    refuse_if_promoted(st.home)  # never pull into a promoted storage (issue 11)
    st.require_full("replica")
    own = lock_pull(st)
    hold = Hold(st, hot, log)
    incoming = st.sub("misc", INCOMING)
    failure = None
    try:
        _take_first(st, hold, check, log)
        yield st, incoming, hold
    except BaseException as e:
        failure = e
        raise
    finally:
        _remove(incoming)
        try:
            hold.release(failure)
        finally:
            own.release()


def take_and_apply(st, hold, incoming, result, req, log):
    """Apply a received increment: a hot standby's replica is taken now (its
    process stopped) if anything is new, and must not have moved since `req`."""
    if result["transactions"] and not hold.taken:
        hold.take()
        _check_unchanged(st, req, log)
    apply_increment(st, incoming, result, log, hold.taken)


def pack_as_master(master, st, hold, packed, opts, log):
    """When the master's x.packed (from its answer) moved past the replica's,
    pack the replica as the master was (packmirror.py): one exchange of
    names per pack.  Returns the counts, or None."""
    if packed is None or packed <= st.packed_tid() or packed > st.last_tid():
        return None
    if not hold.taken:
        hold.take()  # a hot standby's service is stopped for it, once per pack
    log("the master was packed to %s; asking what its pack set aside" % hex_tid(packed))
    packed, drops = ask_pack_drops(open_channel(master, opts, log), st, standby_name_option(opts.standby_name))
    if packed <= st.packed_tid() or packed > st.last_tid():
        return None
    return mirror_pack(st, packed, drops, log)


def _take_first(st, hold, check, log):
    """A cold pull takes the replica before it asks; a hot one only when the
    replica's journal needs recovery first (then it stays stopped)."""
    if hold.hot is None or (not check and st.journal_entries()):
        hold.take()
    _recover(st, check, log)


def _check_unchanged(st, req, log):
    """After a hot standby's storage process stopped: its newest transaction
    must still be the one the increment was asked for."""
    _recover(st, False, log)
    now = st.last_tid()
    if now != req.tid or st.transaction_md5(now) != req.md5:
        raise Refused("replica %s has diverged: it was written while it served (newest transaction %s, %s when "
                      "the pull began)" % (st.home, hex_tid(now), hex_tid(req.tid)),
                      "a standby's storage process must open it read-only; the increment was not applied; "
                      "make a new copy with 'ds-replica clone'")


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


def reference_request(st, before, version, options):
    """The request naming the replica's newest transaction `before`."""
    try:
        md5 = st.transaction_md5(before)
    except FileNotFoundError:
        raise Corrupt("replica %s: its newest transaction %s has no file" % (st.home, hex_tid(before)),
                      "verify the replica; make a new copy with 'ds-replica clone'")
    return Request("request", version, st.identity, before, md5, options)


def apply_increment(st, incoming, result, log, taken=True):
    """Pass the commit point and apply the increment (or, with nothing new,
    leave a replica taken cold marked as a snapshot)."""
    if result["transactions"]:
        commit_increment(st, incoming)
        log("commit point passed; applying %d files" % result["files"])
        try:
            journal.apply_archive(st)
        except OSError as e:
            raise LocalDiskError("cannot apply the increment to %s (%s%s)" % (
                st.home, e.strerror or e, ": %s" % e.filename if e.filename else ""),
                "it stays pending in journal/replica.tar: fix the cause (free space?) and pull again, "
                "which finishes it first")
    elif taken and st.snapshot_code() is None:
        st.write_snapshot_marker("shutdown")


def make_report(result, st, before, check, t0):
    after = before if check else st.last_tid()
    result.setdefault("wire_bytes", 0)
    result.update(before_tid=hex_tid(before), after_tid=hex_tid(after),
                  changed=bool(result["transactions"] or result.get("pack")) and not check)
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
    chan = WireCounter(open_channel(master, opts, log))
    try:
        with Session(chan, req) as session:
            info = session.start()
            if info.get("dry_run"):
                session.finish_ok()
                require_fields(info, ("transactions", "files", "bytes"))
                return _result(info, info["transactions"], info["files"], info["bytes"])
            read = answer_reader(chan.read, info, opts.bwlimit)
            checker, count = receive_increment(session, read, st, incoming, info, progress)
            session.finish_ok()
    except (OSError, EOFError) as e:
        raise transfer_error(e, incoming)
    return checked_result(checker, count, before, info, chan.wire, log)


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
    result = _result(info, len(order), count[0] if order else 0, count[1] if order else 0)
    result["wire_bytes"] = wire
    if order:
        result["master_newest"] = max(order[-1].tid, _tid(info.get("master_newest_tid")))
    log("received %d transactions, %d files, %d bytes" % (len(order), count[0], count[1]))
    if "snapshot_seconds" in info:
        log("master held in snapshot mode for %.3fs" % info["snapshot_seconds"])
    return result


class LocalDiskError(DSError):
    """The replica's own disk failed (full, read-only...): not the network.
    Not retryable for a one-shot pull (exit 1), but a follower waits and
    tries again, since space may be freed."""


def transfer_error(e, incoming):
    if getattr(e, "errno", None) in LOCAL_DISK_ERRORS:
        return LocalDiskError("cannot store the increment in %s (%s)" % (incoming, e.strerror),
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
