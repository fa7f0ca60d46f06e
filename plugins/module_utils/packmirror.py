# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A standby packs as its master did, both sides, so that it holds no more
history than its master (and fills its disk no faster).

The real engine's pack does not delete: it renames each file it drops to
`PATH-<unix time>-deleted`, removes such files at a later pack once
`[storage] delay_delete` seconds have passed, relinks the "previous tid"
field of the transactions it keeps over those it drops, and moves x.packed.

Every pull and follow answer carries the master's x.packed (`packed_tid`).
When it is past the replica's, the standby asks once (a `replica verify 1`
request with the option `pack-drops: 1`) for the names the master's packs
set aside: the answer header ``{"packed_tid", "drops_bytes"}``, then that
many bytes of zlib text, one ``NAME STAMP`` line per `-deleted` file of the
master's A/ (a logical name, and the unix time of its pack).  The standby
then, under its pull's lock (`mirror_pack`):

1. relinks the "previous tid" of its transactions as the engine did
   (each file replaced atomically; its MD5 does not cover that field),
2. renames each of its files the master set aside to the same
   `PATH-STAMP-deleted` (so it is removed after the same delay),
3. writes the master's x.packed (last: a power cut before it leaves the
   replica's x.packed behind the master's, and the next pull asks again),
4. removes its `-deleted` files older than its `delay_delete`, as the
   engine's next pack would.

