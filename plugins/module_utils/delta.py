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

The in-place re-seed (reseed_inplace.py) asks with its chain window alone
and the option `reseed: in-place`; `answer_in_place` answers.

The master (`answer_delta`) compares in snapshot mode, opens what it will
send, leaves snapshot mode, and answers: the header, then an archive whose
first member (protocol.DROP_MEMBER) lists the standby's names the master
does not hold, then config/settings, config/identity and the files that
differ.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib

from .durable import read_file
from .errors import Corrupt, Refused
from .protocol import DROP_MEMBER, encode_drop, write_answer_header
from .storage import (
    LOGICAL_NAME_RE,
    ZERO_TID,
    classify,
    current_name,
    hex_tid,
    logical_name,
    open_storage_file,
    parse_current,
    parse_transaction,
    read_storage_file,
    symlink_refusal,
    tid_from_hex,
    transaction_name,
)

WINDOW = 2048  # the standby's newest transactions sent with MD5 and oids (chain mode)
# the most digest characters ("MD5+OIDS", 33 + 16 per oid) an in-place request's window may hold: the
# standby's window ends before the transaction that would pass it (the master refuses more)
WINDOW_DIGEST_CHARS = 1 << 22
IN_PLACE = "reseed"  # the request option asking for an in-place re-seed ("in-place"; reseed_inplace.py)
INVENTORY_LIMIT = 1 << 30  # the longest inventory (compressed) a master reads
# A standby's inventory lists at most this many files more than the master
# holds, times FILES_FACTOR (a standby may hold revisions a pack removed
# from the master since): the bound of the master's memory for it.
FILES_FACTOR = 4
FILES_SLACK = 100_000
_CHUNK = 1 << 16
_SIZE = r"(0|[1-9][0-9]{0,18})"


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
                if entry.is_symlink():
                    raise symlink_refusal(entry.path)
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
_PREFIX = "|" + PREFIX + "[0-9a-f]{32}"  # what a standby may send for any name (reseed._prefixes)
_DIGEST = {  # what may follow a name of each kind (see `digest`, `prefix_digest` and the chain window)
    "t": re.compile(r"-|[0-9a-f]{32}|[0-9a-f]{32}\+(?:[0-9A-F]{16})*" + _PREFIX),  # a transaction may write no object
    "c": re.compile(r"-|(?:[0-9a-f]{2}){1,32}" + _PREFIX),
    "o": re.compile(r"-|[0-9a-f]{%d}" % (2 * REVISION_HEAD) + _PREFIX),
    "x": re.compile(r"-" + _PREFIX),
}


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
        return hashlib.md5(read_storage_file(path)).hexdigest()
    if name.endswith(".c"):
        return read_storage_file(path).hex()
    if name.startswith("o"):
        return _revision_head(path)
    return None


def prefix_digest(path, size):
    """The digest of the first `size` bytes of a file (None if it is shorter)."""
    with os.fdopen(open_storage_file(path), "rb") as f:
        data = f.read(size)
    return PREFIX + hashlib.md5(data).hexdigest() if len(data) == size else None


def _tail_from(root, rel, size, other):
    """Where the standby's beginning of this file ends, when it holds one
    that matches (a killed clone's .part); else None."""
    if other is None or not other[1] or not other[1].startswith(PREFIX) or not 0 < other[0] < size:
        return None
    return other[0] if prefix_digest(os.path.join(root, rel), other[0]) == other[1] else None


def _revision_head(path):
    with os.fdopen(open_storage_file(path), "rb") as f:
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
                data = read_storage_file(os.path.join(root, rel))
                self.touched.update(hex_tid(o) for o in parse_transaction(data, check_md5=False).oids)
            elif tid < self.anchor and tid >= floor and theirs.get(name) == (size, None):
                self.trusted_transactions.add(name)
        return True

    def trusts_current(self, name):
        return self.anchor is not None and name[1:17] not in self.touched


def _packed(root, mine):
    for rel, name, _size in mine:
        if name == "x.packed":
            data = read_storage_file(os.path.join(root, rel))
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


def count_files(root):
    """How many entries A/ holds (names only: no stat of any file)."""
    count, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                count += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return count


def inventory_limit(st):
    """The most inventory lines a standby of this master may send."""
    return FILES_FACTOR * count_files(st.a_dir) + FILES_SLACK


def _inflated(stream, length):
    """The inventory's text in pieces of at most _CHUNK bytes, read from
    `stream` (`length` compressed bytes) as it is inflated."""
    if length > INVENTORY_LIMIT:
        raise Refused("malformed request: bad inventory-bytes")
    inflater = zlib.decompressobj()
    try:
        while length:
            data = stream.read(min(length, _CHUNK))
            if not data:
                raise Refused("malformed request: the inventory ended early")
            length -= len(data)
            while data:
                yield inflater.decompress(data, _CHUNK)
                data = inflater.unconsumed_tail
        if not inflater.eof or inflater.unused_data:
            raise Refused("malformed request: the inventory is not one zlib stream")
    except zlib.error:
        raise Refused("malformed request: the inventory is not zlib data")


