"""A hostile master answering the standby's clone, pull and clone --delta
(issue 20): an answer can be refused, never make the standby touch a file
outside the copy it writes, leave a file group- or world-writable, or keep
it connecting for ever.  The master is an ssh stand-in with a canned answer
(testbed/ssh_standins/canned_answer_ssh.py)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dirstorage_replica import errors, storage, ustar
from dirstorage_replica.clone import clone
from dirstorage_replica.info import master_lag, verify
from dirstorage_replica.options import PullOptions
from dirstorage_replica.protocol import ANSWER_PREFIX, DROP_MEMBER
from dirstorage_replica.replica import pull
from dirstorage_replica.reseed import reseed as clone_delta
from tests.support.checks import replica_state

DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))
FAKE = str(Path(__file__).resolve().parents[2] / "testbed" / "ssh_standins" / "canned_answer_ssh.py")
MASTER = "fakehost:/srv/master"


def canned(tmp_path, answer, **options):
    """PullOptions whose ssh command answers every request with `answer`."""
    path = tmp_path / "answer"
    path.write_bytes(answer)
    return PullOptions(ssh_command="%s %s %s" % (sys.executable, FAKE, path), timeout=10.0, **options)


def archive(members):
    out = io.BytesIO()
    w = ustar.Writer(out)
    for name, mode, data in members:
        w.add_bytes(name, data, mode=mode)
    w.close()
    return out.getvalue()


def header(info):
    return ANSWER_PREFIX + json.dumps(info).encode("ascii") + b"\n"


def serve(master, request):
    """The genuine serve's answer to `request` (bytes): (header or None, [(name, mode, data)])."""
    out = subprocess.run([DS_REPLICA, "serve", str(master)], input=request, capture_output=True, check=True).stdout
    info = None
    if out.startswith(ANSWER_PREFIX):
        line, out = out.split(b"\n", 1)
        info = json.loads(line[len(ANSWER_PREFIX):])
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        return info, [(m.name, m.mode, tar.extractfile(m).read()) for m in tar.getmembers()]


def config_members(home):
    return [("config/settings", 0o640, (home / "config" / "settings").read_bytes()),
            ("config/identity", 0o640, (home / "config" / "identity").read_bytes())]


def delta_answer(home, members, **info):
    st = storage.Storage(str(home))
    info = dict({"master_tid": storage.hex_tid(st.last_tid()), "format": st.format, "compress": "none",
                 "files": len(members), "bytes": sum(len(m[2]) for m in members)}, **info)
    return header(info) + archive([(DROP_MEMBER, 0o644, b"")] + members)


# ------------------------------------------------ item 3: names before deeds

@pytest.mark.parametrize("target", ["victim/important.txt", "replica/A/x/serial", "aside/A/x/oid"])
def test_a_delta_answer_naming_files_outside_the_copy_touches_nothing(unpack_fixture, tmp_path, target):
    """A member `A/../../X` of the master's answer: refused before any file
    is removed (it once unlinked X: a file outside the replica, the live
    replica's x.serial, a file of a tree kept aside)."""
    d = unpack_fixture("bushy")
    replica = d / "replica"
    (d / "victim").mkdir()
    (d / "victim" / "important.txt").write_text("keep me")
    (d / "aside").mkdir()
    (d / "aside" / "A").mkdir()
    (d / "aside" / "A" / "x").mkdir()
    (d / "aside" / "A" / "x" / "oid").write_bytes(b"\0" * 8)
    victim = d / target
    before, outside = replica_state(replica), victim.read_bytes()
    hostile = "A/../../" + target
    answer = delta_answer(replica, config_members(replica) + [(hostile, 0o640, b"\0" * 8)])
    with pytest.raises(errors.Corrupt) as e:
        clone_delta(MASTER, str(replica), canned(tmp_path, answer))
    assert "'..'" in str(e.value) and "\n" not in str(e.value)
    assert victim.read_bytes() == outside
    assert replica_state(replica) == before
    assert [p.name for p in d.iterdir() if p.name.startswith(".replica.clone-")] == []


def test_a_delta_answer_replaces_only_what_the_standby_linked(unpack_fixture, tmp_path):
    """The master's own x.serial (a name the standby holds and linked) may
    replace the link, never the file it shares with the live replica."""
    d = unpack_fixture("bushy")
    replica = d / "replica"
    st = storage.Storage(str(replica))
    inode = tmp_path / "serial-inode"  # the live x.serial's file, whatever becomes of its name
    os.link(st.path("x.serial"), inode)
    before = inode.read_bytes()
    answer = delta_answer(replica, config_members(replica) + [("A/x/serial", 0o640, b"\xff" * 8)])
    with pytest.raises(errors.Corrupt) as e:
        clone_delta(MASTER, str(replica), canned(tmp_path, answer))
    assert "x.serial names transaction FFFFFFFFFFFFFFFF, which it did not send" in str(e.value)
    assert inode.read_bytes() == before


# ------------------------------------------- item 5: the standby's own modes

def _loose(home):
    """Files and folders of `home` that anyone but the owner may write."""
    found = []
    for folder, dirs, files in os.walk(home):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.lstat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                found.append(os.path.relpath(path, home))
    return sorted(found)


