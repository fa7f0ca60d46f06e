# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The master side of a pull: `ds-replica serve HOME`.

Reads a request on stdin, answers on stdout (the request and the answer
header are described in protocol.py): a ustar archive of paths relative
to HOME, after the header for version 1.

The master is held in snapshot mode only while the increment is read
locally: mutable files (x.serial, x.oid, o….c) are read into memory and the
write-once files are opened (an open descriptor keeps the bytes even if a
later pack removes the file); snapshot mode is left before the first byte
goes out.

Nothing a request asks decides what the master does in snapshot mode, and
the master never writes to the standby while it holds it: every answer goes
out after snapshot mode is left, through a `DeadlineWriter` that drops a
standby which stops reading for `write_timeout` seconds (and removes what
was staged for it).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import select
import shutil
import tempfile
import time

from . import ustar
from .delta import IN_PLACE, answer_delta, answer_in_place
from .errors import NotAStorage, Refused, TransportError
from .journal import is_mutable
from .packmirror import OPTION as PACK_DROPS
from .packmirror import answer_pack_drops
from .positions import Recorder, requester
from .protocol import FOLLOW_VERSION, INCREMENT, ChunkWriter, Request, read_request, write_answer_header, write_frame
from .snapshot import Snapshot, stale_code
from .storage import (
    ZERO_TID,
    Storage,
    chain_digests,
    current_name,
    hex_tid,
    open_storage_file,
    parse_transaction,
    read_storage_file,
    revision_name,
    tid_from_hex,
    transaction_name,
)
from .watch import follow_loop, follow_waits

MEMORY_FILE_LIMIT = 64 * 1024  # files up to this size may be read into memory...
MEMORY_BUDGET = 16 * 1024 * 1024  # ...while the increment's bytes in memory stay under this
FD_RESERVE = 64  # descriptors left free for everything else
SPOOL_LIMIT = 1 << 30  # bytes copied into $TMPDIR past the descriptor budget, at most
WRITE_TIMEOUT = 120.0  # seconds a standby may stop reading before it is dropped (serve --write-timeout)