def _inventory_lines(pieces, max_line):
    pending = b""
    for piece in pieces:
        pending += piece
        lines = pending.split(b"\n")
        pending = lines.pop()
        if len(pending) > max_line:
            raise Refused("malformed request: an inventory line is too long")
        yield from lines
    if pending:
        raise Refused("malformed request: the inventory does not end with a newline")


def parse_inventory_line(line):
    """(name, size, digest or None) of one inventory line (bytes); Refused
    unless it names a storage file with a size and a digest of its kind."""
    words = line.split(b" ")
    text = line[:60].decode("ascii", "replace")
    if len(words) != 3 or not all(words):
        raise Refused("malformed request: bad inventory line %r" % text)
    name, size, dig = (w.decode("ascii", "replace") for w in words)
    if not LOGICAL_NAME_RE.fullmatch(name):
        raise Refused("malformed request: inventory line %r does not name a storage file" % text)
    kind = classify(name)[0] if not name.endswith(".c") else "c"
    if not re.fullmatch(_SIZE, size) or not _DIGEST[kind].fullmatch(dig):
        raise Refused("malformed request: bad inventory line %r" % text)
    return name, int(size), None if dig == "-" else dig


def read_inventory(stream, length, max_files, max_digest_chars=None):
    """{name: (size, digest or None)} of a delta request's inventory, read
    from `stream` as a zlib stream of `length` bytes and parsed line by
    line: at most `max_files` lines, each a storage file named once, and at
    most `max_digest_chars` digest characters (default 64 per file), so the
    master's memory for it stays bounded whatever the standby sends."""
    inventory = {}
    oid_chars = 0
    budget = max_digest_chars or 64 * max_files
    max_line = (16 * max_files if max_digest_chars is None else max_digest_chars) + 128
    for line in _inventory_lines(_inflated(stream, length), max_line):
        name, size, dig = parse_inventory_line(line)
        if name in inventory:
            raise Refused("malformed request: the inventory lists %s twice" % name)
        if len(inventory) >= max_files:
            raise Refused("the inventory lists more than %d files, more than a standby of this master can hold"
                          % max_files, "make a plain clone instead of a re-seed")
        oid_chars += len(dig) if dig else 0
        if oid_chars > budget:
            raise Refused("malformed request: the inventory's digests are too long")
        inventory[name] = (size, dig)
    return inventory


def check_identity(st, req):
    theirs = req.options.get("identity", "")
    if theirs.lower() != st.identity.lower():
        raise Refused("the storage to re-seed is a copy of storage %s, not of this master (%s)"
                      % (theirs or "unknown", st.identity),
                      "check the master and the path; a copy of another storage needs a plain clone")


def answer_delta(st, req, snap, stdin, stdout, log, inc):
    """Read the standby's inventory (from `stdin`, after the request), compare
    it with A/ in snapshot mode, then send the drop list and what differs
    (gathered in `inc`, a serve.Increment).  Returns the master's newest
    transaction the standby now holds (None when it must ask again with
    every digest)."""
    check_identity(st, req)
    theirs = read_inventory(stdin, int(req.options["inventory-bytes"]), inventory_limit(st))
    chain = read_chain_options(req, theirs)
    try:
        with snap:
            master_tid = st.last_tid()
            planned = plan(st.a_dir, st.format, theirs, chain)
            if planned is not None:
                _gather(st, planned, inc)
        if planned is None:  # answered after leaving snapshot mode, like every answer
            return _ask_for_digests(st, stdout, log, inc, master_tid)
        send, drop, kept, tails = planned
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


def _gather(st, planned, inc):
    """Keep what the answer sends (in snapshot mode: serve.Increment opens
    or reads every file, nothing goes out yet)."""
    send, drop, _kept, tails = planned
    inc.add_data(DROP_MEMBER, encode_drop(drop))
    for name in ("settings", "identity"):
        inc.add_data("config/" + name, read_file(st.sub("config", name)))
    for rel in send:
        inc.add_file("A/" + rel, os.path.join(st.a_dir, *rel.split("/")), offset=tails.get(rel, 0))


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


# ------------------------------------------------ the in-place re-seed

def read_window(theirs):
    """{tid: (md5, {oid})} of an in-place request's entries (hostile input)."""
    window = {}
    for name, (_size, dig) in theirs.items():
        md5, sep, oids = (dig or "").partition("+")
        if not name.startswith("t") or not sep or len(md5) != 32 or len(oids) % 16:
            raise Refused("malformed request: bad chain window entry %r" % name[:40])
        try:
            tid = classify(name)[1]
            window[tid] = (md5, {bytes.fromhex(oids[i:i + 16]) for i in range(0, len(oids), 16)})
        except ValueError:
            raise Refused("malformed request: bad chain window entry %r" % name[:40])
    return window