def test_a_clone_answer_with_open_modes_leaves_nothing_writable_by_others(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    info, members = serve(d / "master", b"replica clone 1\n\n")
    opened = [(name, 0o777 if name.startswith("A/") else 0o666, data) for name, _mode, data in members]
    dest = tmp_path / "copy"
    clone(MASTER, str(dest), canned(tmp_path, header(info) + archive(opened)))
    modes = {rel: os.stat(dest / rel).st_mode & 0o777
             for rel in ("config/settings", "config/identity", "A/x/serial", "A/x/oid")}
    assert modes == dict.fromkeys(modes, 0o644), modes
    assert _loose(dest) == []


def test_a_pull_answer_with_open_modes_leaves_nothing_writable_by_others(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    replica = d / "replica"
    st = storage.Storage(str(replica))
    tid = st.last_tid()
    request = "replica request 0\n%s\n%s\n%s\n" % (st.identity, storage.hex_tid(tid), st.transaction_md5(tid))
    _info, members = serve(d / "master", request.encode())
    assert members, "the fixture's master is ahead of its replica"
    answer = archive([(name, 0o666, data) for name, _mode, data in members])  # version 0: no header
    result = pull(MASTER, str(replica), canned(tmp_path, answer, protocol=0))
    assert result["transactions"] > 0
    assert os.stat(st.path("x.serial")).st_mode & 0o777 == 0o644
    assert _loose(replica) == []


# --------------------------------------------------- item 6: bounded retries

def test_a_master_answering_retry_for_ever_is_given_up_on(unpack_fixture, tmp_path, monkeypatch):
    """`retry` means "ask again with every digest": once.  A master that says
    it again is refused in one line (it once made the standby reconnect
    without end, 84 times in 8 s)."""
    d = unpack_fixture("bushy")
    replica = d / "replica"
    runs = tmp_path / "runs"
    monkeypatch.setenv("CANNED_COUNT", str(runs))
    monkeypatch.setenv("CANNED_LIMIT", "20")  # without a bound, the 21st run fails instead of answering
    answer = delta_answer(replica, [], retry="digests")
    before = replica_state(replica)
    with pytest.raises(errors.DSError) as e:
        clone_delta(MASTER, str(replica), canned(tmp_path, answer))
    # the in-place re-seed's request (answered with no method it knows: the tree method follows),
    # the tree method's chain window, and the one retry with every digest
    assert len(runs.read_text().splitlines()) == 3
    assert "retry" in str(e.value) and "\n" not in str(e.value)
    assert replica_state(replica) == before


# ------------------------------------------- item 7: every frame field checked

@pytest.mark.parametrize("frame,field", [
    ({"frame": "heartbeat", "master_tid": "zz", "waiting": False}, "master_tid"),
    ({"frame": "heartbeat", "waiting": False}, "master_tid"),
    ({"frame": "heartbeat", "master_tid": "00" * 8, "waiting": "no"}, "waiting"),
    ({"frame": "increment", "master_tid": "00" * 8, "transactions": 1, "files": -3, "bytes": 0}, "files"),
    ({"frame": "increment", "master_tid": "00" * 8, "compress": "bzip2"}, "compress"),
])
def test_a_bad_frame_stops_the_follower_in_one_line(unpack_fixture, tmp_path, monkeypatch, frame, field):
    """A heartbeat with master_tid "zz" once ended the follower with a
    ValueError traceback."""
    d = unpack_fixture("bushy")
    replica = d / "replica"
    before = replica_state(replica)
    answer = tmp_path / "frames"
    answer.write_bytes(b"replica frame 2 " + json.dumps(frame).encode("ascii") + b"\n")
    env = dict(os.environ, CANNED_KEEP_INPUT="1")
    proc = subprocess.run([DS_REPLICA, "follow", "-e", "%s %s %s" % (sys.executable, FAKE, answer), MASTER,
                           str(replica)], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert field in proc.stderr and "frame" in proc.stderr
    after = replica_state(replica)
    assert after.pop("misc/ds-replica-follow.json")[0] == "file"  # "stopped", with that line
    assert after == before


@pytest.mark.parametrize("ask,info", [
    ("verify", {"master_tid": "00" * 8, "packed_tid": "00" * 8}),
    ("lag", {"master_tid": "00" * 8, "transactions": 0, "bytes": 0}),
    ("verify", {"master_tid": "00" * 8, "packed_tid": "00" * 8, "chain": [["zz", "00"]]}),
    ("check", {"master_tid": "00" * 8, "dry_run": True, "files": 1, "bytes": 1}),
])
def test_verify_status_and_check_refuse_an_answer_without_what_they_read(unpack_fixture, tmp_path, ask, info):
    """`verify --master`, `status --master` and `pull --check` read fields
    of the answer header that a hostile master can leave out or garble: one
    line, no KeyError traceback."""
    d = unpack_fixture("bushy")
    opts = canned(tmp_path, header(info), check=ask == "check")
    with pytest.raises(errors.Corrupt) as e:
        if ask == "verify":
            verify(str(d / "replica"), MASTER, opts)
        elif ask == "lag":
            master_lag(str(d / "replica"), MASTER, opts)
        else:
            pull(MASTER, str(d / "replica"), opts)
    assert "the master's answer header" in str(e.value) and "\n" not in str(e.value)
