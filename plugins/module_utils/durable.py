# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files that hold across a crash or a power cut, and the file and process
helpers they need: fsync of a file or folder, small files replaced
atomically (and the leftovers of a writer that died), a whole file read at
once, writes made durable in batches (syncfs), an exclusive flock() lock,
and whether the process a lock names still lives."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import time

from .errors import Busy


def pid_alive(pid):
    """Whether process `pid` of this host exists (under any account) and has
    not ended: a zombie, ended but not yet reaped by its parent, is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another account
    return not _zombie(pid)


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False  # no /proc (not Linux): as os.kill says
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"  # the state follows "(comm) "


def fsync_path(path, directory=False):
    """fsync a file, or with `directory` a folder (which makes the names
    created, renamed or removed in it durable)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


ATOMIC_TEMP = ".tmp-"  # write_atomic(path) writes path + ATOMIC_TEMP + its pid, then renames it


def write_atomic(path, data, mode=0o644, sync=True):
    """Write a small file by write-to-temp, fsync, rename (never torn)."""
    tmp = "%s%s%d" % (path, ATOMIC_TEMP, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_path(os.path.dirname(path) or ".", directory=True)


def remove_atomic_leftovers(path):
    """Remove the temporary files of write_atomic(path) that a writer which
    died (or lost power) before its rename left behind; only for a caller that
    is the sole writer of `path` (it holds the locks that say so)."""
    folder, base = os.path.split(path)
    prefix = base + ATOMIC_TEMP
    for entry in os.listdir(folder or "."):
        pid = entry[len(prefix):]
        if entry.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid():
            os.unlink(os.path.join(folder, entry))


def read_file(path):
    return read_whole(os.open(path, os.O_RDONLY | os.O_CLOEXEC))


def read_whole(fd):
    """The whole file open on `fd`, which is closed: fstat, one read, close
    (a Python file object adds an isatty ioctl, an lseek and a read at the
    end of the file: a pull reads thousands of small files, and those calls
    were a measurable part of its time)."""
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:  # all of it: a read of a regular file is short only at its end
            return data
        parts = [data]  # it changed size meanwhile (or a special file): read to the end
        for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


class FileLock(object):
    """An exclusive, non-blocking flock() on a whole file, as zc.lockfile does."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (" %d\n" % os.getpid()).encode())
        except OSError:
            pass
        self.fd = fd
        return True

    def acquire_within(self, seconds, on_wait=None):
        """Try again and again (pauses growing to 0.5 s) for at most `seconds`;
        True once held.  `on_wait(holder pid)` is called once, after a second."""
        t0 = time.monotonic()
        pause = 0.01
        said = False
        while not self.acquire():
            waited = time.monotonic() - t0
            if waited >= seconds:
                return False
            if on_wait and not said and waited >= 1.0:
                said = True
                on_wait(self.holder())
            time.sleep(min(pause, max(seconds - waited, 0.001)))
            pause = min(pause * 2, 0.5)
        return True

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def holder(self):
        """The pid written in the lock file, if any (informational)."""
        try:
            text = read_file(self.path).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        except (OSError, ValueError):
            return None

    def probe(self):
        """Is the file locked by someone else?  Returns (locked, pid)."""
        if not os.path.exists(self.path):
            return False, None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False, None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return True, self.holder()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return False, None

    def __enter__(self):
        if not self.acquire():
            raise Busy("%s is locked" % self.path)
        return self

    def __exit__(self, *exc):
        self.release()


_libc = None


def syncfs(path):
    """Flush everything written on the filesystem holding `path`.

    One syncfs() replaces an fsync per file and per folder: the increment is
    already durable in journal/replica.tar, so only the moment the journal
    entry is retired needs every applied byte on disk."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded (find_library would run ldconfig)
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
            syncfs(self.home)


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


def sync_tree(root):
    """fsync every folder of a tree (deepest first), then the tree itself."""
    folders = [dirpath for dirpath, _dirs, _files in os.walk(root)]
    for folder in reversed(folders):
        fsync_path(folder, directory=True)
