# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`clone --delta`, the part both sides share and the master's answer.

Both sides list their A/ the same way (`inventory`): logical name, size
and, where a name and a size do not settle it, a digest: the MD5 of a
transaction file (small; a pack rewrites the "previous tid" field of older
ones), the content of an o….c file (8 bytes, replaced by rename).  x.* files
are always sent.  An object revision file is write-once and named by its oid
and tid: it is kept when its size matches and its transaction is kept (same
name, same MD5), so a storage that diverged at the same tid never keeps a
revision of the other history.

The master (`answer_delta`) compares in snapshot mode, opens what it will
send, leaves snapshot mode, and answers: the header, then an archive whose
first member (protocol.DROP_MEMBER) lists the standby's names the master
does not hold, then config/settings, config/identity and the files that
differ.
"""

from __future__ import annotations

import hashlib
import os

from .protocol import DROP_MEMBER, encode_drop, read_inventory, write_answer_header
from .storage import Refused, classify, hex_tid, logical_name, read_file, transaction_name


def walk(root, fmt):
    """(relpath, logical name, size) of every storage file under `root` (an
    A/ folder); pack leftovers and strays are skipped."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir)) as entries:
            for entry in entries:
                rel = entry.name if not rel_dir else rel_dir + "/" + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                name = logical_name(fmt, rel) if entry.is_file(follow_symlinks=False) else None
                if name is not None:
                    yield rel, name, entry.stat(follow_symlinks=False).st_size


def needs_digest(name):
    return name.startswith("t") or name.endswith(".c")


def digest(path, name):
    """What decides, beyond name and size, whether two copies of `name`
    are the same (None where name and size do)."""
    if name.startswith("t"):
        return hashlib.md5(read_file(path)).hexdigest()
    if name.endswith(".c"):
        return read_file(path).hex()
    return None


def _same_transactions(root, mine, theirs):
    """The transaction names both sides hold byte for byte."""
    same = set()
    for rel, name, size in mine:
        other = theirs.get(name) if name.startswith("t") else None
        if other and other[0] == size and other[1] == digest(os.path.join(root, rel), name):
            same.add(name)
    return same


def _kept(root, rel, name, size, other, same):
    """Whether the standby's copy of a non-transaction file can stay."""
    if other is None or other[0] != size or name.startswith("x."):
        return False
    if name.endswith(".c"):
        return other[1] == digest(os.path.join(root, rel), name)
    return transaction_name(classify(name)[2]) in same


def plan(root, fmt, theirs):
    """(relpaths to send, names to drop, files kept) for a standby that
    holds `theirs` ({name: (size, digest)})."""
    mine = list(walk(root, fmt))
    same = _same_transactions(root, mine, theirs)
    send = []
    for rel, name, size in mine:
        if name in same:
            continue
        if name.startswith("t") or not _kept(root, rel, name, size, theirs.get(name), same):
            send.append(rel)
    held = {name for _rel, name, _size in mine}
    drop = sorted(n for n in theirs if n not in held)
    return send, drop, len(mine) - len(send)


def _check_identity(st, req):
    theirs = req.options.get("identity", "")
    if theirs.lower() != st.identity.lower():
        raise Refused("the storage to re-seed is a copy of storage %s, not of this master (%s)"
                      % (theirs or "unknown", st.identity),
                      "check the master and the path; a copy of another storage needs a plain clone")


def answer_delta(st, req, snap, stdout, log, inc):
    """Compare the standby's inventory with A/ in snapshot mode, then send
    the drop list and what differs (gathered in `inc`, a serve.Increment)."""
    _check_identity(st, req)
    theirs = read_inventory(req)
    try:
        with snap:
            master_tid = st.last_tid()
            send, drop, kept = plan(st.a_dir, st.format, theirs)
            inc.add_data(DROP_MEMBER, encode_drop(drop))
            for name in ("settings", "identity"):
                inc.add_data("config/" + name, read_file(st.sub("config", name)))
            for rel in send:
                inc.add_file("A/" + rel, os.path.join(st.a_dir, *rel.split("/")))
        log("delta: %d files to send, %d kept, %d to drop; master held %.3fs"
            % (len(send), kept, len(drop), snap.seconds))
        write_answer_header(stdout, {"master_tid": hex_tid(master_tid), "format": st.format, "compress": "none",
                                     "files": len(send), "bytes": inc.bytes, "kept": kept, "dropped": len(drop),
                                     "snapshot_seconds": round(snap.seconds, 6)})
        inc.write(stdout)
        stdout.flush()
        return None
    finally:
        inc.close()
