# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Journal recovery, B/ recombination and durable application of increments.

Every step renames or rewrites whole files so that a crash at any point
leaves a state from which running the same recovery again succeeds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil

from . import ustar
from .storage import (
    JOURNAL_ENTRY_RE,
    LOGICAL_NAME_RE,
    Corrupt,
    check_member,
    fsync_path,
    logical_name,
)

REPLICA_TAR = "replica.tar"
MUTABLE_PREFIXES = ("x.",)

_libc = None


def _syncfs(path):
    """Flush everything written on the filesystem holding `path`.

    One syncfs() replaces an fsync per file and per folder: the increment is
    already durable in journal/replica.tar, so only the moment the journal
    entry is retired needs every applied byte on disk."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        func = getattr(_libc, "syncfs", None)
        if func is None or func(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class Durability(object):
    """Makes a batch of writes under a storage home durable at once.

    `step()` after each file also flushes every FLUSH_FILES files or
    FLUSH_BYTES bytes: creating files gets slow on ext4 while many new files
    wait unflushed (measured in bench/), and an early flush costs nothing
    for safety since the final commit() still comes before anything relies
    on the data."""

    FLUSH_FILES = 1000
    FLUSH_BYTES = 64 << 20

    def __init__(self, home, enabled=True):
        self.home = home
        self.enabled = enabled
        self._files = 0
        self._bytes = 0

    def step(self, nbytes):
        self._files += 1
        self._bytes += nbytes
        if self._files >= self.FLUSH_FILES or self._bytes >= self.FLUSH_BYTES:
            self.commit()

    def commit(self):
        self._files = self._bytes = 0
        if self.enabled:
            _syncfs(self.home)


def is_mutable(name):
    """Files that are replaced in place (x.*, o….c); the rest are write-once."""
    return name.startswith(MUTABLE_PREFIXES) or name.endswith(".c")


def check_journal(st):
    """Return (replica_tar, done, temp) entries of journal/, or raise if anything
    in journal/ is not something recovery knows; nothing is touched then."""
    entries = st.journal_entries()
    done, temp, strange = [], [], []
    has_tar = False
    for e in entries:
        m = JOURNAL_ENTRY_RE.match(e)
        if e == REPLICA_TAR:
            has_tar = True
        elif m and os.path.isdir(os.path.join(st.journal_dir, e)):
            (done if m.group(2) == "done" else temp).append(e)
        else:
            strange.append(e)
    if strange:
        raise Corrupt("%s: journal/ holds %s, which recovery does not know" % (st.home, ", ".join(strange[:3])),
                      "inspect it by hand; nothing was changed")
    if has_tar and (done or temp):
        raise Corrupt("%s: journal/replica.tar is not alone in journal/" % st.home,
                      "inspect it by hand; nothing was changed")
    if has_tar and _b_files(st):
        raise Corrupt("%s: journal/replica.tar is pending but B/ is not empty" % st.home,
                      "inspect it by hand; nothing was changed")
    return has_tar, done, temp


def _b_files(st):
    if not os.path.isdir(st.b_dir):
        return []
    found = []
    for dirpath, _dirs, files in os.walk(st.b_dir):
        for fn in files:
            found.append(os.path.join(dirpath, fn))
    return found


def _move_into(st, src, name):
    dst = st.path(name, "A")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)


def recombine(st):
    """Move every file of B/ into A/ (newer than A/ by construction)."""
    moved = 0
    for rel, name in list(st.iter_files("B")):
        if name is None:
            raise Corrupt("%s: B/%s is not a storage file name" % (st.home, rel), "inspect it by hand")
        _move_into(st, os.path.join(st.b_dir, *rel.split("/")), name)
        moved += 1
    if moved:
        # remove the now empty folders of B/
        for entry in os.listdir(st.b_dir):
            path = os.path.join(st.b_dir, entry)
            if os.path.isdir(path):
                shutil.rmtree(path)
    return moved


def recover(st, apply_pending=True):
    """Bring a storage that is not running to a clean state.

    Caller holds misc/lock and misc/sublock.  Returns a dict of what was done.
    """
    has_tar, done, temp = check_journal(st)
    st.remove_marker_leftovers()
    report = {"replica_tar": False, "rolled_forward": 0, "rolled_back": 0, "recombined": 0}
    if has_tar:
        if not apply_pending:
            raise Corrupt("%s: an increment is pending in journal/replica.tar" % st.home)
        apply_archive(st)
        report["replica_tar"] = True
        return report
    b_files = _b_files(st)
    if not (done or temp or b_files):
        return report
    marker = st.snapshot_code()
    dur = Durability(st.home, st.sync)
    if done or b_files:
        # A/ is about to change: it is not a snapshot until we are done.
        st.remove_snapshot_marker()
    report["recombined"] = recombine(st)
    for entry in done:
        folder = os.path.join(st.journal_dir, entry)
        names = sorted(os.listdir(folder))
        for fn in names:
            if not LOGICAL_NAME_RE.match(fn):
                raise Corrupt("%s: journal/%s/%s is not a storage file name" % (st.home, entry, fn),
                              "inspect it by hand")
        for fn in names:
            _move_into(st, os.path.join(folder, fn), fn)
        dur.commit()
        os.rmdir(folder)
        report["rolled_forward"] += 1
    for entry in temp:
        shutil.rmtree(os.path.join(st.journal_dir, entry))
        report["rolled_back"] += 1
    dur.commit()
    if st.sync:
        fsync_path(st.journal_dir, directory=True)
    if marker is not None and (done or b_files):
        st.write_snapshot_marker(marker)
    return report


# ---------------------------------------------------------------- apply

class MemberChecker(object):
    """Validates archive members against the replica's format, before the
    commit point: names, kinds, modes, duplicates and file contents."""

    def __init__(self, fmt, allow_config=False, keep=True):
        self.fmt = fmt
        self.allow_config = allow_config
        self.keep = keep
        self.seen = set()
        self.names = {}

    def storage_name(self, name):
        """The logical name of an A/ member's path, checked (before its data
        arrives): Corrupt if the path is not one of the storage's files."""
        where = "archive member %r" % name
        if name.startswith("/") or "\\" in name:
            raise Corrupt("%s has an absolute or odd path" % where)
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise Corrupt("%s has an empty, '.' or '..' component" % where)
        if parts[0] != "A" or len(parts) < 2:
            raise Corrupt("%s is outside the storage's A/ folder" % where)
        logical = logical_name(self.fmt, "/".join(parts[1:]))
        if logical is None:
            raise Corrupt("%s is not a valid %s storage file name" % (where, self.fmt))
        return logical

    def check(self, member):
        name = member.name
        where = "archive member %r" % name
        if name.startswith("/") or "\\" in name:
            raise Corrupt("%s has an absolute or odd path" % where)
        if name in self.seen:
            raise Corrupt("%s appears twice" % where)
        self.seen.add(name)
        if member.mode & 0o7000:
            raise Corrupt("%s has set-uid, set-gid or sticky bits" % where)
        if self.allow_config and name in ("config/settings", "config/identity"):
            return None
        logical = self.storage_name(name)
        parsed = check_member(logical, member.data, where)
        if self.keep:
            # what validate_increment needs, and no more: a transaction's
            # header, the tid of x.serial or a .c file; a revision is named
            # by its oid and tid already (its bytes are in the spool)
            self.names[logical] = None if hasattr(parsed, "pickle") else parsed
        return logical


