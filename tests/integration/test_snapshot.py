"""Snapshot mode through config/snapshot.conf against a running test master
and its XML-RPC toolkit (real HTTP, basic authentication)."""

from __future__ import annotations

import hashlib

import pytest

from dirstorage_replica import errors, snapshot, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.options import PullOptions
from dirstorage_replica.replica import pull
from testbed.fakes.simulated_storage import SimulatedStorage, create_storage
from testbed.fakes.toolkit import ToolkitServer


@pytest.fixture
def running(tmp_path):
    """A running master (locks held, journal flushing) with an http snapshot
    method and `nodirect`, and a standby cloned from it."""
    home = tmp_path / "master"
    create_storage(str(home), "chunky")
    master = SimulatedStorage(str(home))
    master.open()
    toolkit = ToolkitServer(master, password="s3cret-pw")
    toolkit.write_snapshot_conf(str(home), extra_lines=["nodirect"])
    for i in range(5):
        master.commit({master.new_oid(): b"first %d" % i})
    standby = tmp_path / "standby"
    clone(str(home), str(standby))
    yield master, toolkit, home, standby
    toolkit.stop()
    if master.is_open:
        master.close()


def test_parse_conf_order_and_defaults(tmp_path):
    methods, problems = snapshot.parse_conf("http http://h/x access\n\nbogus line\n", str(tmp_path))
    assert [m.kind for m in methods] == ["http", "direct"]
    assert problems and "line 3" in problems[0]
    methods, _unused = snapshot.parse_conf("nodirect\nhttp http://h/x a\n", str(tmp_path))
    assert [m.kind for m in methods] == ["http"]
    methods, _unused = snapshot.parse_conf("direct\nhttp http://h/x a\n", str(tmp_path))
    assert [m.kind for m in methods] == ["direct", "http"]


def test_pull_from_running_master_over_http(running):
    master, toolkit, home, standby = running
    for i in range(7):
        master.commit({master.new_oid(): b"more %d" % i, 1: b"changed %d" % i})
    result = pull(str(home), str(standby))
    assert result["transactions"] == 7
    assert toolkit.calls["enterSnapshot"] == 2 and toolkit.calls["leaveSnapshot"] == 2  # clone + pull
    assert not master.in_snapshot
    # every object reads on the replica as the running master serves it
    replica = storage.Storage(str(standby))
    assert master.last_oid == 12
    for oid in range(1, master.last_oid + 1):
        tid, data = master.load(oid)
        rtid, rdata = replica.load(oid.to_bytes(8, "big"))
        assert (rtid, hashlib.md5(rdata).digest()) == (tid, hashlib.md5(data).digest())


def test_wrong_password_is_reported_without_leaking_it(running):
    master, toolkit, home, standby = running
    access = home / "config" / "toolkit.access"
    access.write_text("admin:wrong-password\n")
    master.commit({1: b"x"})
    with pytest.raises(errors.Busy) as err:
        pull(str(home), str(standby))
    # "401" alone could match a port number: pin the HTTP answer and the hint
    assert ("answered HTTP 401 Unauthorized to enterSnapshot; check the user and password in the access file"
            in str(err.value))
    assert toolkit.unauthorized >= 1
    assert "wrong-password" not in str(err.value) and "s3cret" not in str(err.value)
    assert not master.in_snapshot


def test_someone_elses_snapshot_is_respected(running):
    master, toolkit, home, standby = running
    master.commit({1: b"x"})
    master.enter_snapshot("backup-job")
    with pytest.raises(errors.Busy, match="someone else"):
        pull(str(home), str(standby), PullOptions(snapshot_timeout=1.0, snapshot_interval=0.3))
    assert master.snapshot_code == "user/backup-job"  # not ended by us
    master.leave_snapshot("backup-job")
    assert pull(str(home), str(standby))["transactions"] == 1


