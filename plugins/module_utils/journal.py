# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Journal recovery, B/ recombination and durable application of increments.

Every step renames or rewrites whole files so that a crash at any point
leaves a state from which running the same recovery again succeeds.
"""

from __future__ import annotations

import os
import shutil

from . import ustar
from .durable import Durability, fsync_path, read_file, remove_atomic_leftovers, write_atomic, write_file
from .errors import Corrupt
from .fleet_marks import set_upstream
from .storage import JOURNAL_ENTRY_RE, LOGICAL_NAME_RE, check_member, logical_name

REPLICA_TAR = "replica.tar"
MUTABLE_PREFIXES = ("x.",)


def is_mutable(name):
    """Files that are replaced in place (x.*, o….c); the rest are write-once."""
    return name.startswith(MUTABLE_PREFIXES) or name.endswith(".c")


STAGED_UPSTREAM = "replica.upstream"  # in misc/: see stage_upstream


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
    _discard_staged_upstream(st)  # staged by a run cut before its commit point
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
    file has: a master's 0666 file (or a hostile answer) must not leave
    x.serial world-writable on the standby."""
    return (mode & 0o444) | 0o600


def apply_archive(st, tar_path=None, progress=None):
    """Apply journal/replica.tar (already validated, and durable) to A/.

    Idempotent: a crash anywhere in here leaves journal/replica.tar in place,
    and running this again finishes the job."""
    tar_path = tar_path or os.path.join(st.journal_dir, REPLICA_TAR)
    st.remove_snapshot_marker()
    dur = Durability(st.home, st.sync)
    home = st.home
    count = 0
    with open(tar_path, "rb") as f:
        for member in ustar.iter_members(f.read):
            parts = member.name.split("/")
            logical = logical_name(st.format, "/".join(parts[1:])) if parts[0] == "A" else None
            if logical is None:
                raise Corrupt("%s: %s holds %r, which is not a storage file" % (st.home, tar_path, member.name))
            write_member(os.path.join(home, *parts), member.data, member_mode(member.mode), is_mutable(logical))
            dur.step(member.size)
            count += 1
            if progress:
                progress(count, member.size)
    dur.commit()
    _install_staged_upstream(st)
    previous = st.sub("misc", "replica.previous")
    os.replace(tar_path, previous)
    if st.sync:
        fsync_path(st.journal_dir, directory=True)
        fsync_path(st.sub("misc"), directory=True)
    st.write_snapshot_marker("shutdown")
    return count


def stage_upstream(st, master):
    """Make `master` the upstream (config/upstream) that the next committed
    increment records: staged in misc/ before the commit point, installed by
    apply_archive (or the recovery that finishes it), so that the storage's
    files and its upstream change together (a re-seed in place from a new
    master).  A run cut before its commit point leaves a stale one, which
    recovery discards."""
    write_atomic(st.sub("misc", STAGED_UPSTREAM), (master + "\n").encode("utf-8"), sync=st.sync)


def _install_staged_upstream(st):
    staged = st.sub("misc", STAGED_UPSTREAM)
    remove_atomic_leftovers(staged)  # of a staging cut before its rename
    try:
        master = read_file(staged).decode("utf-8").strip()
    except FileNotFoundError:
        return
    set_upstream(st.home, master)
    os.unlink(staged)  # made durable with the retired archive (misc/ is synced after)


def _discard_staged_upstream(st):
    staged = st.sub("misc", STAGED_UPSTREAM)
    remove_atomic_leftovers(staged)
    if os.path.exists(staged):
        os.unlink(staged)


def write_member(dst, data, mode, mutable):
    """Write one file of an increment: a mutable one through DST.tmp and a
    rename.  Its folder is made only when the file cannot be created for
    want of it: most of an increment goes into folders the storage has, and
    checking each one costs lookups of deep paths, a measurable part of a
    pull's time."""
    try:
        _write_member(dst, data, mode, mutable)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        _write_member(dst, data, mode, mutable)


def _write_member(dst, data, mode, mutable):
    if mutable:
        tmp = dst + ".tmp"
        write_file(tmp, data, mode)
        os.replace(tmp, dst)
    else:
        write_file(dst, data, mode)
