# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DirectoryStorage on disk: names, formats, file headers, the chain, its
locks, `Storage`.  Its errors are in errors.py, the durable writes and the
lock itself in durable.py.

Plain Python, standard library only; shared by the CLI, the Ansible modules
and the tests.  See docs/storage-format-notes.md for the facts.
"""

from __future__ import annotations

import configparser
import datetime
import errno
import hashlib
import os
import re
import struct

from .durable import FileLock, fsync_path, read_file, read_whole, remove_atomic_leftovers, write_atomic
from .errors import Corrupt, NotAStorage, Refused

ZERO_TID = b"\0" * 8
FORMATS = ("bushy", "chunky", "lawn", "flat")

TRANSACTION_MAGIC = b"\x47\x40\x07\x76"
REVISION_MAGIC = b"\xbd\xb8\x2a\x71"
OLD_CURRENT_MAGIC = b"\x0b\xfe\xe8\xec"
EMPTY_MD5 = b"\0" * 16

TRANSACTION_HEADER = 60
REVISION_HEADER = 72

_HEX16 = "[0-9A-F]{16}"
LOGICAL_NAME_RE = re.compile(
    r"^(?:x\.(?:serial|oid|packed)"
    r"|t[0-9A-F]{6}\.[0-9A-F]{10}"
    r"|o" + _HEX16 + r"\.(?:c|" + _HEX16 + r"))$"
)
JOURNAL_ENTRY_RE = re.compile(r"^working_([0-9A-F]{16})_(temp|done)$")


# --------------------------------------------------------------------- ids

def hex_tid(tid):
    """8 bytes -> 16 upper-case hex digits."""
    return tid.hex().upper()


def tid_from_hex(text):
    text = text.strip()
    if not re.match(r"^[0-9A-Fa-f]{16}$", text):
        raise ValueError("not a 16-digit hex id: %r" % text)
    return bytes.fromhex(text)


def tid_to_datetime(tid):
    """ZODB TimeStamp -> aware UTC datetime (None for the zero tid)."""
    if tid == ZERO_TID:
        return None
    high, low = struct.unpack(">II", tid)
    minute = high % 60
    high //= 60
    hour = high % 24
    high //= 24
    day = high % 31 + 1
    high //= 31
    month = high % 12 + 1
    year = high // 12 + 1900
    seconds = low * 60.0 / 4294967296.0
    base = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    return base + datetime.timedelta(seconds=seconds)


def tid_to_epoch(tid):
    when = tid_to_datetime(tid)
    return None if when is None else when.timestamp()


def tid_from_epoch(epoch):
    """A ZODB TimeStamp for a time (seconds since the epoch, UTC)."""
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    high = ((((when.year - 1900) * 12 + when.month - 1) * 31 + when.day - 1) * 24 + when.hour) * 60 + when.minute
    seconds = when.second + when.microsecond / 1e6
    low = int(seconds * 4294967296.0 / 60.0)
    return struct.pack(">II", high, min(low, 0xFFFFFFFF))


def tid_later_than(tid, previous):
    """The smallest tid that is both >= tid and > previous (as ZODB does)."""
    if tid > previous:
        return tid
    value = int.from_bytes(previous, "big") + 1
    return value.to_bytes(8, "big")


# ------------------------------------------------------------------ formats

def logical_path(fmt, name):
    """Map a logical name to its path relative to A/ (with '/' separators)."""
    stem, dot, rest = name.partition(".")
    if fmt == "flat":
        return name
    if fmt == "lawn":
        return stem + "/" + rest if dot else name
    if fmt == "bushy":
        pieces = []
        while len(stem) > 3:
            pieces.append(stem[:2])
            stem = stem[2:]
        pieces.append(stem)
        path = "/".join(pieces)
        return path + "/" + rest if dot else path
    if fmt == "chunky":
        if len(stem) <= 3:
            return stem + "/" + rest if dot else stem
        pieces = []
        first = True
        while len(stem) > 4:
            size = 4 if first and stem[0] in "ot" else 3
            pieces.append(stem[:size])
            stem = stem[size:]
            first = False
        pieces.append(stem + dot + rest)
        return "/".join(pieces)
    raise NotAStorage("unknown storage format %r" % fmt, "expected one of %s" % ", ".join(FORMATS))


def logical_name(fmt, relpath):
    """The logical name a path relative to A/ stands for, or None if the path
    is not the canonical place of a valid storage name in this format."""
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    candidates = []
    if fmt == "flat":
        candidates.append(relpath)
    elif fmt in ("lawn", "bushy"):
        if len(parts) >= 2:
            candidates.append("".join(parts[:-1]) + "." + parts[-1])
    elif fmt == "chunky":
        candidates.append("".join(parts))
        if len(parts) >= 2:
            candidates.append("".join(parts[:-1]) + "." + parts[-1])
    for name in candidates:
        if LOGICAL_NAME_RE.match(name) and logical_path(fmt, name) == relpath:
            return name
    return None


def transaction_name(tid):
    h = hex_tid(tid)
    return "t%s.%s" % (h[:6], h[6:])


def revision_name(oid, tid):
    return "o%s.%s" % (hex_tid(oid), hex_tid(tid))


def current_name(oid):
    return "o%s.c" % hex_tid(oid)


def classify(name):
    """('x', None, None) | ('t', tid, None) | ('o', oid, tid) | ('c', oid, None)."""
    if name.startswith("x."):
        return ("x", None, None)
    if name.startswith("t"):
        return ("t", bytes.fromhex(name[1:7] + name[8:]), None)
    oid = bytes.fromhex(name[1:17])
    rest = name[18:]
    if rest == "c":
        return ("c", oid, None)
    return ("o", oid, bytes.fromhex(rest))


# ------------------------------------------------------------ file formats

class Transaction(object):
    __slots__ = ("tid", "prev", "user", "description", "extension", "oids", "md5", "size", "data")

    def __init__(self, tid, prev, user, description, extension, oids, md5, size):
        self.tid = tid
        self.prev = prev
        self.user = user
        self.description = description
        self.extension = extension
        self.oids = oids
        self.md5 = md5
        self.size = size
        self.data = None  # the file's bytes, when the reader asked to keep them (Storage.chain(keep_data=True))


def parse_transaction(data, expect_tid=None, check_md5=True, what="transaction file"):
    if len(data) < TRANSACTION_HEADER or data[:4] != TRANSACTION_MAGIC:
        raise Corrupt("%s has no transaction header" % what)
    (length,) = struct.unpack(">I", data[4:8])
    if length != len(data):
        raise Corrupt("%s is %d bytes but its header says %d" % (what, len(data), length))
    tid = data[8:16]
    if expect_tid is not None and tid != expect_tid:
        raise Corrupt("%s holds transaction %s, not %s" % (what, hex_tid(tid), hex_tid(expect_tid)))
    prev = data[24:32]
    md5 = data[32:48]
    ulen, dlen, elen, olen, vlen = struct.unpack(">HHHIH", data[48:60])
    if vlen != 0 or olen % 8 or TRANSACTION_HEADER + ulen + dlen + elen + olen + vlen != length:
        raise Corrupt("%s has inconsistent lengths" % what)
    if check_md5 and md5 != EMPTY_MD5 and hashlib.md5(data[48:]).digest() != md5:
        raise Corrupt("%s fails its MD5 check" % what)
    pos = TRANSACTION_HEADER
    user = data[pos:pos + ulen]
    pos += ulen
    desc = data[pos:pos + dlen]
    pos += dlen
    ext = data[pos:pos + elen]
    pos += elen
    oids = [data[i:i + 8] for i in range(pos, pos + olen, 8)]
    return Transaction(tid, prev, user, desc, ext, oids, md5, length)


def transaction_digest(data):
    """MD5 of a transaction file without its "previous tid" field: a pack on
    the master relinks the chain by rewriting that field in older
    transaction files (seen in the golden fixtures), nothing else."""
    return hashlib.md5(data[:24] + data[32:]).hexdigest()


def build_transaction(tid, prev, oids, user=b"", description=b"", extension=b"", md5=True):
    body = struct.pack(">HHHIH", len(user), len(description), len(extension), 8 * len(oids), 0)
    body += user + description + extension + b"".join(oids)
    digest = hashlib.md5(body).digest() if md5 else EMPTY_MD5
    length = 48 + len(body)
    return TRANSACTION_MAGIC + struct.pack(">I", length) + tid + ZERO_TID + prev + digest + body


class Revision(object):
    __slots__ = ("oid", "tid", "prev", "undo_from", "md5", "size", "pickle")

    def __init__(self, oid, tid, prev, undo_from, md5, size, pickle):
        self.oid = oid
        self.tid = tid
        self.prev = prev
        self.undo_from = undo_from
        self.md5 = md5
        self.size = size
        self.pickle = pickle


def parse_revision_header(head, size, expect_oid=None, expect_tid=None, what="object revision file"):
    """Check the first 72 bytes of a revision file of `size` bytes."""
    if len(head) < REVISION_HEADER or head[:4] != REVISION_MAGIC:
        raise Corrupt("%s has no object revision header" % what)
    (length,) = struct.unpack(">I", head[4:8])
    if length != size:
        raise Corrupt("%s is %d bytes but its header says %d" % (what, size, length))
    oid = head[8:16]
    tid = head[64:72]
    if expect_oid is not None and oid != expect_oid:
        raise Corrupt("%s holds object %s, not %s" % (what, hex_tid(oid), hex_tid(expect_oid)))
    if expect_tid is not None and tid != expect_tid:
        raise Corrupt("%s holds revision %s, not %s" % (what, hex_tid(tid), hex_tid(expect_tid)))
    return oid, tid, head[56:64], head[16:24], head[40:56]


def parse_revision(data, expect_oid=None, expect_tid=None, check_md5=True, what="object revision file"):
    oid, tid, prev, undo_from, md5 = parse_revision_header(data[:REVISION_HEADER], len(data), expect_oid,
                                                           expect_tid, what)
    if check_md5 and md5 != EMPTY_MD5 and hashlib.md5(data[56:]).digest() != md5:
        raise Corrupt("%s fails its MD5 check" % what)
    return Revision(oid, tid, prev, undo_from, md5, len(data), data[REVISION_HEADER:])


def build_revision(oid, tid, prev, pickle, undo_from=ZERO_TID, md5=True):
    tail = prev + tid + pickle
    digest = hashlib.md5(tail).digest() if md5 else EMPTY_MD5
    length = 56 + len(tail)
    return REVISION_MAGIC + struct.pack(">I", length) + oid + undo_from + b"\0" * 16 + digest + tail


def parse_current(data, what="current-revision file"):
    if len(data) == 8:
        return data
    if len(data) == 12 and data[:4] == OLD_CURRENT_MAGIC:
        return data[4:]
    raise Corrupt("%s is not 8 bytes (or the old 12-byte form)" % what)


def check_member(fmt_name, data, what):
    """Validate the content of a file for logical name `fmt_name`."""
    kind, a, b = classify(fmt_name)
    if kind == "t":
        return parse_transaction(data, expect_tid=a, what=what)
    if kind == "o":
        return parse_revision(data, expect_oid=a, expect_tid=b, what=what)
    if kind == "c":
        return parse_current(data, what=what)
    if len(data) != 8:
        raise Corrupt("%s is not 8 bytes" % what)
    return data


def chain_digests(st, newest, stop):
    """[(tid hex, md5 hex of the transaction file)] newest first, down to but
    not including `stop` (or as far as the files go after a pack)."""
    out = []
    tid = newest
    while tid != ZERO_TID and tid > stop:
        try:
            data = st.transaction_data(tid)
        except FileNotFoundError:
            break
        out.append((hex_tid(tid), transaction_digest(data)))
        tid = data[24:32]
    return out


# ------------------------------------------------------- reading its files

def open_storage_file(path):
    """A read-only descriptor of a file inside a storage.  Refused when the
    file is a symbolic link: a storage holds none, and following one would
    send another file's bytes (O_NOFOLLOW: no extra system call)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise symlink_refusal(path)
        raise


