# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`clone --delta`, the part both sides share and the master's answer.

Both sides list their A/ the same way (`inventory`): logical name, size
and, where a name and a size do not settle it, a digest: the MD5 of a
transaction file (small; a pack rewrites the "previous tid" field of older
ones), the content of an o….c file (8 bytes, replaced by rename), the
56-byte header of an object revision file (it holds the MD5 of the rest).
x.* files are always sent.  An object revision file is write-once and named
by its oid and tid: it is kept when its size and header match, or, sent
without a header, when its size matches and its transaction is kept (same
name, same MD5), so a storage that diverged at the same tid never keeps a
revision of the other history.  The header is what lets an interrupted
clone resume: it wrote revisions before their transaction files.

With the `chain` option (version 1 clients since the chain window), the
standby reads only the newest WINDOW transactions of its chain: each goes
with its MD5 and the oids it wrote ("MD5+OID…"); every other transaction
file and every o….c file goes with name and size only.  The master finds
the newest transaction both hold byte for byte (the anchor) and trusts,
below it, the same name and size of a transaction file (DirectoryStorage
never rewrites one, except the "previous tid" field by a pack: not trusted
below either side's x.packed); an o….c file is trusted unless a transaction
above the anchor, on either side, wrote its object.  No anchor in a window
that does not reach the chain's end: the answer says `retry` and the
standby asks again with every digest.  The standby checks the files it
keeps on trust (reseed.py), so a corrupt one is still replaced.

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
from .storage import (
    ZERO_TID,
    Refused,
    classify,
    hex_tid,
    logical_name,
    parse_transaction,
    read_file,
    tid_from_hex,
    transaction_name,
)

WINDOW = 2048  # the standby's newest transactions sent with MD5 and oids (chain mode)


def walk(root, fmt, strays=None):
    """(relpath, logical name, size) of every storage file under `root` (an
    A/ folder); pack leftovers and strays are skipped (and, given a list
    `strays`, their (relpath, size) appended to it)."""
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
                elif strays is not None and entry.is_file(follow_symlinks=False):
                    strays.append((rel, entry.stat(follow_symlinks=False).st_size))


REVISION_HEAD = 56  # an object revision file's header, its MD5 of the rest included (bytes 40-56)
PREFIX = "prefix:"  # the digest of the beginning of a file a killed clone had received (clone.PART_SUFFIX)


def needs_digest(name):
    """Files whose name and size alone are trusted only with a chain window
    (and then checked locally by the standby)."""
    return name.startswith("t") or name.endswith(".c")


def is_revision(name):
    return name.startswith("o") and not name.endswith(".c")


def digest(path, name):
    """What decides, beyond name and size, whether two copies of `name`
    are the same (None where name and size do).  An object revision: its
    56-byte header, which holds the MD5 of the rest of the file; None when
    that MD5 was not computed (16 zero bytes), and the revision's
    transaction decides."""
    if name.startswith("t"):
        return hashlib.md5(read_file(path)).hexdigest()
    if name.endswith(".c"):
        return read_file(path).hex()
    if name.startswith("o"):
        return _revision_head(path)
    return None


def prefix_digest(path, size):
    """The digest of the first `size` bytes of a file (None if it is shorter)."""
    with open(path, "rb") as f:
        data = f.read(size)
    return PREFIX + hashlib.md5(data).hexdigest() if len(data) == size else None


def _tail_from(root, rel, size, other):
    """Where the standby's beginning of this file ends, when it holds one
    that matches (a killed clone's .part); else None."""
    if other is None or not other[1] or not other[1].startswith(PREFIX) or not 0 < other[0] < size:
        return None
    return other[0] if prefix_digest(os.path.join(root, rel), other[0]) == other[1] else None


def _revision_head(path):
    with open(path, "rb") as f:
        head = f.read(REVISION_HEAD)
    if len(head) < REVISION_HEAD or head[40:56] == bytes(16):
        return None
    return head.hex()


def _same_transactions(root, mine, theirs):
    """The transaction names both sides hold byte for byte."""
    same = set()
    for rel, name, size in mine:
        other = theirs.get(name) if name.startswith("t") else None
        if other and other[0] == size and other[1] is not None and other[1] == digest(os.path.join(root, rel), name):
            same.add(name)
    return same


def _kept(root, rel, name, size, other, same, chain=None):
    """Whether the standby's copy of a non-transaction file can stay."""
    if other is None or other[0] != size or name.startswith("x."):
        return False
    if name.endswith(".c"):
        if other[1] is None:
            return chain is not None and chain.trusts_current(name)
        return other[1] == digest(os.path.join(root, rel), name)
    if other[1] is not None:  # a revision with its header: the same header, the same MD5 of the rest
        return other[1] == digest(os.path.join(root, rel), name)
    return transaction_name(classify(name)[2]) in same


def plan(root, fmt, theirs, chain=None):
    """(relpaths to send, names to drop, files kept, {relpath: offset} of the
    files to send from an offset: the standby holds their beginning) for a
    standby that holds `theirs` ({name: (size, digest)}); `chain` (a Chain)
    when the standby sent a chain window; None when that window found no
    anchor."""
    mine = list(walk(root, fmt))
    if chain is not None:
        theirs = {n: (v[0], v[1].split("+", 1)[0] if v[1] else None) for n, v in theirs.items()}
    same = _same_transactions(root, mine, theirs)
    if chain is not None:
        if not chain.settle(root, fmt, mine, theirs, same):
            return None
        same |= chain.trusted_transactions
    send, tails = [], {}
    for rel, name, size in mine:
        if name in same:
            continue
        if name.startswith("t") or not _kept(root, rel, name, size, theirs.get(name), same, chain):
            send.append(rel)
            offset = _tail_from(root, rel, size, theirs.get(name))
            if offset:
                tails[rel] = offset
    held = {name for _rel, name, _size in mine}
    drop = sorted(n for n in theirs if n not in held)
    return send, drop, len(mine) - len(send), tails


class Chain(object):
    """What the standby's chain window lets the master trust."""

    def __init__(self, theirs, packed, complete):
        self.window = {}  # tid: (md5, oids) of the standby's newest transactions
        for name, (_size, dig) in theirs.items():
            if name.startswith("t") and dig and "+" in dig:
                md5, oids = dig.split("+", 1)
                self.window[classify(name)[1]] = (md5, {oids[i:i + 16] for i in range(0, len(oids), 16)})
        self.packed = packed  # the standby's x.packed
        self.complete = complete  # the window reaches the standby's oldest transaction
        self.anchor = None
        self.touched = set()  # hex oids written above the anchor, on either side
        self.trusted_transactions = set()

    def settle(self, root, fmt, mine, theirs, same):
        """Find the anchor and what it lets the master trust; False when the
        window holds no transaction the master holds (ask for every digest)."""
        anchors = [tid for tid in self.window if transaction_name(tid) in same]
        if not anchors:
            return self.complete  # a complete window and no anchor: no shared history, nothing trusted
        self.anchor = max(anchors)
        self.touched = set().union(*[oids for tid, (_md5, oids) in self.window.items() if tid > self.anchor])
        floor = max(self.packed, _packed(root, mine))  # a pack rewrites "previous tid" fields below it
        for rel, name, size in mine:
            if not name.startswith("t"):
                continue
            tid = classify(name)[1]
            if tid > self.anchor:
                data = read_file(os.path.join(root, rel))
                self.touched.update(hex_tid(o) for o in parse_transaction(data, check_md5=False).oids)
            elif tid < self.anchor and tid >= floor and theirs.get(name) == (size, None):
                self.trusted_transactions.add(name)
        return True

    def trusts_current(self, name):
        return self.anchor is not None and name[1:17] not in self.touched


def _packed(root, mine):
    for rel, name, _size in mine:
        if name == "x.packed":
            data = read_file(os.path.join(root, rel))
            return data if len(data) == 8 else ZERO_TID
    return ZERO_TID


def read_chain_options(req, theirs):
    """The Chain of a request that carries one, else None."""
    packed = req.options.get("chain")
    if packed is None:
        return None
    try:
        packed_tid = tid_from_hex(packed)
    except (ValueError, TypeError):
        raise Refused("malformed request: bad chain option")
    return Chain(theirs, packed_tid, req.options.get("chain-complete") == "yes")


def _check_identity(st, req):
    theirs = req.options.get("identity", "")
    if theirs.lower() != st.identity.lower():
        raise Refused("the storage to re-seed is a copy of storage %s, not of this master (%s)"
                      % (theirs or "unknown", st.identity),
                      "check the master and the path; a copy of another storage needs a plain clone")


def answer_delta(st, req, snap, stdout, log, inc):
    """Compare the standby's inventory with A/ in snapshot mode, then send
    the drop list and what differs (gathered in `inc`, a serve.Increment).
    Returns the master's newest transaction the standby now holds (None
    when it must ask again with every digest)."""
    _check_identity(st, req)
    theirs = read_inventory(req)
    chain = read_chain_options(req, theirs)
    try:
        with snap:
            master_tid = st.last_tid()
            planned = plan(st.a_dir, st.format, theirs, chain)
            if planned is None:
                return _ask_for_digests(st, stdout, log, inc, master_tid)
            send, drop, kept, tails = planned
            inc.add_data(DROP_MEMBER, encode_drop(drop))
            for name in ("settings", "identity"):
                inc.add_data("config/" + name, read_file(st.sub("config", name)))
            for rel in send:
                inc.add_file("A/" + rel, os.path.join(st.a_dir, *rel.split("/")), offset=tails.get(rel, 0))
        log("delta: %d files to send, %d kept, %d to drop; master held %.3fs"
            % (len(send), kept, len(drop), snap.seconds))
        header = {"master_tid": hex_tid(master_tid), "format": st.format, "compress": "none", "files": len(send),
                  "bytes": inc.bytes, "kept": kept, "dropped": len(drop), "snapshot_seconds": round(snap.seconds, 6)}
        if chain is not None:
            header["anchor"] = hex_tid(chain.anchor or ZERO_TID)
        if tails:
            header["tails"] = {"A/" + rel: offset for rel, offset in tails.items()}
        write_answer_header(stdout, header)
        inc.write(stdout)
        stdout.flush()
        return master_tid
    finally:
        inc.close()


def _ask_for_digests(st, stdout, log, inc, master_tid):
    """The standby's chain window holds no transaction this master holds:
    answer `retry` (an empty drop list, nothing else); it asks again with
    every digest."""
    log("delta: the standby's chain window meets no transaction of this master; asking for every digest")
    inc.add_data(DROP_MEMBER, b"")
    write_answer_header(stdout, {"master_tid": hex_tid(master_tid), "format": st.format, "compress": "none",
                                 "files": 0, "bytes": inc.bytes, "retry": "digests"})
    inc.write(stdout)
    stdout.flush()
