"""The replication engine against the golden storages written by the real
DirectoryStorage engine (tests/fixtures)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from dirstorage_replica import durable, errors, journal, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.info import storage_info, verify
from dirstorage_replica.options import PullOptions
from dirstorage_replica.replica import pull
from tests.support.checks import (
    assert_objects,
    assert_reads_as,
    assert_same_files,
    expected_refusal,
    manifest,
    replica_state,
)

NORMAL = ["bushy", "chunky", "lawn", "flat"]
REFUSALS = ["packed-since", "diverged", "foreign"]
DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))


@pytest.mark.parametrize("case", NORMAL)
def test_pull_brings_replica_to_master(unpack_fixture, case):
    d = unpack_fixture(case)
    m = manifest(d)
    result = pull(str(d / "master"), str(d / "replica"))
    assert result["changed"] is True
    assert result["before_tid"] == m["replica"]["last_tid"]
    assert result["after_tid"] == m["master"]["last_tid"]
    assert result["transactions"] == len(m["master"]["transactions"]) - len(
        [t for t in m["master"]["transactions"] if t["tid"] <= m["replica"]["last_tid"]])
    # exactly the files a history-driven pull must send, byte for byte
    with tarfile.open(d / "replica" / "misc" / "replica.previous") as tar:
        sent = sorted(tar.getnames())
    assert sent == sorted(m["expected_increment"])
    assert result["files"] == len(sent)
    assert_same_files(d / "replica", d / "master", m["expected_increment"])
    assert_objects(d / "replica", m["master"]["objects"])
    # a replica is left as a stopped storage: a snapshot, nothing pending
    st = storage.Storage(d / "replica")
    assert st.snapshot_code() == "shutdown"
    assert st.journal_entries() == []
    assert not (d / "replica" / "misc" / ".replica.incoming").exists()


@pytest.mark.parametrize("case", NORMAL)
def test_second_pull_moves_nothing(unpack_fixture, case, capfd):
    d = unpack_fixture(case)
    pull(str(d / "master"), str(d / "replica"))
    before = replica_state(d / "replica")
    assert subprocess.call([DS_REPLICA, str(d / "master"), str(d / "replica")]) == 0
    assert "already up to date" in capfd.readouterr().err
    result = pull(str(d / "master"), str(d / "replica"))
    assert (result["changed"], result["transactions"], result["files"], result["bytes"]) == (False, 0, 0, 0)
    assert replica_state(d / "replica") == before


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_leave_replica_untouched(unpack_fixture, case):
    d = unpack_fixture(case)
    m = manifest(d)
    before = replica_state(d / "replica")
    with pytest.raises(errors.DSError) as err:
        pull(str(d / "master"), str(d / "replica"))
    assert expected_refusal(m) in str(err.value)
    assert "\n" not in str(err.value)
    assert replica_state(d / "replica") == before


@pytest.mark.parametrize("case", REFUSALS)
def test_cli_refusal_is_one_line_and_fails(unpack_fixture, case):
    d = unpack_fixture(case)
    proc = subprocess.run([DS_REPLICA, "-q", str(d / "master"), str(d / "replica")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ds-replica: ")
    assert expected_refusal(manifest(d)) in lines[0]
    assert "Traceback" not in proc.stderr
    verbose = subprocess.run([DS_REPLICA, "-v", str(d / "master"), str(d / "replica")], capture_output=True, text=True,
                             check=False)
    assert "Traceback" in verbose.stderr  # -v shows where


def test_verbose_pull_says_how_the_master_was_held(unpack_fixture):
    d = unpack_fixture("bushy")
    proc = subprocess.run([DS_REPLICA, "-v", str(d / "master"), str(d / "replica")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"master held in snapshot mode for [0-9.]+s \(direct\)", proc.stderr), proc.stderr


def test_crashed_master_is_recovered_by_direct_snapshot(unpack_fixture):
    d = unpack_fixture("crashed-master")
    m = manifest(d)
    result = pull(str(d / "master"), str(d / "replica"))
    assert result["after_tid"] == m["after_recovery"]["last_tid"]
    assert_objects(d / "replica", m["after_recovery"]["objects"])
    assert_objects(d / "master", m["after_recovery"]["objects"])
    # the master's journal was rolled forward (_done) and rolled back (_temp)
    assert os.listdir(d / "master" / "journal") == []
    assert storage.Storage(d / "master").snapshot_code() == "shutdown"


def test_pending_replica_is_recovered_first(unpack_fixture):
    d = unpack_fixture("pending-replica")
    m = manifest(d)
    st = storage.Storage(d / "replica")
    assert st.journal_entries() == ["replica.tar"]
    lines = []
    result = pull(str(d / "master"), str(d / "replica"), log=lines.append)
    assert lines[0] == "applied an increment left pending by an interrupted pull"
    assert result["before_tid"] == m["expected_after_recovery"]
    assert result["after_tid"] == m["master"]["last_tid"]
    assert_objects(d / "replica", m["master"]["objects"])
    assert (d / "replica" / "misc" / "replica.previous").exists()


def test_recovery_alone_applies_pending_increment(unpack_fixture):
    d = unpack_fixture("pending-replica")
    st = storage.Storage(d / "replica")
    with st.lock(), st.sublock():
        report = journal.recover(st)
    assert report["replica_tar"] is True
    assert storage.hex_tid(st.last_tid()) == manifest(d)["expected_after_recovery"]
    assert_reads_as(d / "replica", d / "master")


def test_a_marker_write_cut_short_leaves_nothing_behind(unpack_fixture):
    """A power cut between writing misc/snapshot.tmp-PID (fsynced) and its rename
    becoming durable leaves that file (found by tests/integration/test_power_loss.py):
    the next pull removes it, on the replica and, through the `direct` snapshot's
    recovery, on the master."""
    d = unpack_fixture("bushy")
    for side in ("replica", "master"):
        (d / side / "misc" / "snapshot.tmp-999999999").write_bytes(b"shutdown")
    pull(str(d / "master"), str(d / "replica"))
    for side in ("replica", "master"):
        assert sorted(p.name for p in (d / side / "misc").glob("snapshot*")) == ["snapshot"], side


def test_strange_journal_entry_stops_everything(unpack_fixture):
    d = unpack_fixture("bushy")
    (d / "replica" / "journal" / "surprise").write_bytes(b"?")
    before = replica_state(d / "replica")
    with pytest.raises(errors.DSError, match="journal/ holds surprise"):
        pull(str(d / "master"), str(d / "replica"))
    assert replica_state(d / "replica") == before


@pytest.mark.parametrize("side", ["master", "replica"])
def test_minimal_storage_is_refused(unpack_fixture, side):
    d = unpack_fixture("chunky")
    settings = d / side / "config" / "settings"
    settings.write_text(settings.read_text().replace("classname: Full", "classname: Minimal"))
    before = replica_state(d / "replica")
    with pytest.raises(errors.DSError, match="Minimal storage, not Full"):
        pull(str(d / "master"), str(d / "replica"))
    assert replica_state(d / "replica") == before


def test_replica_ahead_of_master_is_refused(unpack_fixture, tmp_path):
    d = unpack_fixture("lawn")
    pull(str(d / "master"), str(d / "replica"))
    # the master, restored from an older copy: its history is a prefix of the replica's
    older = unpack_fixture("lawn")
    before = replica_state(d / "replica")
    # swap: pull the up-to-date replica from the older master copy (same identity).
    # The master lacks the replica's newest transaction, so it refuses on that
    # (checked before "is ahead"), naming the transaction
    newest = manifest(d)["master"]["last_tid"]
    with pytest.raises(errors.Refused, match=re.escape("reference transaction does not exist on the master (%s)"
                                                       % newest)):
        pull(str(older / "replica"), str(d / "replica"))
    assert replica_state(d / "replica") == before


def test_locked_replica_is_refused(unpack_fixture):
    d = unpack_fixture("flat")
    before = replica_state(d / "replica")
    # a real flock held by another process, as a running storage holds it
    holder = subprocess.Popen(["flock", "-x", str(d / "replica" / "misc" / "lock"), "sleep", "30"])
    try:
        for _unused in range(100):
            if durable.FileLock(str(d / "replica" / "misc" / "lock")).probe()[0]:
                break
            import time
            time.sleep(0.05)
        with pytest.raises(errors.Busy, match="in use"):
            pull(str(d / "master"), str(d / "replica"))
    finally:
        holder.kill()
        holder.wait()
    assert replica_state(d / "replica") == before


def test_master_in_use_without_snapshot_method_is_refused(unpack_fixture):
    d = unpack_fixture("bushy")
    before = replica_state(d / "replica")
    # the master "runs": it holds misc/lock and misc/sublock; no snapshot.conf
    lock = durable.FileLock(str(d / "master" / "misc" / "lock"))
    sub = durable.FileLock(str(d / "master" / "misc" / "sublock"))
    assert lock.acquire() and sub.acquire()
    try:
        (d / "master" / "misc" / "snapshot").unlink()
        with pytest.raises(errors.Busy, match="cannot enter snapshot mode"):
            pull(str(d / "master"), str(d / "replica"))
    finally:
        sub.release()
        lock.release()
    assert replica_state(d / "replica") == before


def test_check_mode_reports_and_changes_nothing(unpack_fixture):
    d = unpack_fixture("chunky")
    m = manifest(d)
    before = replica_state(d / "replica")
    master_before = replica_state(d / "master")
    result = pull(str(d / "master"), str(d / "replica"), PullOptions(check=True))
    assert result["changed"] is False
    assert result["files"] == len(m["expected_increment"])
    assert result["transactions"] > 0
    assert replica_state(d / "replica") == before
    assert replica_state(d / "master") == master_before


def test_compressed_and_throttled_pull(unpack_fixture):
    d = unpack_fixture("flat")
    m = manifest(d)
    result = pull(str(d / "master"), str(d / "replica"), PullOptions(compress=True, bwlimit=100000))
    assert result["after_tid"] == m["master"]["last_tid"]
    assert_objects(d / "replica", m["master"]["objects"])


def test_serve_answers_the_old_request_with_plain_ustar(unpack_fixture):
    d = unpack_fixture("bushy")
    m = manifest(d)
    st = storage.Storage(d / "replica")
    tid = st.last_tid()
    request = "replica request 0\n%s\n%s\n%s\n" % (st.identity, storage.hex_tid(tid), st.transaction_md5(tid))
    proc = subprocess.run([DS_REPLICA, "serve", str(d / "master")], input=request.encode(), capture_output=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout[257:263] == b"ustar\0"
    out = d / "answer.tar"
    out.write_bytes(proc.stdout)
    with tarfile.open(out, format=tarfile.USTAR_FORMAT) as tar:
        members = tar.getmembers()
        assert all(mb.isreg() for mb in members)
        assert sorted(mb.name for mb in members) == sorted(m["expected_increment"])
        for mb in members:
            assert tar.extractfile(mb).read() == (d / "master" / mb.name).read_bytes()


def test_serve_refuses_with_message_and_status(unpack_fixture):
    d = unpack_fixture("foreign")
    st = storage.Storage(d / "replica")
    tid = st.last_tid()
    request = "replica request 0\n%s\n%s\n%s\n" % (st.identity, storage.hex_tid(tid), st.transaction_md5(tid))
    proc = subprocess.run([DS_REPLICA, "serve", str(d / "master")], input=request.encode(), capture_output=True,
                          check=False)
    assert proc.returncode != 0
    assert proc.stdout == b""
    assert expected_refusal(manifest(d)).encode() in proc.stderr


def test_clone_then_pull_and_verify(unpack_fixture, tmp_path):
    d = unpack_fixture("crashed-master")
    m = manifest(d)
    dest = tmp_path / "standby"
    result = clone(str(d / "master"), str(dest))
    assert result["after_tid"] == m["after_recovery"]["last_tid"]
    assert_objects(dest, m["after_recovery"]["objects"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".standby.clone-")]
    assert verify(str(dest), str(d / "master"))["ok"] is True
    with pytest.raises(errors.DSError, match="already holds a storage"):
        clone(str(d / "master"), str(dest))
    info = storage_info(str(dest))
    assert info["last_tid"] == m["after_recovery"]["last_tid"] and info["snapshot"] is True
    assert pull(str(d / "master"), str(dest))["transactions"] == 0


def test_verify_detects_damage(unpack_fixture):
    d = unpack_fixture("lawn")
    pull(str(d / "master"), str(d / "replica"))
    assert verify(str(d / "replica"), str(d / "master"))["ok"] is True
    st = storage.Storage(d / "replica")
    victim = Path(st.path(storage.transaction_name(st.last_tid())))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = verify(str(d / "replica"), str(d / "master"))
    assert result["ok"] is False
    assert any("MD5" in p or "differs" in p for p in result["problems"])
    proc = subprocess.run([DS_REPLICA, "verify", str(d / "replica")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout.startswith("CRITICAL")


def test_falls_back_to_version_0_for_an_old_master(unpack_fixture):
    import shlex
    d = unpack_fixture("bushy")
    m = manifest(d)
    old = Path(__file__).resolve().parents[2] / "testbed" / "ssh_standins" / "v0_only_ssh.py"
    cmd = "%s %s %s" % (shlex.quote(sys.executable), shlex.quote(str(old)), shlex.quote(str(d / "master")))
    lines = []
    result = pull("old.invalid:/ignored", str(d / "replica"), PullOptions(ssh_command=cmd), log=lines.append)
    assert result["after_tid"] == m["master"]["last_tid"]
    assert any("version 0" in line for line in lines)
    assert_objects(d / "replica", m["master"]["objects"])
    # what needs version 1 is refused clearly instead of half-working
    d2 = unpack_fixture("bushy")
    with pytest.raises(errors.DSError, match="does not speak request version 1"):
        pull("old.invalid:/ignored", str(d2 / "replica"), PullOptions(ssh_command=cmd.replace(
            str(d / "master"), str(d2 / "master")), check=True))


def test_busy_master_is_retried_within_snapshot_timeout(unpack_fixture):
    import threading
    import time
    d = unpack_fixture("lawn")
    lock = durable.FileLock(str(d / "master" / "misc" / "lock"))
    sub = durable.FileLock(str(d / "master" / "misc" / "sublock"))
    assert lock.acquire() and sub.acquire()
    (d / "master" / "misc" / "snapshot").unlink()

    def stop_storage():  # the "running storage" shuts down cleanly after a while
        time.sleep(1.5)
        storage.Storage(d / "master").write_snapshot_marker("shutdown")
        sub.release()
        lock.release()

    threading.Thread(target=stop_storage).start()
    t0 = time.monotonic()
    result = pull(str(d / "master"), str(d / "replica"), PullOptions(snapshot_timeout=10, snapshot_interval=0.5))
    assert result["changed"] and time.monotonic() - t0 >= 1.0


def test_check_mode_does_not_even_recover(unpack_fixture):
    d = unpack_fixture("pending-replica")
    before = replica_state(d / "replica")
    result = pull(str(d / "master"), str(d / "replica"), PullOptions(check=True))
    assert result["changed"] is False and result["transactions"] > 0
    assert replica_state(d / "replica") == before
    assert (d / "replica" / "journal" / "replica.tar").exists()


def test_status_exit_codes_follow_nagios(unpack_fixture, tmp_path):
    import json
    d = unpack_fixture("lawn")
    m = manifest(d)
    base = [DS_REPLICA, "status", "--master", str(d / "master")]
    behind = subprocess.run(base + ["--json", str(d / "replica")], capture_output=True, text=True, check=False)
    assert behind.returncode == 0, behind.stdout + behind.stderr
    facts = json.loads(behind.stdout)
    assert facts["master"]["master_tid"] == m["master"]["last_tid"]
    assert facts["master"]["waiting_transactions"] == result_count(m)
    lag = facts["master"]["lag_seconds"]
    assert lag > 0
    assert subprocess.run(base + ["--warn-age", str(lag / 2), str(d / "replica")],
                          capture_output=True, check=False).returncode == 1
    crit = subprocess.run(base + ["--warn-age", str(lag / 4), "--crit-age", str(lag / 2), str(d / "replica")],
                          capture_output=True, text=True, check=False)
    assert crit.returncode == 2 and crit.stdout.startswith("CRITICAL")
    pull(str(d / "master"), str(d / "replica"))
    after = subprocess.run(base + ["--warn-age", "0.001", str(d / "replica")], capture_output=True, text=True,
                           check=False)
    assert after.returncode == 0 and "lag 0.0s, 0 transaction(s)" in after.stdout
    missing = subprocess.run([DS_REPLICA, "status", str(tmp_path / "nothing")], capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 2 and missing.stdout.startswith("CRITICAL")


def result_count(m):
    return len([t for t in m["master"]["transactions"] if t["tid"] > m["replica"]["last_tid"]])


def test_interrupted_clone_never_looks_like_a_replica(unpack_fixture, tmp_path):
    import signal
    import time
    d = unpack_fixture("flat")
    dest = tmp_path / "standby"
    slow = subprocess.Popen([DS_REPLICA, "clone", "-q", "--bwlimit", "40", str(d / "master"), str(dest)])
    deadline = time.monotonic() + 20
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".standby.clone-")]:
        assert time.monotonic() < deadline and slow.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # well into the transfer
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert not dest.exists()  # nothing at the destination looks like a storage
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".standby.clone-")]
    assert partial and (partial[0] / "A").is_dir()
    with pytest.raises(errors.NotAStorage, match=re.escape("%s does not exist" % dest)):
        pull(str(d / "master"), str(dest))
    # the next clone clears the leftover of the dead one and completes
    result = clone(str(d / "master"), str(dest))
    assert result["after_tid"] == manifest(d)["master"]["last_tid"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".standby.clone-")]
    assert_objects(dest, manifest(d)["master"]["objects"])


def test_compression_shrinks_what_crosses_the_wire(tmp_path):
    import pickle

    from testbed.fakes.simulated_storage import SimulatedStorage, create_storage
    home = tmp_path / "master"
    create_storage(str(home), "bushy")
    with SimulatedStorage(str(home)) as tm:
        tm.commit({tm.new_oid(): b"seed"})
    for compress in (False, True):
        standby = tmp_path / ("standby-%s" % compress)
        clone(str(home), str(standby))
        with SimulatedStorage(str(home)) as tm:
            for i in range(20):  # pickles of text-rich objects, as a CMS writes them
                state = {"title": "Page %d" % i, "body": "Lorem ipsum dolor sit amet. " * 200, "tags": ["a", "b"]}
                tm.commit({tm.new_oid(): pickle.dumps(state, protocol=3)})
        result = pull(str(home), str(standby), PullOptions(compress=compress))
        assert result["transactions"] == 20
        if compress:
            assert result["wire_bytes"] * 5 < result["bytes"], result
        else:
            assert result["wire_bytes"] > result["bytes"], result  # tar headers and padding
        assert_reads_as(standby, home)


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_on_a_terminal_and_silence_under_q(unpack_fixture, quiet):
    import os as _os
    import pty
    d = unpack_fixture("flat")
    controller, terminal = pty.openpty()
    argv = [DS_REPLICA] + (["-q"] if quiet else []) + ["--bwlimit", "400", str(d / "master"), str(d / "replica")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal)
    _os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = _os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    _os.close(controller)
    assert proc.wait() == 0
    if quiet:
        assert seen == b""
    else:
        text = seen.decode()
        assert "files, " in text and "/s" in text and "left" in text  # files, bytes, rate, time left
        assert text.rstrip().endswith("Replica complete")


def test_an_ended_process_not_yet_reaped_is_not_alive():
    """A dead clone's `.NAME.clone-PID` is removed when PID is not alive; a
    zombie (ended, its parent has not waited for it yet) is not alive."""
    from dirstorage_replica.durable import pid_alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while Path("/proc/%d/stat" % child.pid).read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.05)
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
