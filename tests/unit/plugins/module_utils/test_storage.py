"""Pure functions of plugins/module_utils/storage.py: names and paths in the four formats,
tid conversions, and the file formats (shared/spec/directorystorage.md, section 2)."""

from __future__ import annotations

import datetime
import hashlib
import os
import struct

import pytest

from dirstorage_replica.errors import Corrupt, NotAStorage
from dirstorage_replica.storage import (
    EMPTY_MD5,
    OLD_CURRENT_MAGIC,
    ZERO_TID,
    build_revision,
    build_transaction,
    check_member,
    classify,
    current_name,
    hex_tid,
    logical_name,
    logical_path,
    parse_current,
    parse_revision,
    parse_transaction,
    revision_name,
    tid_from_epoch,
    tid_from_hex,
    tid_later_than,
    tid_to_datetime,
    tid_to_epoch,
    transaction_name,
)
from tests.support.checks import manifest

FORMATS = ("bushy", "chunky", "lawn", "flat")
UTC = datetime.timezone.utc
TID = bytes.fromhex("040D44D40F4CA9AA")
OID5 = bytes.fromhex("0000000000000005")

# ------------------------------------------------------------ names -> paths

# the spec's own examples (section 2), plus the other kinds of names
SPEC_PATHS = [
    ("bushy", "o0000000000000005.c", "o0/00/00/00/00/00/00/005/c"),
    ("bushy", "t040D44.D40F4CA9AA", "t0/40/D44/D40F4CA9AA"),
    ("bushy", "x.oid", "x/oid"),
    ("bushy", "o0000000000000005.040D44D40F4CA9AA", "o0/00/00/00/00/00/00/005/040D44D40F4CA9AA"),
    ("chunky", "o0000000000000005.c", "o000/000/000/000/0005.c"),
    ("chunky", "t040D44.D40F4CA9AA", "t040/D44.D40F4CA9AA"),
    ("chunky", "x.oid", "x/oid"),
    ("chunky", "o0000000000000005.040D44D40F4CA9AA", "o000/000/000/000/0005.040D44D40F4CA9AA"),
    ("lawn", "o0000000000000005.c", "o0000000000000005/c"),
    ("lawn", "t040D44.D40F4CA9AA", "t040D44/D40F4CA9AA"),
    ("lawn", "x.serial", "x/serial"),
    ("flat", "o0000000000000005.c", "o0000000000000005.c"),
    ("flat", "t040D44.D40F4CA9AA", "t040D44.D40F4CA9AA"),
    ("flat", "x.packed", "x.packed"),
]


@pytest.mark.parametrize("fmt,name,path", SPEC_PATHS)
def test_logical_path_follows_the_spec(fmt, name, path):
    assert logical_path(fmt, name) == path


@pytest.mark.parametrize("fmt,name,path", SPEC_PATHS)
def test_logical_name_reads_the_spec_path_back(fmt, name, path):
    assert logical_name(fmt, path) == name


def test_logical_path_refuses_an_unknown_format():
    with pytest.raises(NotAStorage) as err:
        logical_path("tree", "x.oid")
    assert str(err.value) == "unknown storage format 'tree'; expected one of bushy, chunky, lawn, flat"


@pytest.mark.parametrize("fmt,path", [
    ("flat", "t040D44.D40F4CA9AA-1795673731-deleted"),          # a pack's leftover (delay_delete)
    ("bushy", "t0/40/D44/D787528711-1795673731-deleted"),
    ("lawn", "o0000000000000005/c.tmp"),
    ("lawn", "o0000000000000005/../x/oid"),
    ("lawn", "./x/oid"),
    ("lawn", "x//oid"),
    ("lawn", "x.oid"),                                           # flat spelling in lawn
    ("flat", "x/oid"),                                           # lawn spelling in flat
    ("bushy", "o0000000000000005/c"),                            # lawn spelling in bushy
    ("chunky", "t0/40/D44/D40F4CA9AA"),                          # bushy spelling in chunky
    ("chunky", "o000/000/000/000/0005/c"),                       # right name, wrong cut
    ("lawn", "o000000000000005/c"),                              # 15-digit oid
    ("lawn", "o000000000000000a/c"),                             # lower-case hex
    ("lawn", "x/lock"),
    ("flat", "t040D44D40F4CA9AA"),                               # no dot
])
def test_logical_name_refuses_what_is_not_the_canonical_place_of_a_name(fmt, path):
    assert logical_name(fmt, path) is None


