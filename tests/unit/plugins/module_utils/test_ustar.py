"""The ustar writer and the strict streaming reader of plugins/module_utils/ustar.py:
what one writes the other reads back, and what the reader refuses by itself."""

from __future__ import annotations

import io
import tarfile

import pytest

from dirstorage_replica.errors import Corrupt
from dirstorage_replica.ustar import BLOCK, RECORD, Writer, header, iter_members, padding, parse_header

# ------------------------------------------------------------------ helpers


def _archive(members, close=True):
    out = io.BytesIO()
    w = Writer(out)
    for name, data, mode, mtime in members:
        w.add_bytes(name, data, mode=mode, mtime=mtime)
    if close:
        w.close()
    assert w.written == len(out.getvalue())
    return out.getvalue()


def _read_all(data, **kw):
    stream = io.BytesIO(data)
    return [(m.name, m.data, m.mode, m.mtime, m.size) for m in iter_members(stream.read, **kw)]


def _with_checksum(block):
    """A header block with its checksum recomputed (as a writer would), so that a
    mutation reaches the check after the checksum."""
    block = bytearray(block)
    block[148:156] = b" " * 8
    block[148:156] = ("%06o" % sum(block)).encode("ascii") + b"\0 "
    return bytes(block)


def _set(block, start, value):
    block = bytearray(block)
    block[start:start + len(value)] = value
    return _with_checksum(block)


MEMBERS = [
    ("A/x/serial", b"\x04\x0d\x44\xd7\x89\x0f\x04\x44", 0o640, 1795673731),
    ("A/o0/00/00/00/00/00/00/005/c", b"", 0o600, 0),
    ("A/t0/40/D44/D788D6FE22", bytes(range(256)) * 3, 0o644, 1),     # 768 bytes: pads to 1024
    ("A/block", b"b" * BLOCK, 0o640, 2),                                  # exactly one block, no padding
]


# ------------------------------------------------------------------- writer

def test_what_the_writer_writes_the_reader_reads_back():
    assert _read_all(_archive(MEMBERS)) == [(n, d, m, t, len(d)) for n, d, m, t in MEMBERS]


def test_standard_tar_reads_what_the_writer_writes():
    with tarfile.open(fileobj=io.BytesIO(_archive(MEMBERS)), mode="r:") as tar:
        got = [(i.name, tar.extractfile(i).read(), i.mode, i.mtime, i.type) for i in tar.getmembers()]
    assert got == [(n, d, m, t, tarfile.REGTYPE) for n, d, m, t in MEMBERS]


def test_the_archive_ends_with_two_zero_blocks_padded_to_a_record():
    data = _archive(MEMBERS[:1])
    assert len(data) == RECORD == 20 * BLOCK
    assert data[2 * BLOCK:] == b"\0" * (RECORD - 2 * BLOCK)
    assert len(_archive([])) == RECORD


def test_add_file_sends_a_file_like_add_bytes(tmp_path):
    path = tmp_path / "rev"
    path.write_bytes(b"pickle" * 300)
    out = io.BytesIO()
    w = Writer(out)
    w.add_file("A/o/rev", str(path), mode=0o640, mtime=7, chunk=100)
    w.close()
    assert out.getvalue() == _archive([("A/o/rev", b"pickle" * 300, 0o640, 7)])


@pytest.mark.parametrize("size,pad", [(0, 0), (1, 511), (511, 1), (512, 0), (513, 511), (1024, 0)])
def test_padding_fills_the_last_block(size, pad):
    assert padding(size) == b"\0" * pad


# ------------------------------------------------------------------- header

def test_header_fields_and_checksum_follow_ustar():
    block = header("A/x/oid", 8, mode=0o100640, mtime=1795673731)
    assert len(block) == BLOCK
    assert block[0:100] == b"A/x/oid".ljust(100, b"\0")
    assert block[100:108] == b"0000640\0"            # file type bits are not in a ustar mode
    assert block[124:136] == b"00000000010\0"
    assert block[136:148] == b"%011o\0" % 1795673731
    assert block[156:157] == b"0"
    assert block[257:265] == b"ustar\x0000"
    # the checksum is the sum of all bytes with the checksum field read as 8 spaces
    assert int(block[148:154], 8) == sum(block[:148]) + 8 * 32 + sum(block[156:])
    assert block[154:156] == b"\0 "


def test_a_long_name_is_split_into_prefix_and_name():
    name = "A/" + "/".join(["o000"] * 40) + "/c"           # 203 bytes
    block = header(name, 0)
    prefix = block[345:500].rstrip(b"\0")
    short = block[0:100].rstrip(b"\0")
    assert len(prefix) <= 155 and len(short) <= 100
    assert prefix + b"/" + short == name.encode()
    assert parse_header(block).name == name


def test_a_name_of_exactly_100_bytes_needs_no_prefix():
    name = "A/" + "n" * 98
    block = header(name, 0)
    assert block[0:100] == name.encode() and block[345:500] == b"\0" * 155


@pytest.mark.parametrize("name", [
    "A/" + "n" * 101,                           # last component longer than 100 bytes
    "n" * 101,                                  # no slash to cut at
    "/".join(["d" * 50] * 4) + "/" + "n" * 60,  # no cut leaves both parts short enough
])
def test_a_name_ustar_cannot_hold_is_refused(name):
    with pytest.raises(ValueError, match="^name too long for ustar: "):
        header(name, 0)


