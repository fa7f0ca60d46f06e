# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small, strict ustar writer and streaming reader.

The replication exchange is a plain ustar archive (as the original tool
sends).  The reader is strict on purpose: the archive comes from another
machine, so anything that is not a plain regular file with a sane name is
refused rather than interpreted.
"""

from __future__ import annotations

import os
import re

from .errors import Corrupt

BLOCK = 512
RECORD = 20 * BLOCK
_ZERO_BLOCK = b"\0" * BLOCK


def _octal(value, width):
    text = ("%0*o" % (width - 1, value)).encode("ascii")
    if len(text) > width - 1:
        raise ValueError("value %d does not fit a %d-byte tar field" % (value, width))
    return text + b"\0"


def header(name, size, mode=0o640, mtime=0, uname="", gname=""):
    """A ustar header block for a regular file."""
    raw = name.encode("utf-8")
    prefix = b""
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        while cut > 0 and len(raw) - cut - 1 > 100:
            cut = raw.rfind(b"/", 0, cut)
        if cut <= 0:
            raise ValueError("name too long for ustar: %s" % name)
        prefix, raw = raw[:cut], raw[cut + 1:]
    fields = [
        raw.ljust(100, b"\0"),
        _octal(mode & 0o7777, 8),
        _octal(0, 8),
        _octal(0, 8),
        _octal(size, 12),
        _octal(int(mtime), 12),
        b" " * 8,
        b"0",
        b"\0" * 100,
        b"ustar\x00",
        b"00",
        uname.encode("utf-8")[:31].ljust(32, b"\0"),
        gname.encode("utf-8")[:31].ljust(32, b"\0"),
        _octal(0, 8),
        _octal(0, 8),
        prefix.ljust(155, b"\0"),
        b"\0" * 12,
    ]
    block = bytearray(b"".join(fields))
    checksum = sum(block)
    block[148:156] = ("%06o" % checksum).encode("ascii") + b"\0 "
    return bytes(block)


def padding(size):
    rest = size % BLOCK
    return b"" if rest == 0 else b"\0" * (BLOCK - rest)


class Writer(object):
    """Writes members to a binary file object, counting bytes."""

    def __init__(self, out):
        self.out = out
        self.written = 0

    def _put(self, data):
        self.out.write(data)
        self.written += len(data)

    def add_bytes(self, name, data, mode=0o640, mtime=0):
        self._put(header(name, len(data), mode, mtime))
        self._put(data)
        self._put(padding(len(data)))

    def add_file(self, name, path, mode=0o640, mtime=0, chunk=1 << 20):
        with open(path, "rb") as f:
            self.add_stream(name, os.fstat(f.fileno()).st_size, f.read, mode, mtime, what=path, chunk=chunk)

    def add_stream(self, name, size, read, mode=0o640, mtime=0, what=None, chunk=1 << 20):
        """A member of `size` bytes taken from `read(n)`; Corrupt if they end
        early (a file that shrank while it was sent)."""
        self._put(header(name, size, mode, mtime))
        left = size
        while left:
            data = read(min(chunk, left))
            if not data:
                raise Corrupt("%s shrank while it was being sent" % (what or name))
            self._put(data)
            left -= len(data)
        self._put(padding(size))

    def close(self):
        end = _ZERO_BLOCK * 2
        total = self.written + len(end)
        end += b"\0" * ((RECORD - total % RECORD) % RECORD)
        self._put(end)


_OCTAL = re.compile(rb"[0-7]+")


class Member(object):
    __slots__ = ("name", "size", "mode", "mtime", "data")

    def __init__(self, name, size, mode, mtime, data=None):
        self.name = name
        self.size = size
        self.mode = mode
        self.mtime = mtime
        self.data = data


def _parse_octal(field, what):
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    if field[:1] in (b"\x80", b"\xff"):
        raise Corrupt("archive header has a binary %s field" % what)
    if not _OCTAL.fullmatch(text):  # int() alone would take a sign, "_" and spaces
        raise Corrupt("archive header has a bad %s field" % what)
    return int(text, 8)


def parse_header(block):
    stored = _parse_octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != unsigned:
        raise Corrupt("archive header checksum mismatch (corrupt or not a tar archive)")
    magic = block[257:263]
    if magic not in (b"ustar\x00", b"ustar "):
        raise Corrupt("archive member is not in ustar format")
    typeflag = block[156:157]
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if magic == b"ustar\x00" else b""
    if prefix:
        name = prefix + b"/" + name
    try:
        name = name.decode("utf-8")
    except UnicodeDecodeError:
        raise Corrupt("archive member name is not valid text")
    if typeflag not in (b"0", b"\0"):
        kinds = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
                 b"4": "a block device", b"5": "a folder", b"6": "a FIFO"}
        raise Corrupt("archive member %r is %s, not a regular file" % (name, kinds.get(typeflag, "not a regular file")))
    mode = _parse_octal(block[100:108], "mode")
    size = _parse_octal(block[124:136], "size")
    mtime = _parse_octal(block[136:148], "mtime")
    return Member(name, size, mode, mtime)


def _read_exact(read, n):
    parts = []
    left = n
    while left:
        chunk = read(left)
        if not chunk:
            raise Corrupt("archive is truncated (the connection ended early)")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _take_in_pieces(read, sink, n, size, hand):
    """`n` bytes from `read`, each piece (at most `size` bytes) handed to
    `hand` (and `sink`) as soon as it arrives."""
    parts = []
    while n:
        data = read(min(n, size))
        if not data:
            raise Corrupt("archive is truncated (the connection ended early)")
        if sink is not None:
            sink(data)
        hand(data)
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def iter_members(read, sink=None, max_member=1 << 30, on_large=None, large=1 << 13, piece=1 << 16):
    """Yield Members (with .data) from a stream, strictly.

    `read(n)` returns up to n bytes ('' at EOF).  Every byte read is passed to
    `sink(bytes)` first when given (to spool the archive as it arrives).
    With `on_large`, a member of more than `large` bytes is read in pieces
    of at most `piece` bytes: `on_large(member)` (its header parsed) returns
    a function given each piece as it arrives, or None.  The archive must end with the
    end-of-archive zero blocks.
    """

    def take(n):
        data = _read_exact(read, n)
        if sink is not None:
            sink(data)
        return data

    while True:
        block = take(BLOCK)
        if block == _ZERO_BLOCK:
            # end of archive: drain what is left (padding to the record size)
            while True:
                rest = read(RECORD)
                if not rest:
                    break
                if rest.strip(b"\0"):
                    raise Corrupt("archive has data after its end marker")
                if sink is not None:
                    sink(rest)
            return
        member = parse_header(block)
        if member.size > max_member:
            raise Corrupt("archive member %r is too large (%d bytes)" % (member.name, member.size))
        hand = on_large(member) if on_large is not None and member.size > large else None
        member.data = take(member.size) if hand is None else _take_in_pieces(read, sink, member.size, piece, hand)
        pad = len(padding(member.size))
        if pad:
            take(pad)
        yield member