def _files_under(folder):
    for dirpath, _dirs, files in os.walk(folder):
        for fn in files:
            yield os.path.relpath(os.path.join(dirpath, fn), folder).replace(os.sep, "/")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_file_the_real_engine_wrote_maps_to_a_name_and_back(unpack_fixture, fmt):
    """The golden cases (tests/fixtures/<fmt>.tar.gz) were written by the real engine: each
    file of A/ is a storage name, except the `-deleted` leftovers of a pack."""
    case = unpack_fixture(fmt)
    assert manifest(case)["format"] == fmt
    for side in ("master", "replica"):
        names = set()
        for rel in _files_under(case / side / "A"):
            name = logical_name(fmt, rel)
            if rel.endswith("-deleted"):
                assert name is None, rel
                continue
            assert name is not None, rel
            assert logical_path(fmt, name) == rel
            names.add(name)
        recorded = manifest(case)[side]
        expected = {"x.serial", "x.packed"}
        expected |= {transaction_name(tid_from_hex(t["tid"])) for t in recorded["transactions"]}
        for oid, obj in recorded["objects"].items():
            expected.add(current_name(tid_from_hex(oid)))
            expected.add(revision_name(tid_from_hex(oid), tid_from_hex(obj["serial"])))
        assert expected <= names, sorted(expected - names)[:5]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_real_file_has_no_name_in_another_format(unpack_fixture, fmt):
    case = unpack_fixture(fmt)
    rels = [r for r in _files_under(case / "master" / "A") if r[0] in "ot" and not r.endswith("-deleted")]
    assert len(rels) > 100
    for other in FORMATS:
        if other != fmt:
            assert [r for r in rels if logical_name(other, r) is not None] == [], other


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_real_file_passes_its_content_check(unpack_fixture, fmt):
    """check_member accepts what the real engine wrote, and reads the transactions
    exactly as the manifest recorded them."""
    case = unpack_fixture(fmt)
    recorded = {t["tid"]: t for t in manifest(case)["master"]["transactions"]}
    seen = 0
    for rel in _files_under(case / "master" / "A"):
        name = logical_name(fmt, rel)
        if name is None:
            continue
        data = (case / "master" / "A" / rel).read_bytes()
        parsed = check_member(name, data, rel)
        if name.startswith("t") and hex_tid(parsed.tid) in recorded:
            t = recorded[hex_tid(parsed.tid)]
            assert (hex_tid(parsed.prev), parsed.user.decode(), parsed.description.decode()) == (
                t["prev"], t["user"], t["description"])
            assert [hex_tid(o) for o in parsed.oids] == t["oids"]
            seen += 1
    assert seen == len(recorded)


# ---------------------------------------------------------------------- tids

def test_hex_tid_is_16_upper_case_digits():
    assert hex_tid(b"\x04\x0d\x44\xd4\x0f\x4c\xa9\xaa") == "040D44D40F4CA9AA"
    assert hex_tid(ZERO_TID) == "0000000000000000"


@pytest.mark.parametrize("text", ["040D44D40F4CA9AA", "040d44d40f4ca9aa", " 040D44D40F4CA9AA\n"])
def test_tid_from_hex_reads_either_case_and_ignores_surrounding_blanks(text):
    assert tid_from_hex(text) == TID


@pytest.mark.parametrize("text", ["", "040D44D40F4CA9A", "040D44D40F4CA9AA0", "040D44D40F4CA9AG", "0x40D44D40F4CA9AA",
                                  "040D44D4 0F4CA9AA"])
def test_tid_from_hex_refuses_what_is_not_16_hex_digits(text):
    with pytest.raises(ValueError, match="not a 16-digit hex id"):
        tid_from_hex(text)


# ZODB TimeStamp: high 32 bits = ((((year-1900)*12 + month-1)*31 + day-1)*24 + hour)*60 + minute,
# low 32 bits = seconds * 2**32 / 60.  The hex values are that formula worked out by hand.
KNOWN_TIDS = [
    ("023C2B0000000000", datetime.datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC)),   # 70*12*31*24*60 = 0x023C2B00
    ("0331620080000000", datetime.datetime(2000, 1, 1, 0, 0, 30, tzinfo=UTC)),  # 30 s = half of 2**32
    ("03F6DD1940000000", datetime.datetime(2024, 2, 29, 13, 45, 15, tzinfo=UTC)),
]