def test_a_size_the_field_cannot_hold_is_refused():
    assert parse_header(header("big", 8 ** 11 - 1)).size == 8 ** 11 - 1
    with pytest.raises(ValueError, match="^value 8589934592 does not fit a 12-byte tar field$"):
        header("big", 8 ** 11)


# ---------------------------------------------------------- reader refusals

GOOD = header("A/x/oid", 8, mtime=1795673731)


def test_parse_header_reads_a_good_header():
    m = parse_header(GOOD)
    assert (m.name, m.size, m.mode, m.mtime) == ("A/x/oid", 8, 0o640, 1795673731)


def test_a_changed_byte_fails_the_header_checksum():
    block = bytearray(GOOD)
    block[140] ^= 0x01  # a digit of the mtime
    with pytest.raises(Corrupt) as err:
        parse_header(bytes(block))
    assert str(err.value) == "archive header checksum mismatch (corrupt or not a tar archive)"


def test_a_header_that_is_not_ustar_is_refused():
    with pytest.raises(Corrupt) as err:
        parse_header(_set(GOOD, 257, b"ustaR\x00"))
    assert str(err.value) == "archive member is not in ustar format"


def test_a_gnu_header_is_read_without_its_prefix_field():
    block = _set(GOOD, 257, b"ustar  \0")
    block = _set(block, 345, b"junk")
    assert parse_header(block).name == "A/x/oid"


@pytest.mark.parametrize("flag,kind", [
    (b"1", "a hard link"), (b"2", "a symbolic link"), (b"3", "a character device"), (b"4", "a block device"),
    (b"5", "a folder"), (b"6", "a FIFO"), (b"7", "not a regular file"), (b"L", "not a regular file"),
    (b"x", "not a regular file"),
])
def test_a_member_that_is_not_a_regular_file_is_refused(flag, kind):
    with pytest.raises(Corrupt) as err:
        parse_header(_set(GOOD, 156, flag))
    assert str(err.value) == "archive member 'A/x/oid' is %s, not a regular file" % kind


def test_an_old_style_regular_file_flag_is_accepted():
    assert parse_header(_set(GOOD, 156, b"\0")).name == "A/x/oid"


@pytest.mark.parametrize("start,what", [(100, "mode"), (124, "size"), (136, "mtime")])
def test_a_binary_number_field_is_refused(start, what):
    with pytest.raises(Corrupt) as err:
        parse_header(_set(GOOD, start, b"\x80\0\0\0\0\0\0\x01"))
    assert str(err.value) == "archive header has a binary %s field" % what


@pytest.mark.parametrize("start,what", [(100, "mode"), (124, "size"), (136, "mtime")])
def test_a_number_field_that_is_not_octal_is_refused(start, what):
    with pytest.raises(Corrupt) as err:
        parse_header(_set(GOOD, start, b"0000089\0"))
    assert str(err.value) == "archive header has a bad %s field" % what


def test_a_name_that_is_not_utf8_is_refused():
    with pytest.raises(Corrupt) as err:
        parse_header(_set(GOOD, 0, b"A/\xff\xfe\0"))
    assert str(err.value) == "archive member name is not valid text"


# ----------------------------------------------------------- stream refusals

def test_the_sink_sees_every_byte_of_the_archive():
    data = _archive(MEMBERS)
    seen = bytearray()
    assert len(_read_all(data, sink=seen.extend)) == len(MEMBERS)
    assert bytes(seen) == data


def test_the_reader_takes_short_reads():
    data = _archive(MEMBERS)
    stream = io.BytesIO(data)
    members = list(iter_members(lambda n: stream.read(min(n, 7))))
    assert [(m.name, m.data) for m in members] == [(n, d) for n, d, _m, _t in MEMBERS]


@pytest.mark.parametrize("keep", [
    BLOCK - 1,                 # inside the first header
    BLOCK + 4,                 # inside the first member's data
    BLOCK + 8,                 # the first member's padding is missing
    2 * BLOCK,                 # no end marker at all
])
def test_a_truncated_archive_is_refused(keep):
    data = _archive(MEMBERS)[:keep]
    with pytest.raises(Corrupt) as err:
        _read_all(data)
    assert str(err.value) == "archive is truncated (the connection ended early)"


def test_the_end_marker_may_come_without_the_record_padding():
    data = _archive(MEMBERS[:1])
    assert _read_all(data[:3 * BLOCK])[0][0] == "A/x/serial"


def test_data_after_the_end_marker_is_refused():
    data = _archive(MEMBERS[:1])
    data = data[:-1] + b"\x01"
    with pytest.raises(Corrupt) as err:
        _read_all(data)
    assert str(err.value) == "archive has data after its end marker"


def test_a_member_above_the_limit_is_refused_before_its_data_is_read():
    data = _archive(MEMBERS)
    assert len(_read_all(data, max_member=768)) == len(MEMBERS)
    seen = bytearray()
    with pytest.raises(Corrupt) as err:
        _read_all(data, max_member=767, sink=seen.extend)
    assert str(err.value) == "archive member 'A/t0/40/D44/D788D6FE22' is too large (768 bytes)"
    assert len(seen) == 4 * BLOCK  # two members (header + padded 8 bytes, header only) and its header