def member_mode(mode):
    """Modes of the files a clone or pull writes: the standby's own, never
    the master's: owner read/write, and at most the read bits the master's
    file has (issue 20: a 0666 answer once left x.serial world-writable)."""
    return (mode & 0o444) | 0o600


def apply_archive(st, tar_path=None, progress=None):
    """Apply journal/replica.tar (already validated, and durable) to A/.

    Idempotent: a crash anywhere in here leaves journal/replica.tar in place,
    and running this again finishes the job."""
    tar_path = tar_path or os.path.join(st.journal_dir, REPLICA_TAR)
    st.remove_snapshot_marker()
    dur = Durability(st.home, st.sync)
    home = st.home
    made = set()
    count = 0
    with open(tar_path, "rb") as f:
        for member in ustar.iter_members(f.read):
            parts = member.name.split("/")
            logical = logical_name(st.format, "/".join(parts[1:])) if parts[0] == "A" else None
            if logical is None:
                raise Corrupt("%s: %s holds %r, which is not a storage file" % (st.home, tar_path, member.name))
            dst = os.path.join(home, *parts)
            parent = os.path.dirname(dst)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            mode = member_mode(member.mode)
            if is_mutable(logical):
                tmp = dst + ".tmp"
                write_file(tmp, member.data, mode)
                os.replace(tmp, dst)
            else:
                write_file(dst, member.data, mode)
            dur.step(member.size)
            count += 1
            if progress:
                progress(count, member.size)
    dur.commit()
    previous = st.sub("misc", "replica.previous")
    os.replace(tar_path, previous)
    if st.sync:
        fsync_path(st.journal_dir, directory=True)
        fsync_path(st.sub("misc"), directory=True)
    st.write_snapshot_marker("shutdown")
    return count


_UMASK = None


def _umask():
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def write_file(path, data, mode):
    """Write a file with exactly this mode.  A file already there (a re-run
    after a crash, or a name an in-place re-seed keeps aside as a hard link)
    is replaced by rename, never written through: its old inode keeps its
    bytes."""
    target = None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        fix_mode = (mode & ~_umask()) != mode  # a new file has mode & ~umask
    except FileExistsError:
        target, path = path, path + ".tmp"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        fix_mode = True
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fix_mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    if target is not None:
        os.replace(path, target)