@pytest.mark.parametrize("hexid,when", KNOWN_TIDS)
def test_tid_to_datetime_decodes_a_zodb_timestamp(hexid, when):
    assert tid_to_datetime(tid_from_hex(hexid)) == when
    assert tid_to_epoch(tid_from_hex(hexid)) == when.timestamp()


@pytest.mark.parametrize("hexid,when", KNOWN_TIDS)
def test_tid_from_epoch_encodes_a_zodb_timestamp(hexid, when):
    assert hex_tid(tid_from_epoch(when.timestamp())) == hexid


def test_a_real_fixture_tid_is_a_date_of_its_making():
    # 040D44D7: minute 15, hour 6, day 26, month 11, year 2026 (the fixtures' clock)
    when = tid_to_datetime(tid_from_hex("040D44D78AA51655"))
    assert when.replace(second=0, microsecond=0) == datetime.datetime(2026, 11, 26, 6, 15, tzinfo=UTC)
    assert 0 < when.second + when.microsecond / 1e6 < 60


def test_the_zero_tid_has_no_date():
    assert tid_to_datetime(ZERO_TID) is None
    assert tid_to_epoch(ZERO_TID) is None


@pytest.mark.parametrize("epoch", [0.0, 946684830.0, 1709214315.0, 1795673731.5, 1795673731.123456])
def test_epoch_to_tid_to_epoch_round_trips_to_the_microsecond(epoch):
    assert tid_to_epoch(tid_from_epoch(epoch)) == pytest.approx(epoch, abs=1e-6)


def test_later_epochs_give_later_tids():
    tids = [tid_from_epoch(e) for e in (1709214315.0, 1709214315.000002, 1709214316.0, 1709214375.0, 1709300000.0)]
    assert tids == sorted(tids) and len(set(tids)) == len(tids)


def test_the_last_microsecond_of_a_minute_stays_in_that_minute():
    tid = tid_from_epoch(1709214359.999999)  # 2024-02-29 13:45:59.999999 UTC
    assert struct.unpack(">II", tid) == (0x03F6DD19, 4294967224)  # int(59.999999 * 2**32 / 60)


def test_tid_later_than_keeps_a_tid_that_is_already_later():
    assert tid_later_than(bytes.fromhex("0000000000000010"), bytes.fromhex("000000000000000F")) == bytes.fromhex(
        "0000000000000010")


@pytest.mark.parametrize("previous,expected", [
    ("0000000000000010", "0000000000000011"),   # equal: one more than previous
    ("0000000000000020", "0000000000000021"),   # earlier: one more than previous
    ("00000000FFFFFFFF", "0000000100000000"),   # the carry reaches the high word
])
def test_tid_later_than_steps_past_previous(previous, expected):
    assert tid_later_than(bytes.fromhex("0000000000000010"), bytes.fromhex(previous)) == bytes.fromhex(expected)


# --------------------------------------------------------------------- names

OID = bytes.fromhex("000000000000001A")


def test_names_of_a_transaction_a_revision_and_a_current_file():
    assert transaction_name(TID) == "t040D44.D40F4CA9AA"
    assert revision_name(OID, TID) == "o000000000000001A.040D44D40F4CA9AA"
    assert current_name(OID) == "o000000000000001A.c"


@pytest.mark.parametrize("name,expected", [
    ("x.serial", ("x", None, None)),
    ("x.oid", ("x", None, None)),
    ("x.packed", ("x", None, None)),
    ("t040D44.D40F4CA9AA", ("t", TID, None)),
    ("o000000000000001A.c", ("c", OID, None)),
    ("o000000000000001A.040D44D40F4CA9AA", ("o", OID, TID)),
])
def test_classify_reads_the_kind_and_ids_of_a_name(name, expected):
    assert classify(name) == expected


def test_classify_reads_back_what_the_name_builders_write():
    assert classify(transaction_name(TID)) == ("t", TID, None)
    assert classify(revision_name(OID, TID)) == ("o", OID, TID)
    assert classify(current_name(OID)) == ("c", OID, None)


# -------------------------------------------------------- transaction files

PREV = bytes.fromhex("040D44D40F000000")
OIDS = [bytes.fromhex("0000000000000000"), bytes.fromhex("000000000000001A")]


