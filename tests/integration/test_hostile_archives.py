"""The archive comes from another machine: everything odd in it is refused
before the commit point, and the replica stays byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import io
import shlex
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dirstorage_replica import errors, storage, ustar
from dirstorage_replica.options import PullOptions
from dirstorage_replica.replica import pull
from dirstorage_replica.transport import TransportError
from tests.support.checks import replica_state

DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))
FAKE = str(Path(__file__).resolve().parents[2] / "testbed" / "ssh_standins" / "canned_answer_ssh.py")


def genuine_members(d):
    """The members (name, mode, bytes) of the real answer for this replica."""
    st = storage.Storage(d / "replica")
    tid = st.last_tid()
    request = "replica request 0\n%s\n%s\n%s\n" % (st.identity, storage.hex_tid(tid), st.transaction_md5(tid))
    proc = subprocess.run([DS_REPLICA, "serve", str(d / "master")], input=request.encode(), capture_output=True,
                          check=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        return [(m.name, m.mode, tar.extractfile(m).read()) for m in tar.getmembers()]


def build(members, extra=None):
    out = io.BytesIO()
    w = ustar.Writer(out)
    for name, mode, data in members:
        w.add_bytes(name, data, mode=mode)
    if extra:
        extra(w)
    w.close()
    return out.getvalue()


def raw_member(w, name, typeflag, data=b"", linkname=b""):
    block = bytearray(ustar.header(name, len(data), 0o644))
    block[156:157] = typeflag
    block[157:157 + len(linkname)] = linkname
    block[148:156] = b" " * 8
    block[148:156] = ("%06o" % sum(block)).encode() + b"\0 "
    w._put(bytes(block))
    w._put(data + ustar.padding(len(data)))


def _first(members, pred):
    return next(i for i, m in enumerate(members) if pred(m[0]))


def _is_txn(name):
    return name.split("/")[1].startswith("t")


def _is_rev(name):
    return name.split("/")[1].startswith("o") and not name.endswith("c") and "/c" not in name


def _is_serial(name):
    return name == "A/x/serial"


def as_special(ms, typeflag, linkname=b""):
    """Send the first revision as a member of another kind, under its genuine
    name and with its genuine bytes: only the member-type check can refuse it."""
    i = _first(ms, _is_rev)
    name, _mode, data = ms[i]
    return build(ms[:i] + ms[i + 1:], lambda w: raw_member(w, name, typeflag, data, linkname))


def flip_mtime_of_first_header(data):
    """Change one mtime digit (0 -> 1) of the first header: the member stays
    valid in every other way, so only the header checksum can tell."""
    b = bytearray(data)
    assert b[146:148] == b"0\0"
    b[146] = ord("1")
    return bytes(b)


def flip_transaction_description(data):
    """Change one byte of the description of a transaction file (its MD5
    covers it; nothing else looks at it)."""
    ulen, dlen = struct.unpack(">HH", data[48:52])
    assert dlen, "the fixture's transaction has a description"
    pos = storage.TRANSACTION_HEADER + ulen
    b = bytearray(data)
    b[pos] ^= 0x01
    return bytes(b)


def flip_revision_pickle(data):
    b = bytearray(data)
    b[-1] ^= 0x01
    return bytes(b)


def lengthen_revision(data):
    """Append bytes to a revision and recompute its MD5 (over bytes 56-): only
    the length in its header (bytes 4-8) still says otherwise."""
    data = data + b"junk"
    return data[:40] + hashlib.md5(data[56:]).digest() + data[56:]


def mutate(case, members):
    ms = list(members)
    rev = _first(ms, _is_rev)
    serial = ms[_first(ms, _is_serial)]
    if case == "symlink":
        return as_special(ms, b"2", linkname=b"/etc/passwd")
    if case == "hardlink":
        return as_special(ms, b"1", linkname=b"A/x/serial")
    if case == "device":
        return as_special(ms, b"3")
    if case == "directory":
        return as_special(ms, b"5")
    if case == "fifo":
        return as_special(ms, b"6")
    if case == "absolute":
        return build(ms + [("/tmp/ds-evil", 0o644, b"x")])
    if case == "dotdot":
        return build(ms + [("A/../../evil", 0o644, b"x")])
    if case == "outside-A":
        # the rest of the path is a genuine storage file name, with genuine bytes
        return build(ms + [("misc/x/serial", 0o640, serial[2])])
    if case == "B-folder":
        return build(ms + [("B/x/serial", 0o640, serial[2])])
    if case == "bad-name":
        return build(ms + [("A/x/notes", 0o644, b"hello")])
    if case == "wrong-format-path":
        return build(ms + [("A/o0000000000000001.c", 0o644, b"\0" * 8)])  # flat name in a lawn storage
    if case == "duplicate":
        return build(ms + [ms[rev]])
    if case == "setuid":
        ms[rev] = (ms[rev][0], 0o4755, ms[rev][2])
        return build(ms)
    if case == "setgid":
        ms[rev] = (ms[rev][0], 0o2640, ms[rev][2])
        return build(ms)
    if case == "truncated":
        data = build(ms)
        return data[:len(data) // 2]
    if case == "no-end-marker":
        # every member complete, but the end-of-archive blocks never come
        out = io.BytesIO()
        w = ustar.Writer(out)
        for name, mode, data in ms:
            w.add_bytes(name, data, mode=mode)
        return out.getvalue()
    if case == "bad-header-checksum":
        return flip_mtime_of_first_header(build(ms))
    if case == "transaction-md5":
        i = _first(ms, _is_txn)
        ms[i] = (ms[i][0], ms[i][1], flip_transaction_description(ms[i][2]))
        return build(ms)
    if case == "revision-md5":
        ms[rev] = (ms[rev][0], ms[rev][1], flip_revision_pickle(ms[rev][2]))
        return build(ms)
    if case == "revision-length":
        ms[rev] = (ms[rev][0], ms[rev][1], lengthen_revision(ms[rev][2]))
        return build(ms)
    if case == "missing-revision":
        return build(ms[:rev] + ms[rev + 1:])
    if case == "missing-transaction":
        i = _first(ms, _is_txn)
        return build(ms[:i] + ms[i + 1:])
    if case == "extra-revision":
        name, mode, data = ms[rev]
        oid = bytes.fromhex(data[8:16].hex())
        fake_tid = bytes.fromhex("040D44D700000001")
        extra = storage.build_revision(oid, fake_tid, storage.ZERO_TID, b"extra")
        new_name = name.rsplit("/", 1)[0] + "/" + storage.hex_tid(fake_tid)
        return build(ms + [(new_name, 0o640, extra)])
    if case == "no-serial":
        i = _first(ms, _is_serial)
        return build(ms[:i] + ms[i + 1:])
    if case == "garbage":
        return b"this is not a tar archive" * 100
    if case == "empty":
        return b""
    raise AssertionError(case)


REV = "'A/o0000000000000000/040D44D78FCD4E22'"
# case -> (error type, a distinctive part of the message of the check the case is named for)
EXPECTED = {
    "symlink": (errors.Corrupt, REV + " is a symbolic link, not a regular file"),
    "hardlink": (errors.Corrupt, REV + " is a hard link, not a regular file"),
    "device": (errors.Corrupt, REV + " is a character device, not a regular file"),
    "directory": (errors.Corrupt, REV + " is a folder, not a regular file"),
    "fifo": (errors.Corrupt, REV + " is a FIFO, not a regular file"),
    "absolute": (errors.Corrupt, "'/tmp/ds-evil' has an absolute or odd path"),
    "dotdot": (errors.Corrupt, "'A/../../evil' has an empty, '.' or '..' component"),
    "outside-A": (errors.Corrupt, "'misc/x/serial' is outside the storage's A/ folder"),
    "B-folder": (errors.Corrupt, "'B/x/serial' is outside the storage's A/ folder"),
    "bad-name": (errors.Corrupt, "'A/x/notes' is not a valid lawn storage file name"),
    "wrong-format-path": (errors.Corrupt, "'A/o0000000000000001.c' is not a valid lawn storage file name"),
    "duplicate": (errors.Corrupt, REV + " appears twice"),
    "setuid": (errors.Corrupt, REV + " has set-uid, set-gid or sticky bits"),
    "setgid": (errors.Corrupt, REV + " has set-uid, set-gid or sticky bits"),
    "truncated": (errors.Corrupt, "archive is truncated (the connection ended early)"),
    "no-end-marker": (errors.Corrupt, "archive is truncated (the connection ended early)"),
    "bad-header-checksum": (errors.Corrupt, "archive header checksum mismatch"),
    "transaction-md5": (errors.Corrupt, "'A/t040D44/D78FCD4E22' fails its MD5 check"),
    "revision-md5": (errors.Corrupt, REV + " fails its MD5 check"),
    "revision-length": (errors.Corrupt, REV + " is 404 bytes but its header says 400"),
    "missing-revision": (errors.Corrupt, "the increment lacks revision 040D44D78FCD4E22 of object 0000000000000000"),
    "missing-transaction": (errors.Corrupt, "the increment is not whole transactions: 040D44D78FCD4E22 is missing"),
    "extra-revision": (errors.Corrupt, "the increment holds object revisions no transaction wrote"),
    "no-serial": (errors.Corrupt, "the increment has no x.serial"),
    "garbage": (errors.Corrupt, "archive header has a bad checksum field"),
    "empty": (TransportError, "the master ended without an answer"),
}
CASES = list(EXPECTED)


@pytest.mark.parametrize("case", CASES)
def test_hostile_archive_is_refused(unpack_fixture, tmp_path, case):
    d = unpack_fixture("lawn")
    answer = tmp_path / "answer.tar"
    answer.write_bytes(mutate(case, genuine_members(d)))
    before = replica_state(d / "replica")
    opts = PullOptions(ssh_command="%s %s %s" % (shlex.quote(sys.executable), shlex.quote(FAKE),
                                                 shlex.quote(str(answer))), protocol=0)
    kind, message = EXPECTED[case]
    with pytest.raises(errors.DSError) as err:
        pull("evil.invalid:/srv/storage", str(d / "replica"), opts)
    assert err.value.__class__ is kind, err.value
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert replica_state(d / "replica") == before
    assert not Path("/tmp/ds-evil").exists()


def test_genuine_answer_through_the_same_path_is_accepted(unpack_fixture, tmp_path):
    """The control case: the unmodified archive, through the fake master, works."""
    d = unpack_fixture("lawn")
    answer = tmp_path / "answer.tar"
    answer.write_bytes(build(genuine_members(d)))
    opts = PullOptions(ssh_command="%s %s %s" % (shlex.quote(sys.executable), shlex.quote(FAKE),
                                                 shlex.quote(str(answer))), protocol=0)
    result = pull("evil.invalid:/srv/storage", str(d / "replica"), opts)
    assert result["changed"] and result["transactions"] > 0
