# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A copy built beside its destination, for the first copy (clone.py) and the
re-seed's tree method (reseed.py).

The copy is written into a hidden sibling folder (``.NAME.clone-PID``) and
renamed into place only when it is complete and durable, so an interrupted
clone never looks like a valid replica.  With --force, the old replica and
the new copy swap places in one atomic step (renameat2 RENAME_EXCHANGE);
where the filesystem cannot, the old one is moved aside first
(``.NAME.replaced-PID``) and put back by the next clone if a crash came
between the two renames.
"""

from __future__ import annotations

import configparser
import ctypes
import errno
import os
import shutil

from . import durable, journal
from .durable import fsync_path, pid_alive
from .errors import Corrupt, DSError
from .keep_aside import finish_keep_aside
from .storage import FORMATS, ZERO_TID, Storage, hex_tid
from .transport import refuse_same_folder


def stale_folders(parent, base, kind):
    """Hidden folders `.BASE.KIND-PID` whose process is gone (KIND: clone, replaced)."""
    prefix = ".%s.%s-" % (base, kind)
    for entry in sorted(os.listdir(parent)):
        if entry.startswith(prefix) and entry[len(prefix):].isdigit() and not pid_alive(int(entry[len(prefix):])):
            yield os.path.join(parent, entry)


def remove_stale_partials(parent, base, log=None):
    """Remove the partial folders of dead clones (an old tree a tree re-seed
    swapped out goes to its aside name instead)."""
    for path in stale_folders(parent, base, "clone"):
        if not finish_keep_aside(path, log or (lambda msg: None)):
            shutil.rmtree(path, ignore_errors=True)


def _restore_replaced(parent, base, log):
    """A --force clone that died between moving the old replica aside and
    moving the new copy in: put the old one back (the next steps decide what
    to do with it); one that died later left only rubbish."""
    dest = os.path.join(parent, base)
    for aside in stale_folders(parent, base, "replaced"):
        if not os.path.lexists(dest):
            os.rename(aside, dest)
            fsync_path(parent, directory=True)
            log("put back %s, moved aside by an interrupted clone" % dest)
        elif not finish_keep_aside(aside, log):
            shutil.rmtree(aside, ignore_errors=True)


_RENAME_EXCHANGE = 2


_AT_FDCWD = -100


def _exchange(a, b):
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False if
    this system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _format_of(settings_bytes):
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    try:
        parser.read_string(settings_bytes.decode("utf-8"))
    except (configparser.Error, UnicodeDecodeError):
        raise Corrupt("the master's config/settings cannot be read")
    return parser.get("structure", "format", fallback=None)


def release(partial, old_lock):
    """What a copy leaves, however it ends: its partial folder (or the old
    tree swapped out of place), the old storage's lock."""
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    if old_lock is not None:
        old_lock.release()


def destination(master, dest, log):
    """(absolute path, parent, base name) of a copy's destination, once
    checked and once a swap an interrupted clone left half-done is undone."""
    refuse_same_folder(master, dest, "copy")
    dest = os.path.abspath(dest)
    parent, base = os.path.split(dest)
    if not os.path.isdir(parent):
        raise DSError("the folder %s does not exist" % parent, "create it first")
    _restore_replaced(parent, base, log)
    return dest, parent, base


def claim_destination(dest, force):
    """Refuse a destination that holds something (unless forced); lock a
    storage that will be replaced.  Returns that lock, or None."""
    if not os.path.exists(dest):
        return None
    if os.path.exists(os.path.join(dest, "config", "settings")):
        if not force:
            raise DSError("%s already holds a storage: refusing to overwrite it" % dest,
                          "pull into it instead, or use --force (force: true) to replace it")
        old_lock = Storage(dest, must_exist=False).lock()
        if not old_lock.acquire():
            raise DSError("%s is in use (misc/lock is held)" % dest, "stop what uses it first")
        return old_lock
    if os.listdir(dest) and not force:
        raise DSError("%s exists and is not empty" % dest, "choose an empty or new folder, or use --force")
    return None


