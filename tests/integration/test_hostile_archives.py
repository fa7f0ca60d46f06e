"""The archive comes from another machine: everything odd in it is refused
before the commit point, and the replica stays byte-for-byte unchanged."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dirstorage_replica import storage, ustar
from dirstorage_replica.options import PullOptions
from dirstorage_replica.replica import pull
from tests.support.checks import replica_state

DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))
FAKE = str(Path(__file__).resolve().parent.parent / "support" / "canned_answer_ssh.py")


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


def flip_md5_body(data):
    b = bytearray(data)
    b[-1] ^= 0x01
    return bytes(b)


def _first(members, pred):
    return next(i for i, m in enumerate(members) if pred(m[0]))


def _is_txn(name):
    return name.split("/")[1].startswith("t")


def _is_rev(name):
    return name.split("/")[1].startswith("o") and not name.endswith("c") and "/c" not in name


def mutate(case, members):
    ms = list(members)
    if case == "symlink":
        return build(ms, lambda w: raw_member(w, "A/x/evil", b"2", linkname=b"/etc/passwd"))
    if case == "hardlink":
        return build(ms, lambda w: raw_member(w, "A/x/evil", b"1", linkname=b"A/x/oid"))
    if case == "device":
        return build(ms, lambda w: raw_member(w, "A/x/evil", b"3"))
    if case == "directory":
        return build(ms, lambda w: raw_member(w, "A/o0000000000000001", b"5"))
    if case == "fifo":
        return build(ms, lambda w: raw_member(w, "A/x/fifo", b"6"))
    if case == "absolute":
        return build(ms + [("/tmp/ds-evil", 0o644, b"x")])
    if case == "dotdot":
        return build(ms + [("A/../../evil", 0o644, b"x")])
    if case == "outside-A":
        return build(ms + [("config/settings", 0o644, b"[structure]\nformat: flat\n")])
    if case == "B-folder":
        return build(ms + [("B/x/serial", 0o644, b"\0" * 8)])
    if case == "bad-name":
        return build(ms + [("A/x/notes", 0o644, b"hello")])
    if case == "wrong-format-path":
        return build(ms + [("A/o0000000000000001.c", 0o644, b"\0" * 8)])  # flat name in a lawn storage
    if case == "duplicate":
        return build(ms + [ms[0]])
    if case == "setuid":
        i = _first(ms, _is_rev)
        ms[i] = (ms[i][0], 0o4755, ms[i][2])
        return build(ms)
    if case == "setgid":
        i = _first(ms, _is_rev)
        ms[i] = (ms[i][0], 0o2640, ms[i][2])
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
        data = bytearray(build(ms))
        data[10] ^= 0x20
        return bytes(data)
    if case == "transaction-md5":
        i = _first(ms, _is_txn)
        ms[i] = (ms[i][0], ms[i][1], flip_md5_body(ms[i][2]))
        return build(ms)
    if case == "revision-md5":
        i = _first(ms, _is_rev)
        ms[i] = (ms[i][0], ms[i][1], flip_md5_body(ms[i][2]))
        return build(ms)
    if case == "revision-length":
        i = _first(ms, _is_rev)
        ms[i] = (ms[i][0], ms[i][1], ms[i][2] + b"junk")
        return build(ms)
    if case == "missing-revision":
        i = _first(ms, _is_rev)
        return build(ms[:i] + ms[i + 1:])
    if case == "missing-transaction":
        i = _first(ms, _is_txn)
        return build(ms[:i] + ms[i + 1:])
    if case == "extra-revision":
        i = _first(ms, _is_rev)
        name, mode, data = ms[i]
        oid = bytes.fromhex(data[8:16].hex())
        fake_tid = bytes.fromhex("040D44D700000001")
        rev = storage.build_revision(oid, fake_tid, storage.ZERO_TID, b"extra")
        new_name = name.rsplit("/", 1)[0] + "/" + storage.hex_tid(fake_tid)
        return build(ms + [(new_name, 0o640, rev)])
    if case == "no-serial":
        i = _first(ms, lambda n: n.endswith("x/serial"))
        return build(ms[:i] + ms[i + 1:])
    if case == "garbage":
        return b"this is not a tar archive" * 100
    if case == "empty":
        return b""
    raise AssertionError(case)


CASES = ["symlink", "hardlink", "device", "directory", "fifo", "absolute", "dotdot", "outside-A", "B-folder",
         "bad-name", "wrong-format-path", "duplicate", "setuid", "setgid", "truncated", "no-end-marker",
         "bad-header-checksum", "transaction-md5", "revision-md5", "revision-length", "missing-revision",
         "missing-transaction", "extra-revision", "no-serial", "garbage", "empty"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_archive_is_refused(unpack_fixture, tmp_path, case):
    d = unpack_fixture("lawn")
    answer = tmp_path / "answer.tar"
    answer.write_bytes(mutate(case, genuine_members(d)))
    before = replica_state(d / "replica")
    opts = PullOptions(ssh_command="%s %s %s" % (shlex.quote(sys.executable), shlex.quote(FAKE),
                                                 shlex.quote(str(answer))), protocol=0)
    with pytest.raises(storage.DSError) as err:
        pull("evil.invalid:/srv/storage", str(d / "replica"), opts)
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