A transaction or revision newer than the master's x.packed is never
dropped; every step leaves the storage reading as the master.
"""

from __future__ import annotations

import os
import re
import stat
import time
import zlib

from .durable import fsync_path, read_file, remove_atomic_leftovers, write_atomic
from .errors import Corrupt
from .protocol import Request, Session
from .storage import LOGICAL_NAME_RE, classify, hex_tid, logical_name, tid_from_hex, transaction_name

OPTION = "pack-drops"
DROPS_LIMIT = 1 << 30  # uncompressed
SET_ASIDE = re.compile(r"^(?P<base>.+)-(?P<stamp>\d{1,12})-deleted$")
DELAY_DELETE = 864000  # the real engine's default [storage] delay_delete


# ------------------------------------------------------------ master side

def set_aside(st):
    """[(logical name, stamp)] of the files the master's packs renamed
    `-deleted` and have not removed yet."""
    found = []
    for rel, name in st.iter_files("A"):
        match = SET_ASIDE.match(rel) if name is None else None
        if match is None:
            continue
        base = logical_name(st.format, match.group("base"))
        if base is not None:
            found.append((base, int(match.group("stamp"))))
    return found


def answer_pack_drops(st, stdout, write_header):
    """The answer to a `pack-drops` request: header, then the zlib list."""
    packed = st.packed_tid()  # read first: a pack under way only adds names
    body = zlib.compress("".join("%s %d\n" % d for d in set_aside(st)).encode("ascii"), 6)
    write_header(stdout, {"packed_tid": hex_tid(packed), "drops_bytes": len(body)})
    stdout.write(body)
    stdout.flush()


# ------------------------------------------------------------ standby side

def master_packed(info):
    """The master's x.packed from an answer header or frame (None when an
    older master does not say)."""
    try:
        return tid_from_hex(info["packed_tid"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def ask_pack_drops(chan, st, options):
    """Ask the master for what its packs set aside: (packed tid, {logical
    name: stamp})."""
    newest = st.last_tid()
    req = Request("verify", 1, st.identity, newest, st.transaction_md5(newest), dict(options, **{OPTION: "1"}))
    with Session(chan, req) as session:
        info = session.start()
        packed = master_packed(info)
        size = info.get("drops_bytes")
        if packed is None or not isinstance(size, int) or not 0 <= size <= DROPS_LIMIT:
            raise Corrupt("the master's answer to the pack question is not valid",
                          "use the same ds-replica version on both sides")
        body = _read_exact(chan, size)
        session.finish_ok()
    return packed, decode_drops(body)


def _read_exact(chan, size):
    parts = []
    while size:
        data = chan.read(min(size, 1 << 20))
        if not data:
            raise Corrupt("the master's list of packed files ended early", "try again")
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def decode_drops(body):
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(body, DROPS_LIMIT)
    except zlib.error:
        raise Corrupt("the master's list of packed files is not zlib data", "try again")
    if inflater.unconsumed_tail:
        raise Corrupt("the master's list of packed files is too long")
    drops = {}
    for line in text.decode("ascii", "replace").splitlines():
        words = line.split(" ")
        if len(words) != 2 or not words[1].isdigit() or not LOGICAL_NAME_RE.match(words[0]):
            raise Corrupt("the master's list of packed files has a bad line %r" % line[:80])
        drops[words[0]] = int(words[1])
    return drops


def mirror_pack(st, packed, drops, log, now=None):
    """Pack the replica `st` as its master was packed to `packed`, given the
    names the master set aside (`drops`).  The caller holds the replica.
    Returns the counts."""
    now = int(time.time() if now is None else now)
    doomed = {name: stamp for name, stamp in drops.items() if _droppable(name, packed)}
    relinked = _relink(st, {n for n in doomed if n.startswith("t")})
    dropped = _set_aside(st, doomed)
    remove_atomic_leftovers(st.path("x.packed"))
    write_atomic(st.path("x.packed"), packed)
    removed = remove_expired(st, now)
    log("packed as the master to %s: %d file(s) set aside, %d transaction(s) relinked, %d old file(s) removed"
        % (hex_tid(packed), dropped, relinked, removed))
    return {"packed_tid": hex_tid(packed), "set_aside": dropped, "relinked": relinked, "removed": removed}


def _droppable(name, packed):
    """A pack drops nothing newer than x.packed (a current-revision file has no tid)."""
    kind, ident, tid = classify(name)
    if kind == "x":
        return False
    when = ident if kind == "t" else tid
    return when is None or when <= packed


def _relink(st, dropped_transactions):
    """Point each kept transaction's "previous tid" past the dropped ones,
    walking back from x.serial as the engine does.  Returns the count."""
    count = 0
    keeper = None  # (path, data) of the newest kept transaction still to link
    tid = st.last_tid()
    while tid != bytes(8):
        name = transaction_name(tid)
        path = st.path(name)
        try:
            data = read_file(path)
        except FileNotFoundError:
            break  # below an earlier pack: the chain ends here
        if name not in dropped_transactions:
            if keeper is not None and keeper[1][24:32] != tid:
                remove_atomic_leftovers(keeper[0])  # of a mirror killed while it wrote this very file
                mode = stat.S_IMODE(os.stat(keeper[0]).st_mode)
                write_atomic(keeper[0], keeper[1][:24] + tid + keeper[1][32:], mode=mode)
                count += 1
            keeper = (path, data)
        tid = data[24:32]
    return count


def _set_aside(st, doomed):
    count = 0
    folders = set()
    for name, stamp in sorted(doomed.items()):
        path = st.path(name)
        try:
            os.rename(path, "%s-%d-deleted" % (path, stamp))
        except FileNotFoundError:
            continue  # set aside by an earlier, interrupted mirror (or never held)
        folders.add(os.path.dirname(path))
        count += 1
    for folder in folders:
        fsync_path(folder, directory=True)
    return count


def remove_expired(st, now):
    """Remove the `-deleted` files older than the storage's delay_delete."""
    delay = st.settings.getint("storage", "delay_delete", fallback=DELAY_DELETE)
    count = 0
    for rel, name in st.iter_files("A"):
        match = SET_ASIDE.match(rel) if name is None else None
        if match is not None and int(match.group("stamp")) + delay < now:
            os.unlink(os.path.join(st.a_dir, *rel.split("/")))
            count += 1
    return count