def _transaction(**kw):
    args = dict(user=b"/ admin", description=b"tx 3", extension=b"\x80\x03}q\x00.", md5=True)
    args.update(kw)
    return build_transaction(TID, PREV, OIDS, **args)


def test_transaction_round_trip():
    data = _transaction()
    txn = parse_transaction(data, expect_tid=TID)
    assert (txn.tid, txn.prev, txn.user, txn.description, txn.extension, txn.oids, txn.size) == (
        TID, PREV, b"/ admin", b"tx 3", b"\x80\x03}q\x00.", OIDS, len(data))
    assert txn.md5 == hashlib.md5(data[48:]).digest()


def test_transaction_layout_follows_the_spec():
    data = _transaction(user=b"u", description=b"dd", extension=b"")
    assert data[:4] == b"\x47\x40\x07\x76"
    assert struct.unpack(">I", data[4:8]) == (len(data),) == (60 + 1 + 2 + 16,)
    assert (data[8:16], data[16:24], data[24:32]) == (TID, ZERO_TID, PREV)
    assert struct.unpack(">HHHIH", data[48:60]) == (1, 2, 0, 16, 0)  # the oids length is a byte count
    assert data[60:] == b"udd" + b"".join(OIDS)


def test_a_transaction_without_md5_is_accepted_unchecked():
    data = _transaction(md5=False)
    assert data[32:48] == EMPTY_MD5
    assert parse_transaction(data).md5 == EMPTY_MD5


def _flip(data, index):
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def test_a_transaction_whose_content_changed_fails_its_md5_check():
    data = _flip(_transaction(), 60 + len(b"/ admin"))  # first byte of the description
    with pytest.raises(Corrupt, match=r"^t fails its MD5 check$"):
        parse_transaction(data, what="t")


def test_check_md5_false_skips_only_the_md5_check():
    data = _flip(_transaction(), 60 + len(b"/ admin"))
    assert parse_transaction(data, check_md5=False).description == b"ux 3"
    with pytest.raises(Corrupt, match=r"^t holds transaction"):
        parse_transaction(data, expect_tid=PREV, check_md5=False, what="t")


def test_a_transaction_under_another_tid_is_refused():
    other = bytes.fromhex("040D44D40F4CA9AB")
    with pytest.raises(Corrupt, match=r"^t holds transaction 040D44D40F4CA9AA, not 040D44D40F4CA9AB$"):
        parse_transaction(_transaction(), expect_tid=other, what="t")


@pytest.mark.parametrize("cut", [1, 16, 33])  # 33: just the 60-byte header left
def test_a_truncated_transaction_is_refused(cut):
    data = _transaction()
    with pytest.raises(Corrupt, match=r"^t is %d bytes but its header says %d$" % (len(data) - cut, len(data))):
        parse_transaction(data[:-cut], what="t")


@pytest.mark.parametrize("data", [b"", b"\x47\x40\x07\x76" + b"\0" * 40, b"\0" * 4 + _transaction()[4:]])
def test_what_has_no_transaction_header_is_refused(data):
    with pytest.raises(Corrupt, match=r"^t has no transaction header$"):
        parse_transaction(data, what="t")


def test_a_transaction_whose_lengths_disagree_is_refused():
    data = bytearray(_transaction(md5=False))
    data[48:50] = struct.pack(">H", 8)  # says the user is 8 bytes, it is 7
    with pytest.raises(Corrupt, match=r"^t has inconsistent lengths$"):
        parse_transaction(bytes(data), what="t")


# ------------------------------------------------------------ revision files

PICKLE = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.}q\x01."


def test_revision_round_trip():
    data = build_revision(OID, TID, PREV, PICKLE, undo_from=OIDS[0])
    rev = parse_revision(data, expect_oid=OID, expect_tid=TID)
    assert (rev.oid, rev.tid, rev.prev, rev.undo_from, rev.pickle, rev.size) == (
        OID, TID, PREV, OIDS[0], PICKLE, len(data))
    assert rev.md5 == hashlib.md5(data[56:]).digest()


def test_revision_layout_follows_the_spec():
    data = build_revision(OID, TID, PREV, PICKLE)
    assert data[:4] == b"\xbd\xb8\x2a\x71"
    assert struct.unpack(">I", data[4:8]) == (len(data),) == (72 + len(PICKLE),)
    assert (data[8:16], data[16:24], data[24:40]) == (OID, ZERO_TID, b"\0" * 16)
    assert (data[56:64], data[64:72], data[72:]) == (PREV, TID, PICKLE)