def symlink_refusal(path):
    return Refused("%s is a symbolic link; a storage holds none and ds-replica does not follow them" % path,
                   "replace it with the file itself (or a hard link)")


def read_storage_file(path):
    """The bytes of a storage file (never through a symbolic link)."""
    return read_whole(open_storage_file(path))


# ---------------------------------------------------------------- storage

class Storage(object):
    """A DirectoryStorage home folder."""

    def __init__(self, home, must_exist=True):
        self.home = os.path.abspath(home)
        self.settings_path = os.path.join(self.home, "config", "settings")
        if must_exist:
            self._load()

    def _load(self):
        if not os.path.isdir(self.home):
            raise NotAStorage("%s does not exist" % self.home, "check the storage path")
        if not os.path.isfile(self.settings_path):
            raise NotAStorage("%s is not a DirectoryStorage (no config/settings)" % self.home,
                              "check the storage path")
        parser = configparser.RawConfigParser(strict=False)
        parser.optionxform = str
        try:
            parser.read(self.settings_path, encoding="utf-8")
        except configparser.Error as e:
            raise NotAStorage("%s: config/settings cannot be read (%s)" % (self.home, str(e).splitlines()[0]))
        self.settings = parser
        self.format = parser.get("structure", "format", fallback=None)
        if self.format not in FORMATS:
            raise NotAStorage("%s: unknown format %r in config/settings" % (self.home, self.format),
                              "expected one of %s" % ", ".join(FORMATS))
        self.version = parser.get("structure", "version", fallback=None)
        self.classname = parser.get("storage", "classname", fallback=None)
        try:
            ident = read_file(os.path.join(self.home, "config", "identity")).decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            raise NotAStorage("%s has no readable config/identity" % self.home, "check the storage path")
        if not re.match(r"^[0-9a-fA-F]{32}$", ident):
            raise NotAStorage("%s: config/identity is not 32 hex digits" % self.home)
        self.identity = ident
        self.sync = parser.get("filesystem", "sync", fallback="1").strip() != "0"

    # paths ------------------------------------------------------------
    def sub(self, *parts):
        return os.path.join(self.home, *parts)

    @property
    def a_dir(self):
        return self.sub("A")

    @property
    def b_dir(self):
        return self.sub("B")

    @property
    def journal_dir(self):
        return self.sub("journal")

    def relpath(self, name, folder="A"):
        """HOME-relative path ('A/...') of a logical name."""
        return folder + "/" + logical_path(self.format, name)

    def path(self, name, folder="A"):
        return os.path.join(self.home, folder, *logical_path(self.format, name).split("/"))

    def read(self, name, folder="A"):
        return read_storage_file(self.path(name, folder))

    def require_full(self, role="storage"):
        if self.classname != "Full":
            raise NotAStorage("%s %s is a %s storage, not Full: only Full storages keep the history replication needs"
                              % (role, self.home, self.classname or "(unknown class)"),
                              "replicate a Full storage")

    # ids --------------------------------------------------------------
    def _read8(self, name, folder="A"):
        data = self.read(name, folder)
        if len(data) != 8:
            raise Corrupt("%s: A/%s is not 8 bytes" % (self.home, logical_path(self.format, name)))
        return data

    def last_tid(self):
        try:
            return self._read8("x.serial")
        except FileNotFoundError:
            return ZERO_TID

    def newest_tid(self):
        """The newest committed transaction of a storage, running or not: a
        live engine commits into journal/working_<TID>_done and moves those into
        A/ only in batches (200 transactions, 2,000 files or an hour), into B/
        while in snapshot mode; A/x.serial alone can be an hour behind.  Reads
        one folder listing and at most two 8-byte files; no lock, no snapshot."""
        best = max([self.last_tid()] + self.journal_tids())
        try:
            best = max(best, self._read8("x.serial", "B"))
        except (FileNotFoundError, Corrupt):
            pass  # no spill into B/ (or one being written): A/ and the journal say it
        return best

    def journal_tids(self):
        """Tids of the committed transactions waiting in journal/ (``working_<TID>_done``)."""
        matches = (JOURNAL_ENTRY_RE.match(entry) for entry in self.journal_entries())
        return [bytes.fromhex(m.group(1)) for m in matches if m and m.group(2) == "done"]

    def packed_tid(self):
        try:
            return self._read8("x.packed")
        except FileNotFoundError:
            return ZERO_TID

    def last_oid(self):
        try:
            return self._read8("x.oid")
        except FileNotFoundError:
            return ZERO_TID

    def current(self, oid):
        return parse_current(self.read(current_name(oid)))

    def load(self, oid, folder="A"):
        """(tid, pickle) of the current revision of an object, checked."""
        tid = parse_current(self.read(current_name(oid), folder))
        rev = parse_revision(self.read(revision_name(oid, tid), folder), expect_oid=oid, expect_tid=tid,
                             what="%s: object %s revision %s" % (self.home, hex_tid(oid), hex_tid(tid)))
        return tid, rev.pickle

    # transactions -----------------------------------------------------
    def transaction_data(self, tid):
        return self.read(transaction_name(tid))

    def transaction(self, tid, check_md5=True, keep_data=False):
        name = transaction_name(tid)
        data = self.read(name)
        txn = parse_transaction(data, expect_tid=tid, check_md5=check_md5,
                                what="%s: transaction %s" % (self.home, hex_tid(tid)))
        if keep_data:
            txn.data = data
        return txn

    def transaction_md5(self, tid):
        """Hex MD5 of the whole transaction file (MD5 of nothing for tid 0)."""
        if tid == ZERO_TID:
            return hashlib.md5(b"").hexdigest()
        return hashlib.md5(self.transaction_data(tid)).hexdigest()

    def chain(self, newest=None, stop=ZERO_TID, check_md5=True, keep_data=False):
        """Transactions from `newest` (default x.serial) back to, not including,
        `stop`; newest first (with their bytes in .data if `keep_data`).
        Raises Corrupt if the chain breaks."""
        tid = self.last_tid() if newest is None else newest
        while tid != ZERO_TID and tid != stop:
            if stop is not None and tid < stop:
                raise Corrupt("%s: the transaction chain skips past %s" % (self.home, hex_tid(stop)))
            try:
                txn = self.transaction(tid, check_md5=check_md5, keep_data=keep_data)
            except FileNotFoundError:
                raise Corrupt("%s: the transaction chain is broken at %s (file missing)" % (self.home, hex_tid(tid)))
            yield txn
            if txn.prev >= tid:
                raise Corrupt("%s: transaction %s points forward to %s" % (self.home, hex_tid(tid),
                                                                           hex_tid(txn.prev)))
            tid = txn.prev

    # locks and state --------------------------------------------------
    def lock(self):
        return FileLock(self.sub("misc", "lock"))

    def sublock(self):
        return FileLock(self.sub("misc", "sublock"))

    def snapshot_code(self):
        try:
            return read_file(self.sub("misc", "snapshot")).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None

    def write_snapshot_marker(self, code="shutdown"):
        write_atomic(self.sub("misc", "snapshot"), code.encode("utf-8"), mode=0o640, sync=self.sync)

    def remove_marker_leftovers(self):
        """misc/snapshot.tmp-PID of a marker write cut short (caller holds misc/lock and misc/sublock)."""
        remove_atomic_leftovers(self.sub("misc", "snapshot"))

    def remove_snapshot_marker(self):
        try:
            os.unlink(self.sub("misc", "snapshot"))
        except FileNotFoundError:
            return False
        if self.sync:
            fsync_path(self.sub("misc"), directory=True)
        return True

    def journal_entries(self):
        try:
            return sorted(os.listdir(self.journal_dir))
        except FileNotFoundError:
            return []

    def iter_files(self, folder="A"):
        """(relpath under folder, logical name or None) for every file, in
        name order; Refused at a symbolic link (file or folder)."""
        yield from _iter_tree(self.sub(folder), "", self.format)


def _iter_tree(root, rel_dir, fmt):
    with os.scandir(os.path.join(root, rel_dir)) as it:
        entries = sorted(it, key=lambda e: e.name)
    folders = []
    for entry in entries:  # a folder's files first, then its sub-folders (as os.walk)
        rel = entry.name if not rel_dir else rel_dir + "/" + entry.name
        if entry.is_symlink():  # d_type: no extra system call
            raise symlink_refusal(entry.path)
        if entry.is_dir():
            folders.append(rel)
        else:
            yield rel, logical_name(fmt, rel)
    for rel in folders:
        yield from _iter_tree(root, rel, fmt)