def find_anchor(st, window, master_tid):
    """(anchor, None, the master's chain from `master_tid` down to the
    anchor: read with its bytes, for collect) or (None, why, None)."""
    for tid in sorted(window, reverse=True):
        if tid > master_tid:
            continue
        try:
            data = st.transaction_data(tid)
        except FileNotFoundError:
            continue
        if hashlib.md5(data).hexdigest() != window[tid][0]:
            continue
        if st.packed_tid() > tid:
            return None, "the master is packed past the anchor %s" % hex_tid(tid), None
        try:
            chain = list(st.chain(master_tid, tid, check_md5=False, keep_data=True))
        except Corrupt:
            return None, "the anchor %s is not on the master's chain" % hex_tid(tid), None
        return tid, None, chain
    return None, "no transaction of the chain window is the master's", None


def answer_in_place(st, req, snap, stdin, stdout, log, inc, collect):
    """The master's in-place answer (serve.py passes its Increment and
    `collect`): in snapshot mode, the anchor and the increment since it;
    after it, the o….c of the objects only the diverged transactions wrote
    (`_add_rewinds`), or, if one of them moved on meanwhile, all of it again
    in snapshot mode."""
    check_identity(st, req)
    window = read_window(read_inventory(stdin, int(req.options["inventory-bytes"]), 2 * WINDOW,
                                        WINDOW_DIGEST_CHARS))
    try:
        try:
            anchor, why, absent = _gather_in_place(st, snap, window, inc, collect, rewinds_after=True)
            held = snap.seconds
        except RewoundObjectMoved as e:
            log("re-seed: %s after snapshot mode; gathering again, all in snapshot mode" % e)
            held = snap.seconds
            inc.clear()
            anchor, why, absent = _gather_in_place(st, snap, window, inc, collect, rewinds_after=False)
            held += snap.seconds
        if anchor is None:
            log("re-seed: %s; the standby re-seeds by a new tree" % why)
            write_answer_header(stdout, {"method": "tree", "reason": why, "master_tid": hex_tid(inc.master_tid)})
            stdout.flush()
            return None
        log("re-seed in place from %s: %d transactions, %d files; master held %.3fs"
            % (hex_tid(anchor), inc.transactions, len(inc.entries), held))
        write_answer_header(stdout, {"method": "in-place", "anchor": hex_tid(anchor),
                                     "master_tid": hex_tid(inc.master_tid), "format": st.format, "compress": "none",
                                     "transactions": inc.transactions, "files": len(inc.entries),
                                     "bytes": inc.bytes, "absent": absent,
                                     "snapshot_seconds": round(held, 6)})
        inc.write(stdout)
        stdout.flush()
        return None
    finally:
        inc.close()


class RewoundObjectMoved(Exception):
    """An o….c read after snapshot mode is not as it was in snapshot mode."""


def _gather_in_place(st, snap, window, inc, collect, rewinds_after):
    """(anchor, None, absent) with `inc` filled, or (None, why, None).  The
    o….c of the objects to rewind are read in snapshot mode, or after it
    (`rewinds_after`, raising RewoundObjectMoved if one moved on)."""
    with snap:
        inc.master_tid = master_tid = st.last_tid()
        anchor, why, chain = find_anchor(st, window, master_tid)
        if anchor is None:
            return None, why, None
        collect(st, anchor, inc, chain=chain)  # the chain is read once in snapshot mode, as a pull reads it
        written = {oid for txn in chain for oid in txn.oids}
        packed = st.packed_tid()
        oids = sorted(rewound_objects(window, anchor) - written)
        if not rewinds_after:
            return anchor, None, _add_rewinds(st, inc, oids)
    absent = _add_rewinds(st, inc, oids, anchor)
    if absent and st.packed_tid() != packed:
        raise RewoundObjectMoved("a pack removed objects to rewind")
    return anchor, None, absent


def rewound_objects(window, anchor):
    """The oids the diverged transactions (the window's, above `anchor`) wrote."""
    touched = set()
    for tid, (_md5, oids) in window.items():
        if tid > anchor:
            touched |= oids
    return touched


def _add_rewinds(st, inc, oids, anchor=None):
    """Add the o….c of every object of `oids` (those only the diverged
    transactions wrote); returns how many of them the master has none of.

    With `anchor`, read after snapshot mode was left, so that 700 small
    reads do not hold the master: no transaction up to the snapshot's wrote
    these objects, so each o….c (replaced by rename, never rewritten in
    place) names the revision it named at the anchor, at or below it.  One
    that names a newer revision was written since snapshot mode: raises
    RewoundObjectMoved (its snapshot's bytes are gone)."""
    absent = 0
    for oid in oids:
        name = current_name(oid)
        try:
            data = st.read(name)
        except FileNotFoundError:
            absent += 1
            continue
        if anchor is not None and parse_current(data, "%s/%s" % (st.home, name)) > anchor:
            raise RewoundObjectMoved("object %s was written" % hex_tid(oid))
        inc.add_data(st.relpath(name), data)
    return absent
