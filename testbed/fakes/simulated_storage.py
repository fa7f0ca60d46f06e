# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A simulated storage process: a running `Full` DirectoryStorage, written to the spec
(what a ZEO server's storage does on disk; tests use it as the master).

The replication tool is only as tested as this master is real, so it does what
the real storage engine does on disk (shared/spec/directorystorage.md and the
golden fixtures are the reference):

- ``create_storage()`` lays out a new empty storage as ``mkds`` does, plus the
  ``misc/`` files a storage has once it has run and stopped cleanly;
- ``SimulatedStorage`` holds ``misc/lock`` while open and ``misc/sublock`` except in
  snapshot mode, commits through ``journal/working_<TID>_temp`` -> ``_done``,
  leaves them there until a batch is due by the storage's ``[journal]``
  thresholds (200 transactions, 2,000 files, 3,600 s: a quiet master's
  ``A/x.serial`` lags its newest commit by up to an hour), flushes the batch
  into ``A/`` (``B/`` in snapshot mode; entering snapshot mode flushes first),
  recombines ``B/``
  into ``A/`` when leaving snapshot mode, and packs like the real engine (old
  files renamed ``<path>-<epoch>-deleted``, survivors carry the mark bit);
- ``python -m testbed.fakes.simulated_storage HOME ...`` runs it as a separate process that
  a test can SIGTERM (clean close) or SIGKILL (crash).

What it does not model: object references (every object counts as reachable
when packing), undo, and ``Minimal`` storages (``create_storage`` can make one
so that refusals can be tested, ``SimulatedStorage`` refuses to run it).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import secrets
import shutil
import signal
import stat
import sys
import threading
import time

from dirstorage_replica import durable, errors, storage
from testbed.fakes.signal_stop import stop_on

#: config/settings of a new storage: the sections and keys the real ``mkds``
#: writes (the fixtures' settings hold the same ones, with longer comments).
SETTINGS_TEMPLATE = """\

[structure]

format: {format}
version: 0.11

[md5policy]

# when MD5 sums are computed (write) and checked (the others)
write: 1
read: 1
overwrite: 0
undolog: 1
undo: 1
history: 1
pack: 1

[journal]

# how the journal is flushed into A/ in batches
flush_interval: 3600
flush_file_threshold: 2000
flush_transaction_threshold: 200
backlog: 3

[storage]

classname: {classname}
history_timeout: 10
# seconds a packed-away file stays renamed <path>-<epoch>-deleted (0: unlink)
delay_delete: 864000
min_pack_time: 600
check_dangling_references: 1
keep_policy: detailed

[filesystem]

sync: 1
quick_shutdown: 0

[windows]
mark: attributes

[posix]

# packing marks the files it keeps with a permission bit
mark: permissions

dirsync: 1

[keepclass]

"""

#: the start of a protocol-3 pickle of a PersistentMapping, as ZODB writes one
PICKLE_HEAD = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02C"

JOURNAL_FILE_MODE = 0o640   # every file the engine writes through the journal
CREATED_FILE_MODE = 0o644   # x.* files written by mkds, lock files
MARK_BIT = stat.S_IXUSR     # the bit packing leaves on the files it kept (fixtures: 0740)


class SnapshotRefused(errors.Busy):
    """Snapshot mode cannot be entered or left now (the real engine's refusals)."""


# ---------------------------------------------------------------- helpers

def _fsync_dirs(paths, sync):
    if sync:
        for path in sorted(paths):
            durable.fsync_path(path, directory=True)


def _makedirs(path, touched):
    """Create `path` and missing ancestors; record in `touched` every folder
    whose entries changed (to be fsynced)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs(parent, touched)
    os.mkdir(path)
    touched.add(parent)


def _write_new_file(path, data, mode, sync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def _oid_bytes(oid):
    return oid.to_bytes(8, "big")


def create_storage(home, fmt="bushy", identity=None, classname="Full"):
    """Create a new empty storage in `home` (which must not exist or be empty).

    As the real ``mkds``: A/, B/, journal/, misc/, config/settings,
    config/identity (32 random lower-case hex digits, no newline) and A/x.oid,
    A/x.serial, A/x.packed holding 8 zero bytes (mode 0644, as the fixtures'
    never-packed x.packed).  In addition, misc/lock and misc/sublock exist and
    misc/snapshot says ``shutdown``: the storage looks stopped cleanly.
    Returns the `storage.Storage`.
    """
    if fmt not in storage.FORMATS:
        raise ValueError("unknown format %r" % fmt)
    if classname not in ("Full", "Minimal"):
        raise ValueError("unknown storage class %r" % classname)
    if identity is None:
        identity = secrets.token_hex(16)
    if not re.match(r"^[0-9a-f]{32}$", identity):
        raise ValueError("identity must be 32 lower-case hex digits")
    home = os.path.abspath(home)
    if os.path.exists(home) and os.listdir(home):
        raise FileExistsError("%s exists and is not empty" % home)
    os.makedirs(home, exist_ok=True)
    for sub in ("A", "B", "journal", "misc", "config"):
        os.mkdir(os.path.join(home, sub))
    settings = SETTINGS_TEMPLATE.format(format=fmt, classname=classname).encode("ascii")
    durable.write_atomic(os.path.join(home, "config", "settings"), settings, mode=CREATED_FILE_MODE)
    durable.write_atomic(os.path.join(home, "config", "identity"), identity.encode("ascii"),
                         mode=CREATED_FILE_MODE)
    touched = set()
    for name in ("x.oid", "x.serial", "x.packed"):
        path = os.path.join(home, "A", *storage.logical_path(fmt, name).split("/"))
        _makedirs(os.path.dirname(path), touched)
        _write_new_file(path, storage.ZERO_TID, CREATED_FILE_MODE, sync=True)
        touched.add(os.path.dirname(path))
    for name in ("lock", "sublock"):
        _write_new_file(os.path.join(home, "misc", name), b"", CREATED_FILE_MODE, sync=True)
    st = storage.Storage(home)
    st.write_snapshot_marker("shutdown")
    _fsync_dirs(touched | {home, os.path.join(home, "config"), os.path.join(home, "misc")}, True)
    return st


# ------------------------------------------------------------------ master

#: the [journal] keys of config/settings that decide when the journal is
#: flushed, with the real engine's defaults (mkds.py)
JOURNAL_THRESHOLDS = {"flush_transaction_threshold": 200, "flush_file_threshold": 2000, "flush_interval": 3600}


class SimulatedStorage(object):
    """A running Full DirectoryStorage in `home` (see the module docstring).

    Commits stay in ``journal/`` until a batch is flushed into A/ (B/ in
    snapshot mode), as in the real engine (LocalFilesystem._add_to_flush_queue):
    a commit that finds ``flush_transaction_threshold`` transactions or
    ``flush_file_threshold`` files in the batch, or its first older than
    ``flush_interval`` seconds (the age is only looked at when a commit comes),
    hands the batch to a flusher thread, which moves it while commits go on
    (`wait_flushed()` waits for it).
    The thresholds are the storage's ``[journal]`` settings (the real engine's
    defaults: 200, 2,000, 3,600 s); `journal` ({key: value}) overrides them for
    this process.  Entering snapshot mode, packing and closing flush too.

    `flush_each_commit=True` is for the tests that need every commit in A/ at
    once: it is the real engine with ``flush_transaction_threshold: 1``.

    All methods are thread-safe (one re-entrant lock serialises them).
    """

    def __init__(self, home, journal=None, flush_each_commit=False):
        self.home = os.path.abspath(home)
        self.store = storage.Storage(self.home)
        self.thresholds = self._thresholds(journal, flush_each_commit)
        self._mutex = threading.RLock()
        self._main_lock = self.store.lock()
        self._sub_lock = self.store.sublock()
        self._open = False
        # None, "user/<code>" (a tool's snapshot), "packing", or "startup" (opened
        # while someone held misc/sublock: the real engine then stays a snapshot)
        self._snapshot_code = None
        self._pending = []          # journal/working_<TID>_done folders, tid order
        self._due = 0               # how many of the first of them the flusher thread is to move
        self._batch = 0             # transactions of the batch being gathered (not due yet)...
        self._batch_files = 0       # ... their files
        self._batch_since = 0.0     # ... time.time() of the first of them
        self._flusher = None
        self._flush_wanted = threading.Event()
        self._stop_flusher = False
        self._flush_error = None    # what stopped the flusher thread, raised by the next call
        self._last_tid = storage.ZERO_TID
        self._last_oid = storage.ZERO_TID
        self._writer = None
        self._writer_result = None
        self._stop_writer = threading.Event()

    def _thresholds(self, overrides, flush_each_commit):
        values = {}
        for key, default in JOURNAL_THRESHOLDS.items():
            values[key] = self.store.settings.getint("journal", key, fallback=default)
        values.update(overrides or {})
        if flush_each_commit:
            values["flush_transaction_threshold"] = 1
        return values

    # ----------------------------------------------------------- state
    @property
    def is_open(self):
        return self._open

    @property
    def snapshot_code(self):
        return self._snapshot_code

    @property
    def in_snapshot(self):
        return self._snapshot_code is not None

    @property
    def last_tid(self):
        return self._last_tid

    @property
    def last_oid(self):
        return int.from_bytes(self._last_oid, "big")

    @property
    def pending(self):
        """Number of committed transactions not yet flushed out of journal/."""
        return len(self._pending)

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        if self._open:
            self.close()

    def _require_open(self):
        if self._flush_error is not None:
            raise self._flush_error
        if not self._open:
            raise errors.DSError("the test master on %s is not open" % self.home)

    # ---------------------------------------------------- open / close
    def open(self):
        """Lock the storage and recover it as the real engine does on startup."""
        self.store.require_full("test master")
        with self._mutex:
            if self._open:
                raise errors.DSError("the test master on %s is already open" % self.home)
            if not self._main_lock.acquire():
                raise errors.Busy("%s/misc/lock is held: the storage is in use" % self.home)
            try:
                if self._sub_lock.acquire():
                    # a running storage is not a snapshot, whatever the marker said
                    self.store.remove_snapshot_marker()
                    self._snapshot_code = None
                else:
                    self._snapshot_code = "startup"
                # The real engine starts in snapshot mode: the journal rolls
                # forward into B/, then B/ is recombined into A/ if it may write A/.
                self._recover_journal()
                if self._snapshot_code is None:
                    self._recombine()
                self._last_tid = self._read8("x.serial")
                self._last_oid = self._read8("x.oid")
            except BaseException:
                self._sub_lock.release()
                self._main_lock.release()
                raise
            self._open = True
        self._stop_flusher = False
        self._flusher = threading.Thread(target=self._flusher_loop, name="test-master-flusher", daemon=True)
        self._flusher.start()
        return self

    def close(self):
        """Clean shutdown: stop the writer, flush the journal into A/, write
        misc/snapshot ``shutdown``, release the locks.  In snapshot mode (a tool
        holds one) A/ is left alone and misc/snapshot kept, as the real engine
        does; the journal then goes into B/, recombined at the next open()."""
        self._stop_threads()
        with self._mutex:
            try:
                self._require_open()
                self._flush_locked()
                if self._snapshot_code is None:
                    self.store.write_snapshot_marker("shutdown")
            finally:
                self._release()

    def crash(self):
        """Stop as a SIGKILL would: no flush, no marker; the locks go away."""
        self._stop_threads()
        with self._mutex:
            self._release()

    def _release(self):
        self._sub_lock.release()
        self._main_lock.release()
        self._open = False
        self._pending = []
        self._due = self._batch = self._batch_files = 0
        self._snapshot_code = None

    def _stop_threads(self):
        if self._writer is not None:
            self.stop_writer()
        if self._flusher is not None:
            self._stop_flusher = True
            self._flush_wanted.set()
            self._flusher.join()
            self._flusher = None

    def _flusher_loop(self):
        """The engine's flusher thread: moves the batches that commits found
        due, one journal folder at a time (commits go on in between)."""
        while True:
            self._flush_wanted.wait()
            self._flush_wanted.clear()
            if self._stop_flusher:
                return
            try:
                self._flush_due()
            except Exception as e:  # the engine's "broken flusher": surfaced by the next call
                self._flush_error = e
                return

    def _flush_due(self):
        while True:
            with self._mutex:
                if not self._due or not self._pending or not self._open:
                    self._due = 0
                    return
                self._move_folder(self._pending[0], "B" if self._snapshot_code is not None else "A")
                del self._pending[0]
                self._due -= 1

    def wait_flushed(self, timeout=30.0):
        """Wait until the flusher thread has moved every batch found due."""
        deadline = time.monotonic() + timeout
        while self._due and self._flush_error is None:
            if time.monotonic() > deadline:
                raise errors.DSError("the test master's flusher did not finish in %gs" % timeout)
            time.sleep(0.005)

    # ------------------------------------------------------------ journal
    def _recover_journal(self):
        entries = self.store.journal_entries()
        strange = [e for e in entries if not storage.JOURNAL_ENTRY_RE.match(e)]
        if strange:
            # journal/replica.tar belongs to replicas; a master never has one
            raise errors.Corrupt("%s: unexpected entries in journal/: %s" % (self.home, ", ".join(strange)))
        for entry in entries:  # name order is tid order
            path = os.path.join(self.store.journal_dir, entry)
            if entry.endswith("_done"):
                self._move_folder(path, "B")
            else:
                shutil.rmtree(path)
        _fsync_dirs([self.store.journal_dir], self.store.sync)

    def _move_folder(self, src, folder):
        """Move a journal folder's files to their mapped paths under `folder`
        (replacing what is there), then remove the journal folder."""
        touched = set()
        for name in sorted(os.listdir(src)):
            if not storage.LOGICAL_NAME_RE.match(name):
                raise errors.Corrupt("%s: unexpected file %s in the journal" % (self.home, os.path.join(src, name)))
            target = self.store.path(name, folder)
            _makedirs(os.path.dirname(target), touched)
            os.replace(os.path.join(src, name), target)
            touched.add(os.path.dirname(target))
        _fsync_dirs(touched, self.store.sync)
        os.rmdir(src)
        _fsync_dirs([self.store.journal_dir], self.store.sync)

    def _recombine(self):
        """Move every file of B/ to the same place in A/, then empty B/."""
        b_root = self.store.b_dir
        touched = set()
        for dirpath, _dirnames, filenames in os.walk(b_root, topdown=False):
            rel = os.path.relpath(dirpath, b_root)
            a_dir = os.path.normpath(os.path.join(self.store.a_dir, rel))
            if filenames:
                _makedirs(a_dir, touched)
            for fn in filenames:
                os.replace(os.path.join(dirpath, fn), os.path.join(a_dir, fn))
                touched.add(a_dir)
            if dirpath != b_root:
                os.rmdir(dirpath)
        # every folder below B/ is gone: B/ itself is the only one left to sync
        _fsync_dirs(touched | {b_root}, self.store.sync)

    def flush(self):
        """Move the committed transactions out of journal/ into A/ (B/ in
        snapshot mode), in tid order.  Returns how many were moved."""
        with self._mutex:
            self._require_open()
            return self._flush_locked()

    def _flush_locked(self):
        folder = "B" if self._snapshot_code is not None else "A"
        count = len(self._pending)
        while self._pending:
            self._move_folder(self._pending[0], folder)
            del self._pending[0]
        self._due = self._batch = self._batch_files = 0
        return count

    def _queue_for_flush(self, done, files):
        """Add a committed journal folder to the batch; when a threshold is
        reached (the real engine's rule, looked at on commit), hand the batch
        to the flusher thread, as the engine's MultiFlush does."""
        now = time.time()
        if not self._batch:
            self._batch_since = now
        self._pending.append(done)
        self._batch += 1
        self._batch_files += files
        t = self.thresholds
        if (now - self._batch_since > t["flush_interval"] or self._batch_files >= t["flush_file_threshold"]
                or self._batch >= t["flush_transaction_threshold"]):
            self._due = len(self._pending)
            self._batch = self._batch_files = 0
            self._flush_wanted.set()

    # ------------------------------------------------------------- reads
    def read(self, name):
        """The newest content of a logical name, wherever it is now: the
        journal, then B/ (snapshot mode), then A/.  FileNotFoundError if none."""
        with self._mutex:
            for folder in reversed(self._pending):
                try:
                    return durable.read_file(os.path.join(folder, name))
                except FileNotFoundError:
                    pass
            if self._snapshot_code is not None:
                try:
                    return self.store.read(name, "B")
                except FileNotFoundError:
                    pass
            return self.store.read(name, "A")

    def _read8(self, name):
        try:
            data = self.read(name)
        except FileNotFoundError:
            return storage.ZERO_TID
        if len(data) != 8:
            raise errors.Corrupt("%s: %s is not 8 bytes" % (self.home, name))
        return data

    def current_tid(self, oid):
        """Tid of the current revision of object `oid` (int), zero if none."""
        try:
            return storage.parse_current(self.read(storage.current_name(_oid_bytes(oid))))
        except FileNotFoundError:
            return storage.ZERO_TID

    def load(self, oid):
        """(tid, pickle) of the current revision of object `oid` (int)."""
        tid = self.current_tid(oid)
        name = storage.revision_name(_oid_bytes(oid), tid)
        rev = storage.parse_revision(self.read(name), expect_oid=_oid_bytes(oid), expect_tid=tid, what=name)
        return tid, rev.pickle

    # ------------------------------------------------------------ writes
    def new_oid(self):
        """Hand out a new object id (int), as ZODB's new_oid: last + 1."""
        with self._mutex:
            self._require_open()
            self._last_oid = _oid_bytes(int.from_bytes(self._last_oid, "big") + 1)
            return int.from_bytes(self._last_oid, "big")

    def commit(self, objects, user=b"", description=b"", extension=b""):
        """Commit one transaction writing `objects` ({oid int: pickle bytes}).

        Writes journal/working_<TID>_temp/ with, under logical names: the
        transaction file, each object's revision and current-revision file,
        x.serial and x.oid, all mode 0640 and fsynced; fsyncs the folder and
        renames it to ``_done`` (the commit point).  Returns the tid (8 bytes).
        """
        with self._mutex:
            self._require_open()
            tid = storage.tid_later_than(storage.tid_from_epoch(time.time()), self._last_tid)
            files = {}
            oids = []
            for oid_int, pickle in objects.items():
                oid = _oid_bytes(oid_int)
                files[storage.revision_name(oid, tid)] = storage.build_revision(
                    oid, tid, self.current_tid(oid_int), bytes(pickle))
                files[storage.current_name(oid)] = tid
                oids.append(oid)
            last_oid = max([self._last_oid] + oids)
            files[storage.transaction_name(tid)] = storage.build_transaction(
                tid, self._last_tid, oids, user, description, extension)
            files["x.serial"] = tid
            files["x.oid"] = last_oid
            done = self._write_journal(tid, files)
            self._last_tid = tid
            self._last_oid = last_oid
            self._queue_for_flush(done, len(files))
            return tid

    def _write_journal(self, tid, files):
        journal = self.store.journal_dir
        temp = os.path.join(journal, "working_%s_temp" % storage.hex_tid(tid))
        done = os.path.join(journal, "working_%s_done" % storage.hex_tid(tid))
        os.mkdir(temp)
        for name, data in files.items():
            _write_new_file(os.path.join(temp, name), data, JOURNAL_FILE_MODE, self.store.sync)
        _fsync_dirs([temp], self.store.sync)
        os.rename(temp, done)  # the commit point
        _fsync_dirs([journal], self.store.sync)
        return done

    # ------------------------------------------------------------ snapshot
    def enter_snapshot(self, code):
        """As the toolkit's enterSnapshot(code): flush the journal into A/,
        write misc/snapshot ``user/<code>``, release misc/sublock."""
        with self._mutex:
            self._require_open()
            if self._snapshot_code is not None:
                raise SnapshotRefused("Can not enter snapshot mode: snapshot already in use by %r"
                                      % self._snapshot_code)
            self._flush_locked()
            self._snapshot_code = "user/" + code
            self.store.write_snapshot_marker(self._snapshot_code)
            self._sub_lock.release()

    def leave_snapshot(self, code):
        """As the toolkit's leaveSnapshot(code): re-take misc/sublock
        (non-blocking; if a tool holds it, refuse and stay in snapshot mode),
        check the code, remove misc/snapshot, recombine B/ into A/."""
        with self._mutex:
            self._require_open()
            if self._snapshot_code is None or not self._snapshot_code.startswith("user/"):
                raise SnapshotRefused("bad code %r != %r" % ("user/" + code, self._snapshot_code))
            if not self._sub_lock.acquire():
                raise SnapshotRefused("%s/misc/sublock is held by another process: staying in snapshot mode"
                                      % self.home)
            if "user/" + code != self._snapshot_code:
                # (the real engine keeps the sublock here; giving it back keeps
                # the snapshot usable by the tool that owns it)
                self._sub_lock.release()
                raise SnapshotRefused("bad code %r != %r" % ("user/" + code, self._snapshot_code))
            self._leave_locked()

    def _leave_locked(self):
        self.store.remove_snapshot_marker()
        self._recombine()
        self._snapshot_code = None

    # ---------------------------------------------------------------- pack
    def pack(self, up_to_tid):
        """Pack history up to `up_to_tid` (8 bytes) as the real engine does.

        Runs in snapshot mode ``packing`` (so a tool's enterSnapshot is refused
        meanwhile; commits go on into B/).  x.packed becomes the newest
        transaction at or before `up_to_tid`, P.  For each object the newest
        revision at or before P and all later ones are kept; older revisions,
        and transaction files at or before P that no kept revision belongs to,
        are renamed ``<path>-<epoch>-deleted`` (unlinked if
        ``delay_delete`` is 0).  Kept files get the mark bit (mode 0740), as in
        the packed fixtures.  Returns P (unchanged x.packed if nothing to do).
        """
        with self._mutex:
            self._require_open()
            if self._snapshot_code is not None:
                raise SnapshotRefused("Can not pack: snapshot already in use by %r" % self._snapshot_code)
            self._flush_locked()
            self._snapshot_code = "packing"
            self.store.write_snapshot_marker(self._snapshot_code)
        try:
            return self._pack_a(up_to_tid)
        finally:
            with self._mutex:
                self._leave_locked()

    def pack_at(self, when):
        """Pack as ZODB's ``db.pack(when)`` does on the real engine (Unix time
        `when`): never later than ``[storage] min_pack_time`` seconds ago, nor
        past the newest transaction while that is more than 0 (the engine's
        ``_pack_impl``, which keeps replication's datum); then `pack`."""
        min_pack_time = self.store.settings.getint("storage", "min_pack_time", fallback=0)
        when = min(when, time.time() - min_pack_time)
        tid = storage.tid_from_epoch(when)
        if min_pack_time > 0:
            tid = min(tid, self._last_tid)
        return self.pack(tid)

    def _pack_a(self, up_to_tid):
        st = self.store
        old_packed = st.packed_tid()
        target = next((t.tid for t in st.chain(stop=old_packed) if t.tid <= up_to_tid), None)
        if target is None:
            return old_packed
        revisions = collections.defaultdict(list)
        transactions = {}
        survivors = []
        for rel, name in st.iter_files("A"):
            if name is None:  # set aside by an earlier pack
                continue
            kind, ident, tid = storage.classify(name)
            if kind == "o":
                revisions[ident].append((tid, rel))
            elif kind == "t":
                transactions[ident] = rel
            elif kind == "c":
                survivors.append(rel)
        doomed = []
        kept_tids = set()
        for revs in revisions.values():
            revs.sort()
            old = [r for r in revs if r[0] <= target]
            doomed.extend(rel for _unused, rel in old[:-1])
            for tid, rel in old[-1:] + [r for r in revs if r[0] > target]:
                kept_tids.add(tid)
                survivors.append(rel)
        for tid, rel in transactions.items():
            (survivors if tid > target or tid in kept_tids else doomed).append(rel)

        touched = set()
        delay_delete = st.settings.getint("storage", "delay_delete", fallback=0)
        suffix = "-%d-deleted" % int(time.time())
        for rel in doomed:
            path = os.path.join(st.a_dir, rel)
            if delay_delete > 0:
                os.rename(path, path + suffix)
            else:
                os.unlink(path)
            touched.add(os.path.dirname(path))
        for rel in survivors:
            path = os.path.join(st.a_dir, rel)
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | MARK_BIT)
        _fsync_dirs(touched, st.sync)
        durable.write_atomic(st.path("x.packed"), target, mode=JOURNAL_FILE_MODE | MARK_BIT, sync=st.sync)
        return target

    # ---------------------------------------------------------------- load
    def write_load(self, rate_tps, duration=None, small=(100, 5000), large=(100_000, 1_000_000),
                   large_fraction=0.01, objects=1000, seed=None, stop=None):
        """Commit transactions at `rate_tps` for `duration` seconds (forever if
        None) or until the `stop` event is set, in the calling thread.

        Each transaction writes 1 to 4 objects: new ones (from new_oid) while
        fewer than `objects` exist, else updates of random existing ones; a
        pickle is `small` bytes (min, max), or `large` with `large_fraction`
        probability.  The first transaction of an empty storage creates the root
        object 0, as ZODB does.  Returns the number of transactions committed.
        """
        rng = random.Random(seed)
        stop = stop or threading.Event()
        interval = 1.0 / rate_tps
        deadline = None if duration is None else time.monotonic() + duration
        next_at = time.monotonic()
        count = 0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if self._last_tid == storage.ZERO_TID:
                batch = {0: self._random_pickle(rng, small)}
                description = b"initial database creation"
            else:
                batch = {}
                for _unused in range(rng.randint(1, 4)):
                    if self.last_oid + 1 < objects and rng.random() < 0.5:
                        oid = self.new_oid()
                    else:
                        oid = rng.randint(0, self.last_oid)
                    size = large if rng.random() < large_fraction else small
                    batch[oid] = self._random_pickle(rng, size)
                description = b"load %d" % count
            self.commit(batch, user=b"/ test-master", description=description)
            count += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.monotonic()  # running late: do not burst to catch up
        return count

    @staticmethod
    def _random_pickle(rng, size_range):
        size = rng.randint(*size_range)
        return PICKLE_HEAD + rng.randbytes(max(0, size - len(PICKLE_HEAD) - 1)) + b"."

    def start_writer(self, rate_tps, duration=None, **load_args):
        """Run write_load() in a background thread; stop it with stop_writer()."""
        if self._writer is not None:
            raise errors.DSError("a writer is already running")
        self._stop_writer.clear()
        self._writer_result = None

        def run():
            try:
                self._writer_result = self.write_load(rate_tps, duration, stop=self._stop_writer, **load_args)
            except BaseException as e:
                self._writer_result = e

        self._writer = threading.Thread(target=run, name="test-master-writer", daemon=True)
        self._writer.start()

    def stop_writer(self):
        """Stop the background writer; returns how many transactions it wrote
        (re-raises its exception if it failed)."""
        if self._writer is None:
            return 0
        self._stop_writer.set()
        self._writer.join()
        self._writer = None
        if isinstance(self._writer_result, BaseException):
            raise self._writer_result
        return self._writer_result