def test_a_revision_whose_pickle_changed_fails_its_md5_check():
    data = _flip(build_revision(OID, TID, PREV, PICKLE), 80)
    with pytest.raises(Corrupt, match=r"^o fails its MD5 check$"):
        parse_revision(data, what="o")
    assert parse_revision(data, check_md5=False).pickle == data[72:]


def test_a_revision_without_md5_is_accepted_unchecked():
    data = build_revision(OID, TID, PREV, PICKLE, md5=False)
    assert parse_revision(data).md5 == EMPTY_MD5


def test_a_revision_of_another_object_or_transaction_is_refused():
    data = build_revision(OID, TID, PREV, PICKLE)
    with pytest.raises(Corrupt, match=r"^o holds object 000000000000001A, not 0000000000000005$"):
        parse_revision(data, expect_oid=OID5, what="o")
    with pytest.raises(Corrupt, match=r"^o holds revision 040D44D40F4CA9AA, not 040D44D40F000000$"):
        parse_revision(data, expect_tid=PREV, what="o")


@pytest.mark.parametrize("cut", [1, len(PICKLE)])
def test_a_truncated_revision_is_refused(cut):
    data = build_revision(OID, TID, PREV, PICKLE)
    with pytest.raises(Corrupt, match=r"^o is %d bytes but its header says %d$" % (len(data) - cut, len(data))):
        parse_revision(data[:-cut], what="o")


@pytest.mark.parametrize("data", [b"", build_revision(OID, TID, PREV, b"")[:71], _transaction()])
def test_what_has_no_revision_header_is_refused(data):
    with pytest.raises(Corrupt, match=r"^o has no object revision header$"):
        parse_revision(data, what="o")


# ------------------------------------------------------------- current files

def test_parse_current_reads_the_8_byte_and_the_old_12_byte_form():
    assert parse_current(TID) == TID
    assert OLD_CURRENT_MAGIC == b"\x0b\xfe\xe8\xec"
    assert parse_current(b"\x0b\xfe\xe8\xec" + TID) == TID


@pytest.mark.parametrize("data", [b"", TID[:7], TID + b"\0", b"\0\0\0\0" + TID, b"\x0b\xfe\xe8\xec" + TID + b"\0"])
def test_parse_current_refuses_other_sizes_and_magics(data):
    with pytest.raises(Corrupt, match=r"^c is not 8 bytes \(or the old 12-byte form\)$"):
        parse_current(data, what="c")


# ------------------------------------------------------------- check_member

def test_check_member_checks_a_transaction_against_its_name():
    data = _transaction()
    assert check_member("t040D44.D40F4CA9AA", data, "m").tid == TID
    with pytest.raises(Corrupt, match=r"^m holds transaction 040D44D40F4CA9AA, not 040D44D40F4CA9AB$"):
        check_member("t040D44.D40F4CA9AB", data, "m")


def test_check_member_checks_a_revision_against_its_name():
    data = build_revision(OID, TID, PREV, PICKLE)
    assert check_member("o000000000000001A.040D44D40F4CA9AA", data, "m").pickle == PICKLE
    with pytest.raises(Corrupt, match=r"^m holds object 000000000000001A, not 000000000000001B$"):
        check_member("o000000000000001B.040D44D40F4CA9AA", data, "m")
    with pytest.raises(Corrupt, match=r"^m holds revision 040D44D40F4CA9AA, not 040D44D40F4CA9AB$"):
        check_member("o000000000000001A.040D44D40F4CA9AB", data, "m")


def test_check_member_checks_a_current_file():
    assert check_member("o000000000000001A.c", TID, "m") == TID
    with pytest.raises(Corrupt, match=r"^m is not 8 bytes \(or the old 12-byte form\)$"):
        check_member("o000000000000001A.c", TID + b"\0", "m")


@pytest.mark.parametrize("name", ["x.serial", "x.oid", "x.packed"])
def test_check_member_wants_8_bytes_in_an_x_file(name):
    assert check_member(name, TID, "m") == TID
    for data in (b"", TID[:7], TID + b"\0"):
        with pytest.raises(Corrupt, match=r"^m is not 8 bytes$"):
            check_member(name, data, "m")
