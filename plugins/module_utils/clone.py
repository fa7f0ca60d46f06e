# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The first copy of a live master, taken through snapshot mode.

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
import json
import os
import shutil
import time

from . import journal, ustar
from .options import PullOptions
from .replica import ANSWER_PREFIX, Throttle, master_failure, open_channel
from .serve import Request
from .storage import Corrupt, DSError, Storage, fsync_path, hex_tid


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(parent, base, kind):
    """Hidden folders `.BASE.KIND-PID` whose process is gone."""
    prefix = ".%s.%s-" % (base, kind)
    for entry in sorted(os.listdir(parent)):
        if entry.startswith(prefix) and entry[len(prefix):].isdigit() and not _pid_alive(int(entry[len(prefix):])):
            yield os.path.join(parent, entry)


def _remove_stale_partials(parent, base):
    for path in _stale(parent, base, "clone"):
        shutil.rmtree(path, ignore_errors=True)


def _restore_replaced(parent, base, log):
    """A --force clone that died between moving the old replica aside and
    moving the new copy in: put the old one back (the next steps decide what
    to do with it); one that died later left only rubbish."""
    dest = os.path.join(parent, base)
    for aside in _stale(parent, base, "replaced"):
        if not os.path.lexists(dest):
            os.rename(aside, dest)
            fsync_path(parent, directory=True)
            log("put back %s, moved aside by an interrupted clone" % dest)
        else:
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


def clone(master, dest, opts=None, force=False, log=None, progress=None):
    opts = opts or PullOptions()
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    dest = os.path.abspath(dest)
    parent, base = os.path.split(dest)
    if not os.path.isdir(parent):
        raise DSError("the folder %s does not exist" % parent, "create it first")
    _restore_replaced(parent, base, log)
    _remove_stale_partials(parent, base)
    old_lock = None
    if os.path.exists(dest):
        if os.path.exists(os.path.join(dest, "config", "settings")):
            if not force:
                raise DSError("%s already holds a storage: refusing to overwrite it" % dest,
                              "pull into it instead, or use --force (force: true) to replace it")
            old_lock = Storage(dest, must_exist=False).lock()
            if not old_lock.acquire():
                raise DSError("%s is in use (misc/lock is held)" % dest, "stop what uses it first")
        elif os.listdir(dest) and not force:
            raise DSError("%s exists and is not empty" % dest, "choose an empty or new folder, or use --force")
    partial = os.path.join(parent, ".%s.clone-%d" % (base, os.getpid()))
    os.mkdir(partial, 0o755)
    try:
        result = _receive(master, partial, opts, log, progress)
        st = Storage(partial)
        st.require_full("master")
        for folder in ("B", "journal", "misc"):
            os.makedirs(os.path.join(partial, folder), exist_ok=True)
        for name in ("lock", "sublock"):
            open(os.path.join(partial, "misc", name), "ab").close()
        st.write_snapshot_marker("shutdown")
        after = st.last_tid()
        st.transaction(after) if after != b"\0" * 8 else None  # the newest transaction must be readable
        journal.Durability(partial, True).commit()
        if os.path.exists(dest):
            if _exchange(partial, dest):
                # the old replica now sits at `partial`: removed below (or,
                # after a crash, by the next clone, as a stale partial)
                fsync_path(parent, directory=True)
            else:
                aside = os.path.join(parent, ".%s.replaced-%d" % (base, os.getpid()))
                os.rename(dest, aside)
                os.rename(partial, dest)
                fsync_path(parent, directory=True)
                partial = aside
        else:
            os.rename(partial, dest)
            fsync_path(parent, directory=True)
            partial = None
        result.update(changed=True, after_tid=hex_tid(after), before_tid=hex_tid(b"\0" * 8),
                      elapsed_seconds=round(time.monotonic() - t0, 3), path=dest)
        return result
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if old_lock is not None:
            old_lock.release()


def _receive(master, partial, opts, log, progress):
    # hard-linking a large tree into the staging folder takes a while
    chan = open_channel(master, opts, log, prepare=3600.0)
    ok = False
    try:
        chan.send(Request("clone", 1).encode())
        chan.close_input()
        first = chan.readline(65536)
        if not first.startswith(ANSWER_PREFIX):
            status, err = chan.finish()
            ok = True
            raise master_failure(status or 1, err if err.strip() else first.decode("utf-8", "replace"))
        info = json.loads(first[len(ANSWER_PREFIX):].decode("ascii"))
        checker = journal.MemberChecker(None, allow_config=True, keep=False)
        t_start = time.monotonic()
        files = nbytes = transactions = 0
        made = set()
        dur = journal.Durability(partial, True)
        read = Throttle(chan.read, opts.bwlimit).read if opts.bwlimit else chan.read
        for member in ustar.iter_members(read):
            if checker.fmt is None and member.name.startswith("A/"):
                raise Corrupt("the clone archive sends A/ before config/settings")
            logical = checker.check(member)
            if member.name == "config/settings":
                checker.fmt = _format_of(member.data)
                if checker.fmt not in ("bushy", "chunky", "lawn", "flat"):
                    raise Corrupt("the master's config/settings names an unknown format %r" % checker.fmt)
            path = os.path.join(partial, *member.name.split("/"))
            folder = os.path.dirname(path)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            journal.write_file(path, member.data, journal.member_mode(member.mode))
            dur.step(member.size)
            files += 1
            nbytes += member.size
            if logical is not None and logical.startswith("t"):
                transactions += 1
            if progress:
                progress(files, nbytes)
        status, err = chan.finish()
        ok = True
        if status != 0:
            raise master_failure(status, err)
        if "config/identity" not in checker.seen or "config/settings" not in checker.seen:
            raise Corrupt("the clone archive lacks config/settings or config/identity")
        log("received %d files, %d bytes" % (files, nbytes))
        return {"transactions": transactions, "files": files, "bytes": nbytes,
                # a staged copy says how long the master was held; otherwise it
                # was held for the whole transfer
                "snapshot_seconds": info.get("snapshot_seconds", round(time.monotonic() - t_start, 3)),
                "master_tid": info.get("master_tid")}
    except OSError as e:
        raise DSError("the clone transfer broke off (%s)" % (getattr(e, "strerror", None) or e),
                      "try again; nothing was left behind")
    finally:
        if not ok:
            chan.abort()
