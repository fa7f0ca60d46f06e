# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The first copy of a live master, taken through snapshot mode, built as
partial.py builds a new copy beside its destination."""

from __future__ import annotations

import os
import time

from . import ustar
from .errors import Corrupt, DSError
from .options import PullOptions
from .partial import (
    PrefixKeeper,
    claim_destination,
    complete_copy,
    destination,
    put_in_place,
    release,
    remove_stale_partials,
    write_members,
)
from .protocol import Request, Session, standby_name_option
from .storage import ZERO_TID, hex_tid
from .transport import Throttle, open_channel


def clone(master, dest, opts=None, force=False, log=None, progress=None):
    opts = opts or PullOptions()
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    dest, parent, base = destination(master, dest, log)
    remove_stale_partials(parent, base, log)
    old_lock = claim_destination(dest, force)
    partial = os.path.join(parent, ".%s.clone-%d" % (base, os.getpid()))
    os.mkdir(partial, 0o755)
    try:
        result = _receive(master, partial, opts, log, progress)
        after = complete_copy(partial)
        partial = put_in_place(partial, dest)
        result.update(changed=True, after_tid=hex_tid(after), before_tid=hex_tid(ZERO_TID),
                      elapsed_seconds=round(time.monotonic() - t0, 3), path=dest)
        return result
    finally:
        release(partial, old_lock)


def _receive(master, partial, opts, log, progress):
    # hard-linking a large tree into the staging folder takes a while
    chan = open_channel(master, opts, log, prepare=3600.0)
    try:
        with Session(chan, Request("clone", 1, options=standby_name_option(opts.standby_name))) as session:
            info = session.start()
            t_start = time.monotonic()
            read = Throttle(chan.read, opts.bwlimit).read if opts.bwlimit else chan.read
            keeper = PrefixKeeper(partial)
            members = ustar.iter_members(read, on_large=keeper.start)
            checker, counts = write_members(members, partial, progress, keeper)
            session.finish_ok()
    except OSError as e:
        raise DSError("the clone transfer broke off (%s)" % (getattr(e, "strerror", None) or e),
                      "try again; nothing was left behind")
    if "config/identity" not in checker.seen or "config/settings" not in checker.seen:
        raise Corrupt("the clone archive lacks config/settings or config/identity")
    log("received %(files)d files, %(bytes)d bytes" % counts)
    # a staged copy says how long the master was held; otherwise it was held
    # for the whole transfer
    counts["snapshot_seconds"] = info.get("snapshot_seconds", round(time.monotonic() - t_start, 3))
    counts["master_tid"] = info.get("master_tid")
    return counts