# ------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m testbed.fakes.simulated_storage",
        description="Run a test master storage until killed, SIGTERM (clean close) or --duration.")
    parser.add_argument("home")
    parser.add_argument("--create", metavar="FORMAT", choices=storage.FORMATS,
                        help="create the storage first, in this format")
    parser.add_argument("--identity", help="identity for --create (32 lower-case hex digits)")
    parser.add_argument("--rate", type=float, default=0.0, help="transactions per second to write (0: none)")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until signalled)")
    parser.add_argument("--flush-transactions", type=int, metavar="N",
                        help="flush the journal at a commit that finds N transactions waiting "
                             "(default: the storage's flush_transaction_threshold, 200 when new)")
    parser.add_argument("--flush-files", type=int, metavar="N",
                        help="... or N files waiting (default: flush_file_threshold, 2000)")
    parser.add_argument("--flush-age", type=float, metavar="SECONDS",
                        help="... or the oldest waiting older than SECONDS (default: flush_interval, 3600)")
    parser.add_argument("--seed", type=int, help="random seed for the written load")
    parser.add_argument("--xmlrpc-port", type=int, help="serve the snapshot toolkit on this port (0: any free port)")
    parser.add_argument("--user", default="admin", help="XML-RPC basic-auth user")
    parser.add_argument("--password", help="XML-RPC basic-auth password (default: random)")
    args = parser.parse_args(argv)

    from testbed.fakes.toolkit import ToolkitServer

    if args.create:
        create_storage(args.home, args.create, identity=args.identity)
    stop = stop_on(signal.SIGTERM, signal.SIGINT)
    journal = {key: value for key, value in (("flush_transaction_threshold", args.flush_transactions),
                                             ("flush_file_threshold", args.flush_files),
                                             ("flush_interval", args.flush_age)) if value is not None}
    master = SimulatedStorage(args.home, journal=journal).open()
    server = None
    try:
        if args.xmlrpc_port is not None:
            server = ToolkitServer(master, username=args.user, password=args.password, port=args.xmlrpc_port)
        print("READY %s" % (server.url if server else "-"), flush=True)
        if args.rate > 0:
            master.write_load(args.rate, args.duration, seed=args.seed, stop=stop)
        else:
            stop.wait(args.duration)
    finally:
        if server is not None:
            server.stop()
        master.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
