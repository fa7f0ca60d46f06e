# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The first copy of a live master, taken through snapshot mode.

The copy is written into a hidden sibling folder (``.NAME.clone-PID``) and
renamed into place only when it is complete and durable, so an interrupted
clone never looks like a valid replica.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import time

from . import journal, ustar
from .replica import ANSWER_PREFIX, PullOptions, Throttle, master_failure, open_channel
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


def _remove_stale_partials(parent, base):
    prefix = ".%s.clone-" % base
    for entry in os.listdir(parent):
        if entry.startswith(prefix) and entry[len(prefix):].isdigit() and not _pid_alive(int(entry[len(prefix):])):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


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
    _remove_stale_partials(parent, base)
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
            aside = os.path.join(parent, ".%s.replaced-%d" % (base, os.getpid()))
            os.rename(dest, aside)
            os.rename(partial, dest)
            shutil.rmtree(aside, ignore_errors=True)
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