def _fd_budget():
    """How many files the increment may keep open (soft limit raised to hard)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (ValueError, OSError):
                pass
        return max(0, soft - FD_RESERVE)
    except (ImportError, OSError, ValueError):
        return 512


class Entry(object):
    """One file of the answer: bytes in memory, an open file, or a spool slice."""

    __slots__ = ("name", "size", "data", "fd", "fd_offset", "spool_offset")

    def __init__(self, name, size, data=None, fd=None, spool_offset=None, fd_offset=0):
        self.name = name
        self.size = size
        self.data = data
        self.fd = fd
        self.fd_offset = fd_offset  # the answer holds the file from here on (the standby has the rest)
        self.spool_offset = spool_offset


class Increment(object):
    """What one answer sends: its files (Entry: in memory, an open file, or a
    spool slice) gathered in snapshot mode and written after it, with the
    counts the header reports.

    The serve fills one per answer (a pull's, each follow increment's, and
    the re-seed's in delta.py): while the master is in snapshot mode, only
    add_data() and add_file(), which copy nothing large and keep the files
    as they are at that moment (an open descriptor keeps a file's bytes even
    if a pack removes it); after snapshot mode is left, write() sends the
    archive; close() always, last.  The caller sets and reads the counts:
    `transactions` and `master_tid` (the newest transaction sent), `bytes`
    (the sum of the entries' sizes, kept by add_*), `snapshot_seconds`; an
    entry appended directly (`entries`) is a name with no data, as the
    dry run's counts have it."""

    def __init__(self, fd_budget=None, spool_limit=SPOOL_LIMIT):
        self.entries = []
        self.snapshot_seconds = 0.0  # how long gathering it held the master in snapshot mode
        self.transactions = 0
        self.bytes = 0
        self.spool = None
        self.spooled = 0
        self.spool_limit = spool_limit
        self.master_tid = ZERO_TID
        self.in_memory = 0
        self.open_files = 0
        self.fd_budget = fd_budget

    def close(self):
        """Close every descriptor kept and the spool file.  Returns nothing;
        safe to call twice, and after a failure at any step."""
        for e in self.entries:
            if e.fd is not None:
                os.close(e.fd)
                e.fd = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def clear(self):
        """Forget everything gathered (closing what it holds), to gather again."""
        self.close()
        self.__init__(self.fd_budget, self.spool_limit)

    def add_data(self, name, data):
        """Send `data` (bytes, already read) as the file `name` (its path in
        the archive, e.g. A/x.serial).  Returns nothing, raises nothing."""
        self.entries.append(Entry(name, len(data), data=data))
        self.bytes += len(data)
        self.in_memory += len(data)

    def add_file(self, name, path, offset=0):
        """Keep a write-once file (from byte `offset` on) for sending after
        snapshot mode is left: small ones in memory (within a budget), others
        as open descriptors (cheap: no copy while the master is held), and
        past the descriptor budget, copied into a spool file.  `name` is its
        path in the archive, `path` where it is on disk.  Returns nothing.
        Raises Refused at a symbolic link or past `spool_limit` bytes of
        spool, OSError if the file cannot be read (FileNotFoundError: it
        went, which the caller may know how to answer)."""
        if self.fd_budget is None:
            self.fd_budget = _fd_budget()
        fd = None
        if self.open_files < self.fd_budget:
            try:
                fd = open_storage_file(path)
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
        if fd is not None:
            size = max(0, os.fstat(fd).st_size - offset)
            if size <= MEMORY_FILE_LIMIT and self.in_memory + size <= MEMORY_BUDGET:
                if offset:
                    os.lseek(fd, offset, os.SEEK_SET)
                data = _read_fd(fd, size)
                os.close(fd)
                self.add_data(name, data)
                return
            self.entries.append(Entry(name, size, fd=fd, fd_offset=offset))
            self.open_files += 1
            self.bytes += size
            return
        self._spool_file(name, path, offset)

    def _spool_file(self, name, path, offset=0):
        """Out of descriptors: copy into a spool file in $TMPDIR, at most
        `spool_limit` bytes in all."""
        if self.spool is None:
            self.spool = tempfile.TemporaryFile(prefix="ds-replica-")
        with os.fdopen(open_storage_file(path), "rb") as src:
            src.seek(offset)
            spool_at = self.spool.seek(0, os.SEEK_END)
            size = 0
            for chunk in iter(lambda: src.read(1 << 20), b""):
                size += len(chunk)
                if self.spooled + size > self.spool_limit:
                    raise Refused("the answer needs more than %d MiB of spool in $TMPDIR (more files than this "
                                  "process may open at once)" % (self.spool_limit >> 20),
                                  "raise the master account's open files limit (ulimit -n), or pull more often")
                self.spool.write(chunk)
        self.spooled += size
        self.entries.append(Entry(name, size, spool_offset=spool_at))
        self.bytes += size

    def write(self, out):
        """Write the archive (ustar: every entry in the order added, then the
        end blocks) to `out`, a binary file or writer; returns the bytes
        written.  Raises OSError (BrokenPipeError) when the standby has gone,
        TransportError when a DeadlineWriter's standby stops reading."""
        writer = ustar.Writer(out)
        now = int(time.time())
        for e in self.entries:
            if e.data is not None:
                writer.add_bytes(e.name, e.data, mtime=now)
                continue
            if e.fd is not None:
                os.lseek(e.fd, e.fd_offset, os.SEEK_SET)
                writer.add_stream(e.name, e.size, lambda n, fd=e.fd: os.read(fd, n), mtime=now)
            else:
                self.spool.seek(e.spool_offset)
                writer.add_stream(e.name, e.size, self.spool.read, mtime=now)
        writer.close()
        return writer.written


def _read_fd(fd, size):
    parts = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def check_request(st, req):
    """The master's checks of the original tool, in its order."""
    if not os.path.isdir(st.a_dir):
        raise NotAStorage("master %s has no A/ folder: not a DirectoryStorage" % st.home, "check the master path")
    if req.identity.lower() != st.identity.lower():
        raise Refused("replica identity %s does not match master identity %s: the replica is a copy of another "
                      "storage" % (req.identity, st.identity), "check the master and replica paths")


def check_reference(st, req):
    packed = st.packed_tid()
    if packed > req.tid:
        raise Refused("storage has been packed since the last replica (master packed to %s, replica at %s)"
                      % (hex_tid(packed), hex_tid(req.tid)),
                      "re-seed the replica with 'ds-replica clone --delta MASTER REPLICA' (it transfers only what "
                      "differs), and pull more often than the master is packed")
    if req.tid != ZERO_TID:
        try:
            data = st.transaction_data(req.tid)
        except FileNotFoundError:
            raise Refused("reference transaction does not exist on the master (%s): the replica has diverged or "
                          "belongs to another master" % hex_tid(req.tid), "make a new copy with 'ds-replica clone'")
        if hashlib.md5(data).hexdigest() != req.md5:
            raise Refused("reference transaction differs on the master (%s): the replica has diverged"
                          % hex_tid(req.tid), "make a new copy with 'ds-replica clone'")
    if req.tid > st.last_tid():
        raise Refused("replica is ahead of the master (replica %s, master %s)"
                      % (hex_tid(req.tid), hex_tid(st.last_tid())),
                      "check that the master is the right storage")


def collect(st, since, increment=None, dry_run=False, chain=None):
    """List (or gather) what is new since tid `since`: walk the chain, or
    take `chain`, the same walk already made in this snapshot (newest first,
    each read with its bytes and without its MD5 checked: checked here)."""
    inc = increment or Increment()
    newest = st.last_tid()
    inc.master_tid = newest
    if chain is None:
        # the bytes are kept: each transaction file is read once, not again for the answer
        txns = list(st.chain(newest=newest, stop=since, keep_data=not dry_run))
    else:
        txns = [checked_md5(st, txn) for txn in chain]
    txns.reverse()
    inc.transactions = len(txns)
    currents = {}
    for txn in txns:
        for oid in txn.oids:
            name = revision_name(oid, txn.tid)
            if dry_run:
                size = os.path.getsize(st.path(name))
                inc.entries.append(Entry(st.relpath(name), size))
                inc.bytes += size
            else:
                inc.add_file(st.relpath(name), st.path(name))
            currents[oid] = txn.tid
    for txn in txns:
        name = transaction_name(txn.tid)
        if dry_run:
            inc.entries.append(Entry(st.relpath(name), txn.size))
            inc.bytes += txn.size
        else:
            inc.add_data(st.relpath(name), txn.data)
    for oid in sorted(currents):
        name = current_name(oid)
        data = st.read(name)
        inc.add_data(st.relpath(name), data)
    for name in ("x.oid", "x.serial"):
        inc.add_data(st.relpath(name), st.read(name))
    return inc


def checked_md5(st, txn):
    """`txn` (read with its bytes), its MD5 checked as Storage.chain checks it."""
    parse_transaction(txn.data, expect_tid=txn.tid, what="%s: transaction %s" % (st.home, hex_tid(txn.tid)))
    return txn


STAGING_PREFIX = ".clone-"


def staging_folder(code):
    """Where (relative to HOME) the serve of snapshot code `code` stages a copy."""
    return "misc/" + STAGING_PREFIX + code


def stage_clone(st, code, log):
    """Hard-link every storage file of A/ into misc/.clone-CODE/ (same
    layout), so that a first copy can be sent after snapshot mode is left.

    Sound because the storage never rewrites a file in place: new versions of
    x.serial, x.oid and o….c replace the name by rename, and a pack renames
    or unlinks; a link keeps the snapshot's bytes either way.  Returns the
    folder (relative to HOME).  Where links cannot be made (another
    filesystem, no write access, ...) the copy is refused: it is never sent
    from snapshot mode, which would hold the master for as long as the
    standby takes to read it."""
    rel_staging = staging_folder(code)
    staging = st.sub(rel_staging)
    made = set()
    try:
        os.mkdir(staging, 0o700)
        made.add(staging)
        for rel, name in st.iter_files("A"):
            if name is None:
                continue  # pack leftovers (...-deleted) and strays are not part of the storage
            target = os.path.join(staging, *rel.split("/"))
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            os.link(os.path.join(st.a_dir, *rel.split("/")), target, follow_symlinks=False)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise Refused("cannot stage the copy with hard links in %s (%s), and a copy is never sent from "
                      "snapshot mode" % (st.sub("misc"), e.strerror or e),
                      "give the serve's account write access to misc/, on the same filesystem as A/")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return rel_staging


def remove_stale_staging(st):
    """Staging folders of clones whose serve died (same host, dead pid)."""
    try:
        entries = os.listdir(st.sub("misc"))
    except OSError:
        return
    for entry in entries:
        if entry.startswith(STAGING_PREFIX) and stale_code("user/" + entry[len(STAGING_PREFIX):]):
            shutil.rmtree(st.sub("misc", entry), ignore_errors=True)


def write_clone(st, out, folder="A"):
    """Stream everything a copy needs (config/settings, config/identity, A/)
    from `folder` (A/ itself while the master is held in snapshot mode, or a
    staging folder of hard links made in snapshot mode).  Mutable files go
    last, so the copy's x.serial is read after its chain."""
    writer = ustar.Writer(out)
    now = int(time.time())
    counts = {"files": 0, "bytes": 0, "transactions": 0}
    for name in ("settings", "identity"):
        writer.add_bytes("config/" + name, read_storage_file(st.sub("config", name)), mtime=now)
    root = st.sub(folder)
    late = []
    for rel, name in st.iter_files(folder):
        if name is None:
            continue  # pack leftovers (...-deleted) and strays are not part of the storage
        if is_mutable(name):
            late.append(rel)
            continue
        with os.fdopen(open_storage_file(os.path.join(root, *rel.split("/"))), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            writer.add_stream("A/" + rel, size, f.read, mtime=now, what="A/" + rel)
        counts["files"] += 1
        counts["bytes"] += size
        counts["transactions"] += name.startswith("t")
    for rel in late:
        data = read_storage_file(os.path.join(root, *rel.split("/")))
        writer.add_bytes("A/" + rel, data, mtime=now)
        counts["files"] += 1
        counts["bytes"] += len(data)
    writer.close()
    return counts


def answer_verify(st, req, stdout):
    """The master's transaction digests from the replica's newest transaction
    back to `since` (no snapshot needed: transaction files are write-once)."""
    try:
        since = tid_from_hex(req.options.get("since", "0" * 16))
    except ValueError:
        raise Refused("malformed request option since")
    if req.tid > st.last_tid():
        raise Refused("replica is ahead of the master (replica %s, master %s)"
                      % (hex_tid(req.tid), hex_tid(st.last_tid())))
    info = {"master_tid": hex_tid(st.last_tid()), "packed_tid": hex_tid(st.packed_tid()),
            "chain": chain_digests(st, req.tid, since)}
    write_answer_header(stdout, info)
    stdout.flush()
    return None


def remove_detached(path):
    """Remove a staging folder in a child process that outlives this one, so
    the standby gets the exit status at once instead of after unlinking every
    link of the tree (about 11 s for 437k files here).  A child that dies
    leaves a stale staging folder, which the next clone removes."""
    try:
        pid = os.fork()
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    if pid:
        return
    try:  # the child: let go of the ssh session's pipes and terminal
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os._exit(0)


def _serve_clone(st, snap, stdout, log, detach_cleanup=False, on_sent=None):
    """A first copy: hard-link A/ into a staging folder in snapshot mode and
    send it after leaving; the staged tree is removed however the answer
    ends (sent, refused, a signal, a standby dropped for not reading).
    `on_sent(tid)` once it was all written."""
    staged, sent = staging_folder(snap.code), False
    try:
        with snap:
            master_tid = st.last_tid()
            stage_clone(st, snap.code, log)
        log("staged the copy in %.3fs of snapshot mode" % snap.seconds)
        _clone_header(stdout, st, master_tid, snap.seconds)
        counts = write_clone(st, stdout, staged)
        stdout.flush()
        sent = True
    finally:
        if sent and detach_cleanup:
            remove_detached(st.sub(staged))
        else:
            shutil.rmtree(st.sub(staged), ignore_errors=True)
    if on_sent is not None:
        on_sent(master_tid)
    log("clone sent %(files)d files, %(bytes)d bytes" % counts)
    return None


def _clone_header(stdout, st, master_tid, snapshot_seconds):
    info = {"master_tid": hex_tid(master_tid), "format": st.format, "compress": "none",
            "staged": snapshot_seconds is not None}
    if snapshot_seconds is not None:
        info["snapshot_seconds"] = round(snapshot_seconds, 6)
    write_answer_header(stdout, info)


def serve(home, stdin, stdout, log=None, snapshot_timeout=0.0, snapshot_interval=5.0, warn=None,
          detach_cleanup=False, write_timeout=WRITE_TIMEOUT, environ=None):
    """Answer one request.  Raises DSError on refusal (the caller prints it and
    exits non-zero); writes nothing to stdout before all checks passed.  A
    standby that stops reading for `write_timeout` seconds is dropped.
    Where the standby stands is recorded (positions.py) once it was sent
    what it asked for; `environ` (os.environ) names a standby that gave no
    name by its ssh address."""
    log = log or (lambda msg: None)
    req = read_request(stdin)
    st = Storage(home)
    st.require_full("master")
    _check_master(st, req)
    timeout, interval = _snapshot_waits(req.options, snapshot_timeout, snapshot_interval)
    snap = Snapshot(st, timeout=timeout, interval=interval, log=log, warn=warn)
    out = answer_output(stdout, write_timeout)
    recorder = None
    if req.kind != "verify":
        kind = "follow" if req.version >= FOLLOW_VERSION else ("pull" if req.kind == "request" else "clone")
        recorder = Recorder(st.home, requester(req, os.environ if environ is None else environ), kind, warn or log)
    result = _answer(st, req, stdin, out, log, snap, detach_cleanup, recorder)
    out.flush()
    return result


def _answer(st, req, stdin, stdout, log, snap, detach_cleanup, recorder):
    if req.kind == "verify" and req.options.get(PACK_DROPS) == "1":
        return answer_pack_drops(st, stdout, write_answer_header)
    if req.kind == "verify":
        return answer_verify(st, req, stdout)
    remove_stale_staging(st)
    dry_run = req.options.get("dry-run") == "1"
    compress = req.options.get("compress", "none")
    if req.kind == "delta" and req.options.get(IN_PLACE) == "in-place":  # re-seed in place: rewind to the anchor
        return answer_in_place(st, req, snap, stdin, stdout, log, Increment(), collect)
    if req.kind == "delta":  # re-seed by a new tree
        reached = answer_delta(st, req, snap, stdin, stdout, log, Increment())
        if reached is not None:
            recorder.record(reached)
        return None
    if req.version >= FOLLOW_VERSION:
        return _serve_follow(st, req, snap, stdin, stdout, compress, log, recorder)
    if req.kind == "clone":
        return _serve_clone(st, snap, stdout, log, detach_cleanup, recorder.record)
    inc = Increment()
    try:
        snap_seconds = _gather(st, req, inc, None if dry_run else snap, log)
        if req.version >= 1:
            write_answer_header(stdout, _increment_header(st, inc, snap_seconds, compress, dry_run))
        if not dry_run:
            _send(inc, stdout, compress)
        stdout.flush()
        if not dry_run:
            recorder.record(req.tid, inc.master_tid)
        return inc
    finally:
        inc.close()


def _check_master(st, req):
    if req.kind not in ("clone", "delta"):
        check_request(st, req)
    elif not os.path.isdir(st.a_dir):
        raise NotAStorage("master %s has no A/ folder: not a DirectoryStorage" % st.home)


def _snapshot_waits(opts, snapshot_timeout, snapshot_interval):
    """(timeout, interval) of the snapshot retries: the request's (bounded
    by protocol.check_option), else the serve's own."""
    return (float(opts.get("snapshot-timeout", snapshot_timeout)),
            max(float(opts.get("snapshot-interval", snapshot_interval)), 0.1))


def _gather(st, req, inc, snap, log):
    """Check the replica's reference and list what is new into `inc`: in
    snapshot mode, or (snap None, a dry run) without it.  Returns the
    seconds the master was held."""
    if snap is None:
        check_reference(st, req)
        collect(st, req.tid, inc, dry_run=True)
        # committed but still in the master's journal: a pull's snapshot mode flushes them first
        inc.transactions += len([t for t in st.journal_tids() if t > inc.master_tid])
        return 0.0
    with snap:
        method = snap.method  # leaving the snapshot forgets how it was entered
        check_reference(st, req)
        collect(st, req.tid, inc)
    log("master held in snapshot mode for %.3fs (%s)" % (snap.seconds, method))
    return snap.seconds


def _increment_header(st, inc, snap_seconds, compress, dry_run):
    return {"transactions": inc.transactions, "files": len(inc.entries), "bytes": inc.bytes,
            "snapshot_seconds": round(snap_seconds, 6), "master_tid": hex_tid(inc.master_tid),
            "master_newest_tid": hex_tid(max(st.newest_tid(), inc.master_tid)), "packed_tid": hex_tid(st.packed_tid()),
            "format": st.format, "compress": compress, "dry_run": dry_run}


def _send(inc, stdout, compress):
    if compress == "gzip":
        gz = gzip.GzipFile(fileobj=stdout, mode="wb", compresslevel=1, mtime=0)
        inc.write(gz)
        gz.close()
    else:
        inc.write(stdout)


# ------------------------------------------------- follow (request version 2)

def _serve_follow(st, req, snap, stdin, stdout, compress, log, recorder):
    """`ds-replica follow`: check the replica's reference at once, then send
    an increment whenever the newest committed transaction moves (journal
    included: watch.py), until the standby goes.  The standby's record is
    rewritten at most every few seconds (increments and heartbeats): it
    holds the reference of the latest increment (it asked for the next)."""
    interval, heartbeat = follow_waits(req.options)
    check_reference(st, req)
    recorder.record(req.tid)
    reference = [req]

    held = [0.0]

    def send(_known):
        inc = _send_frame(st, reference[0], snap, stdout, compress, log)
        held[0] = inc.snapshot_seconds
        recorder.beat(reference[0].tid, inc.master_tid)
        reference[0] = Request("request", req.version, req.identity, inc.master_tid,
                               st.transaction_md5(inc.master_tid))
        return inc.master_tid

    try:
        follow_loop(stdin, stdout, st.newest_tid, send, req.tid, interval, heartbeat, beat=recorder.beat,
                    about=lambda: {"packed_tid": hex_tid(st.packed_tid())}, held=lambda: held[0])
    finally:
        recorder.flush()
    return None


def _send_frame(st, req, snap, stdout, compress, log):
    """One increment frame: gathered in snapshot mode, sent after leaving it."""
    inc = Increment()
    try:
        snap_seconds = inc.snapshot_seconds = _gather(st, req, inc, snap, log)
        write_frame(stdout, INCREMENT, _increment_header(st, inc, snap_seconds, compress, False))
        chunks = ChunkWriter(stdout)
        _send(inc, chunks, compress)
        chunks.close()
        stdout.flush()
        return inc
    finally:
        inc.close()


# ------------------------------------------------------- the write deadline

class DeadlineWriter(object):
    """The serve's stdout for an answer (a file-like writer over descriptor
    `fd`): a standby that takes no byte for `timeout` seconds is dropped
    (TransportError), so no reader keeps a serve, or what it staged, for
    longer than that.  Each write waits for room (poll) and then writes at
    most PIPE_BUF bytes, which a pipe or socket with room takes at once; the
    descriptor stays blocking (with ssh it may be the same socket as stdin)."""

    def __init__(self, fd, timeout, buffer_size=1 << 16):
        self.fd = fd
        self.timeout = timeout
        self.size = buffer_size
        self.buf = bytearray()
        self.poll = select.poll()
        self.poll.register(fd, select.POLLOUT)

    def write(self, data):
        self.buf += data
        if len(self.buf) >= self.size:
            self._drain()
        return len(data)

    def flush(self):
        self._drain()

    def _drain(self):
        done = 0
        view = memoryview(self.buf)
        try:
            while done < len(view):
                if not self.poll.poll(self.timeout * 1000):
                    raise TransportError("the standby read nothing of the answer for %gs; dropped it" % self.timeout,
                                         "check the standby and the network")
                done += os.write(self.fd, view[done:done + select.PIPE_BUF])
        finally:
            view.release()
            del self.buf[:done]


def answer_output(stdout, timeout):
    """`stdout` behind a DeadlineWriter when it is a descriptor (and a
    timeout is set), else `stdout` itself (a test's BytesIO)."""
    try:
        fd = stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return stdout
    if not timeout:
        return stdout
    stdout.flush()
    return DeadlineWriter(fd, timeout)
