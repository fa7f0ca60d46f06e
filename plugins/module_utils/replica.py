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
import json
import os
import re
import time

from . import journal, snapshot, transport, ustar
from .options import PullOptions
from .serve import Request
from .storage import (
    ZERO_TID,
    Busy,
    Corrupt,
    DSError,
    Refused,
    Storage,
    classify,
    fsync_path,
    hex_tid,
    tid_to_datetime,
    tid_to_epoch,
)

INCOMING = ".replica.incoming"
# errors of the replica's own disk while receiving (not of the network)
LOCAL_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)
ANSWER_PREFIX = b"replica answer 1 "


def parse_master(spec):
    """'[user@]host:path' -> (user, host, path); a plain path -> (None, None, path)."""
    m = re.match(r"^(?:([^@/:]+)@)?(\[[^\]]+\]|[^/:@]+):(.+)$", spec)
    if not m or spec.startswith("/") or spec.startswith("."):
        return None, None, spec
    return m.group(1), m.group(2).strip("[]"), m.group(3)


def open_channel(master, opts, log, verb="serve", prepare=0.0):
    """`prepare`: seconds the master may need beyond its snapshot waits before
    it answers (a clone stages the whole tree first)."""
    user, host, path = parse_master(master)
    if host is None:
        return transport.LocalChannel(path, log=log, snapshot_timeout=0.0)
    command = transport.remote_command(path, opts.remote_command, opts.remote_dir, verb)
    log("connecting to %s and running: %s" % (host, command))
    if opts.ssh_command:
        return transport.openssh(opts.ssh_command, user or opts.user, host, command, port=opts.port,
                                 key_file=opts.key_file, known_hosts_file=opts.known_hosts_file,
                                 accept_new_host_key=opts.accept_new_host_key, timeout=opts.timeout)
    return transport.paramiko_connect(host, command, user=user or opts.user, port=opts.port,
                                      key_file=opts.key_file, known_hosts_file=opts.known_hosts_file,
                                      accept_new_host_key=opts.accept_new_host_key, timeout=opts.timeout,
                                      read_timeout=answer_timeout(opts) + prepare)


def answer_timeout(opts):
    """How long the master may take before its first byte: the I/O timeout plus
    its waits for snapshot mode (its turn among ds-replica processes, then the
    --snapshot-timeout retries)."""
    st = max(0.0, opts.snapshot_timeout or 0.0)
    return opts.timeout + max(st, snapshot.PEER_WAIT) + st


class OldMaster(DSError):
    """A master that is not ds-replica refused a version 1 request."""

    def __init__(self, text):
        self.text = text
        super().__init__("the master refused request version 1: %s" % text)


def master_failure(status, err, what="the master"):
    """Turn a failed serve (exit status and stderr) into one clear line."""
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    if status is not None and status < 0:
        # an ssh client killed by a signal, or (paramiko) no exit status at all
        return transport.TransportError("the connection to %s was lost before the answer was complete" % what,
                                        "check the network and the master; the replica is unchanged")
    if not lines:
        return transport.TransportError("%s ended without an answer (exit status %s)" % (what, status),
                                        "check the network and ds-replica on the master; the replica is "
                                        "unchanged")
    served = [ln for ln in lines if ln.startswith("ds-replica serve:") or ln.startswith("ds-replica:")]
    text = (served or lines)[-1]
    text = re.sub(r"^ds-replica( serve)?:\s*", "", text)
    if status == 255 and not served:
        return transport.TransportError("ssh to %s failed: %s" % (what, text), "check the host, user, key and port")
    if status == 127 or "not found" in text and not served:
        return DSError("%s could not run ds-replica: %s" % (what, text),
                       "install ds-replica on the master or give its folder with -d")
    if "cannot enter snapshot mode" in text:
        return Busy("master refused: %s" % text)
    return Refused("master refused: %s" % text)


class Throttle(object):
    def __init__(self, read, kib_per_second):
        self._read = read
        self.rate = kib_per_second * 1024.0
        self.start = time.monotonic()
        self.total = 0

    def read(self, n):
        data = self._read(min(n, max(4096, int(self.rate / 10))))
        self.total += len(data)
        ahead = self.total / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)
        return data