def complete_copy(partial):
    """Make the received tree a whole, durable storage; returns its newest tid."""
    st = Storage(partial)
    st.require_full("master")
    for folder in ("B", "journal", "misc"):
        os.makedirs(os.path.join(partial, folder), exist_ok=True)
    for name in ("lock", "sublock"):
        open(os.path.join(partial, "misc", name), "ab").close()
    st.write_snapshot_marker("shutdown")
    after = st.last_tid()
    if after != ZERO_TID:
        try:
            st.transaction(after)  # the newest transaction must be readable
        except FileNotFoundError:
            raise Corrupt("the master's x.serial names transaction %s, which it did not send" % hex_tid(after),
                          "check the master with 'ds-replica verify'; nothing was put in place")
    durable.Durability(partial, True).commit()
    return after


def put_in_place(partial, dest):
    """Rename the copy to `dest` (swapping with an old one); returns what is
    left to remove (the old replica), or None."""
    parent, base = os.path.split(dest)
    if not os.path.exists(dest):
        os.rename(partial, dest)
        fsync_path(parent, directory=True)
        return None
    if _exchange(partial, dest):
        # the old replica now sits at `partial`: removed by the caller (or,
        # after a crash, by the next clone, as a stale partial)
        fsync_path(parent, directory=True)
        return partial
    aside = os.path.join(parent, ".%s.replaced-%d" % (base, os.getpid()))
    os.rename(dest, aside)
    os.rename(partial, dest)
    fsync_path(parent, directory=True)
    return aside


PART_SUFFIX = ".part"  # A/<path>.part: what a clone has received so far of a large file


class PrefixKeeper(object):
    """Writes what has arrived of a large member (ustar.iter_members'
    `large`) to A/<path>.part in the partial folder as it arrives, so that a
    clone killed in the middle of it leaves its beginning: `clone --delta`
    then asks only for the rest (reseed.py).  The name is checked before
    anything is written; once the whole member is checked, the .part file
    becomes the file (a rename: its bytes are not written twice)."""

    def __init__(self, partial):
        self.partial = partial
        self.checker = None
        self.fd = self.path = None

    def start(self, member):
        """ustar.iter_members' on_large: a function for the pieces, or None."""
        if self.checker is None or self.checker.fmt is None or not member.name.startswith("A/"):
            return None
        self.checker.storage_name(member.name)
        self.path = os.path.join(self.partial, *member.name.split("/")) + PART_SUFFIX
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return self.write

    def write(self, piece):
        view = memoryview(piece)
        while view:
            view = view[os.write(self.fd, view):]

    def holds(self, path):
        return self.path == path + PART_SUFFIX

    def finish(self, path, mode):
        """The member, whole and checked, at `path` with `mode`."""
        try:
            os.fchmod(self.fd, mode)
        finally:
            os.close(self.fd)
        os.rename(self.path, path)
        self.fd = self.path = None


def write_members(members, partial, progress, keeper=None, before_write=None):
    """Check and write every member of the clone archive under `partial`;
    returns (checker, counts).  `before_write(logical name)` runs once a
    member has passed its check, before its file is written (nothing on
    disk is touched for a member that fails it)."""
    checker = journal.MemberChecker(None, allow_config=True, keep=False)
    if keeper is not None:
        keeper.checker = checker
    counts = {"transactions": 0, "files": 0, "bytes": 0}
    made = set()
    dur = durable.Durability(partial, True)
    for member in members:
        logical = _check_clone_member(checker, member)
        if before_write is not None and logical is not None:
            before_write(logical)
        path = os.path.join(partial, *member.name.split("/"))
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        if keeper is not None and keeper.holds(path):
            keeper.finish(path, journal.member_mode(member.mode))
        else:
            durable.write_file(path, member.data, journal.member_mode(member.mode))
        dur.step(member.size)
        counts["files"] += 1
        counts["bytes"] += member.size
        if logical is not None and logical.startswith("t"):
            counts["transactions"] += 1
        if progress:
            progress(counts["files"], counts["bytes"])
    return checker, counts


def _check_clone_member(checker, member):
    """config/settings first (it names the format A/ is checked against)."""
    if checker.fmt is None and member.name.startswith("A/"):
        raise Corrupt("the clone archive sends A/ before config/settings")
    logical = checker.check(member)
    if member.name == "config/settings":
        checker.fmt = _format_of(member.data)
        if checker.fmt not in FORMATS:
            raise Corrupt("the master's config/settings names an unknown format %r" % checker.fmt)
    return logical