def test_snapshot_abandoned_by_a_dead_pull_is_left(running):
    master, toolkit, home, standby = running
    import socket
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    code = "ds-replica-%s-%d" % (socket.gethostname(), dead.pid)
    master.enter_snapshot(code)
    master.commit({1: b"written while stuck"})
    leaves = toolkit.calls["leaveSnapshot"]  # the fixture's clone left its own snapshot already
    lines = []
    result = pull(str(home), str(standby), log=lines.append)
    assert result["transactions"] == 1
    assert not master.in_snapshot
    assert "left a snapshot abandoned by %s" % code in lines
    assert toolkit.calls["leaveSnapshot"] - leaves == 2  # the dead pull's snapshot, then ours


def test_malformed_snapshot_conf_line_is_reported_and_skipped(unpack_fixture):
    import subprocess
    import sys
    from pathlib import Path
    d = unpack_fixture("bushy")
    (d / "master" / "config" / "snapshot.conf").write_text("bogus words here\ndirect\n")
    st = storage.Storage(d / "replica")
    tid = st.last_tid()
    request = "replica request 0\n%s\n%s\n%s\n" % (st.identity, storage.hex_tid(tid), st.transaction_md5(tid))
    proc = subprocess.run([str(Path(sys.executable).with_name("ds-replica")), "serve", str(d / "master")],
                          input=request.encode(), capture_output=True, check=False)
    assert proc.returncode == 0  # the line was skipped, `direct` worked
    assert b"warning: config/snapshot.conf line 1 is not understood (bogus)" in proc.stderr


def _replica_matches_master(master, standby):
    replica = storage.Storage(str(standby))
    for oid in range(1, master.last_oid + 1):
        tid, data = master.load(oid)
        rtid, rdata = replica.load(oid.to_bytes(8, "big"))
        assert (rtid, rdata) == (tid, data), oid


def test_a_pull_waits_its_turn_behind_another_ds_replica(running):
    """Two standbys of one master pulling at the same moment (a fleet run, cron
    lines on the same minute): the storage enters snapshot mode only once, so
    the second waits for the first instead of failing."""
    import subprocess
    import time

    from testbed.harness.reliability import DS_REPLICA

    master, toolkit, home, standby = running
    master.commit({1: b"to replicate"})
    peer = snapshot.Snapshot(storage.Storage(str(home)))  # another ds-replica, in its snapshot phase
    peer.enter()
    assert master.snapshot_code == "user/" + peer.code
    proc = subprocess.Popen([DS_REPLICA, "-v", str(home), str(standby)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    seen = []
    while not any("waiting for another ds-replica process" in line for line in seen):
        line = proc.stdout.readline()
        assert line, "the pull ended instead of waiting: %s" % "".join(seen)
        seen.append(line)
    time.sleep(0.5)
    assert proc.poll() is None and time.monotonic() - t0 >= 1.0  # waiting, not failed
    peer.leave()
    out = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert not master.in_snapshot
    _replica_matches_master(master, standby)


def test_the_wait_for_another_ds_replica_is_bounded(running):
    master, toolkit, home, standby = running
    peer = snapshot.Snapshot(storage.Storage(str(home)))
    peer.enter()
    try:
        mine = snapshot.Snapshot(storage.Storage(str(home)))
        with pytest.raises(errors.Busy, match="another ds-replica process .* has held it"):
            mine._take_turn(0.3)
        assert mine.peer is None
    finally:
        peer.leave()
    assert not master.in_snapshot


def test_concurrent_pulls_of_one_master_all_succeed(running, tmp_path):
    import subprocess

    from testbed.harness.reliability import DS_REPLICA

    master, toolkit, home, standby = running
    standbys = [standby]
    for i in range(3):
        other = tmp_path / ("standby%d" % i)
        clone(str(home), str(other))
        standbys.append(other)
    for i in range(40):
        master.commit({master.new_oid(): b"burst %d" % i * 100, 1 + i % 5: b"changed %d" % i})
    procs = [subprocess.Popen([DS_REPLICA, "-q", str(home), str(s)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for s in standbys]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    assert not master.in_snapshot
    for s in standbys:
        _replica_matches_master(master, s)