def validate_increment(checker, before):
    """The increment must be whole transactions chained onto `before`."""
    txns = {}
    revisions = set()
    currents = {}
    serial = None
    for name, parsed in checker.names.items():
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
    if not txns:
        if serial != before or revisions or currents:
            raise Corrupt("the increment moves x.serial without transactions")
        return []
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
    return order


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
    st = Storage(replica_dir)
    st.require_full("replica")
    lock, sub = lock_replica(st)
    incoming = st.sub("misc", INCOMING)
    try:
        if opts.check:
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
        before = st.last_tid()
        try:
            md5 = st.transaction_md5(before)
        except FileNotFoundError:
            raise Corrupt("replica %s: its newest transaction %s has no file" % (st.home, hex_tid(before)),
                          "verify the replica; make a new copy with 'ds-replica clone'")
        options = {}
        if opts.check:
            options["dry-run"] = "1"
        if opts.compress:
            options["compress"] = "gzip"
        if opts.snapshot_timeout:
            options["snapshot-timeout"] = "%g" % opts.snapshot_timeout
            options["snapshot-interval"] = "%g" % opts.snapshot_interval
        version = 1 if (opts.protocol >= 1 or options) else 0
        req = Request("request", version, st.identity, before, md5, options)
        log("replica %s at %s (%s); asking for what is new" % (st.home, hex_tid(before), _when(before)))
        try:
            result = _exchange(master, st, req, opts, log, incoming, before, progress)
        except OldMaster as e:
            if options:
                raise Refused("the master does not speak request version 1 (%s)" % e.text,
                              "drop --check/--compress/--snapshot-timeout for this master, or upgrade it")
            log("the master does not speak request version 1 (%s); asking again with version 0" % e.text)
            req.version = 0
            result = _exchange(master, st, req, opts, log, incoming, before, progress)
        if result["transactions"] and not opts.check:
            _commit(st, incoming)
            log("commit point passed; applying %d files" % result["files"])
            try:
                journal.apply_archive(st)
            except OSError as e:
                raise DSError("cannot apply the increment to %s (%s%s)" % (
                    st.home, e.strerror or e, ": %s" % e.filename if e.filename else ""),
                    "it stays pending in journal/replica.tar: fix the cause (free space?) and pull again, "
                    "which finishes it first")
        elif not opts.check and st.snapshot_code() is None:
            st.write_snapshot_marker("shutdown")
        after = before if opts.check else st.last_tid()
        result.setdefault("wire_bytes", 0)
        result.update(before_tid=hex_tid(before), after_tid=hex_tid(after),
                      changed=bool(result["transactions"]) and not opts.check)
        newest = result.pop("master_newest", None) or (after if not opts.check else None)
        if newest is not None and newest != ZERO_TID and after != ZERO_TID:
            result["lag_seconds"] = round(max(0.0, tid_to_epoch(newest) - tid_to_epoch(after)), 3)
        else:
            result["lag_seconds"] = 0.0
        result["elapsed_seconds"] = round(time.monotonic() - t0, 3)
        return result
    finally:
        try:
            os.unlink(incoming)
        except FileNotFoundError:
            pass
        sub.release()
        lock.release()


def _when(tid):
    when = tid_to_datetime(tid)
    return "empty" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _exchange(master, st, req, opts, log, incoming, before, progress):
    chan = open_channel(master, opts, log)
    ok = False
    try:
        chan.send(req.encode())
        chan.close_input()
        info = {}
        wire = [0]

        def read(n, _raw=chan.read):
            data = _raw(n)
            wire[0] += len(data)
            return data

        if opts.bwlimit:  # the cap is on the wire, before any decompression
            read = Throttle(read, opts.bwlimit).read
        if req.version >= 1:
            first = chan.readline(65536)
            wire[0] += len(first)
            if not first.startswith(ANSWER_PREFIX):
                status, err = chan.finish()
                ok = True
                if status == 0 and not first:
                    raise Corrupt("the master sent no answer")
                text = err if err.strip() else first.decode("utf-8", "replace")
                failure = master_failure(status or 1, text)
                # an old tool answers with its own message and a plain failure
                # status; a killed ssh client (status < 0), a missing command
                # (127) or ssh's own failure (255) are not an old master
                if (0 < status < 126 and text.strip() and "ds-replica serve:" not in text
                        and not isinstance(failure, transport.TransportError)):
                    raise OldMaster(" ".join(text.split())[:200] or "no message")
                raise failure
            try:
                info = json.loads(first[len(ANSWER_PREFIX):].decode("ascii"))
            except ValueError:
                raise Corrupt("the master's answer header is not valid")
            if info.get("dry_run"):
                status, err = chan.finish()
                ok = True
                if status != 0:
                    raise master_failure(status, err)
                return _result(info, info["transactions"], info["files"], info["bytes"])
            if info.get("compress") == "gzip":
                read = gzip.GzipFile(fileobj=_Reader(read), mode="rb").read
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
            status, err = chan.finish()
            ok = True
            if status != 0 or not spool.size:
                raise master_failure(status or 1, err)
            raise
        finally:
            spool.close()
        status, err = chan.finish()
        ok = True
        if status != 0:
            raise master_failure(status, err)
        order = validate_increment(checker, before)
        result = _result(info, len(order), count[0] if order else 0, count[1] if order else 0)
        result["wire_bytes"] = wire[0]
        if order:
            result["master_newest"] = max(order[-1].tid, _tid(info.get("master_newest_tid")))
        log("received %d transactions, %d files, %d bytes" % (len(order), count[0], count[1]))
        if "snapshot_seconds" in info:
            log("master held in snapshot mode for %.3fs" % info["snapshot_seconds"])
        return result
    except (OSError, EOFError) as e:
        if getattr(e, "errno", None) in LOCAL_DISK_ERRORS:
            raise DSError("cannot store the increment in %s (%s)" % (incoming, e.strerror),
                          "free space on the replica's disk (or fix its permissions); the replica is unchanged")
        reason = getattr(e, "strerror", None) or e
        raise transport.TransportError("the transfer from the master broke off (%s)" % reason,
                                       "check the network and the master; the replica is unchanged")
    finally:
        if not ok:
            chan.abort()


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
