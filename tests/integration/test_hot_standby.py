"""Hot standby: a real process holds the replica as a read-only storage
process does (misc/lock and misc/sublock, answering reads in a loop and
logging each answer: testbed/fakes/hot_replica.py); `ds-replica
--stop-command ... --start-command ...` stops it only for the apply."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirstorage_replica import durable, errors, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.follow import SPOOL_PREFIX
from dirstorage_replica.follow_state import follower_state
from dirstorage_replica.metrics import read_metrics
from testbed.fakes import hot_replica
from testbed.fakes.toolkit import TOOLKIT_PATH
from testbed.harness.reliability import DS_REPLICA, FollowerProcess, serve_pids
from testbed.harness.sshd import free_port
from tests.integration.test_modules import run_module
from tests.integration.test_reliability import _commit_big, _stopped_master, small_mount  # noqa: F401  pylint: disable=unused-import
from tests.support.checks import assert_reads_as, replica_state

ROOT = Path(__file__).resolve().parents[2]
BWLIMIT_KIB = 200  # ~800 KB of increment: a transfer of about 4 s
PY = shlex.quote(sys.executable)
LOCAL_SSH = "%s %s" % (sys.executable, ROOT / "testbed" / "ssh_standins" / "local_ssh.py")


def assert_served_while_it_travelled(log, sent_from, result):
    """The serving process (its answers in `log`) answered all through a
    transfer that began at `sent_from` (unix time), and its longest silence,
    the apply, lasted about the reported downtime: a small part of the
    transfer's time, not all of it."""
    silence, silent_from = hot_replica.longest_silence(log)
    travelled = silent_from - sent_from
    assert travelled >= 2.5, "the longest silence began %.2fs into a trickled transfer" % travelled
    answered = sum(sent_from + 0.5 < t < silent_from for t, _tid in hot_replica.answers(log))
    assert answered > 10 * travelled, "%d answers in %.2fs of transfer" % (answered, travelled)  # 100/s unloaded
    assert 0 < silence <= result["downtime_seconds"] + 0.2, (silence, result["downtime_seconds"])
    assert silence < travelled / 3, (silence, travelled)


class Standby(object):
    """A replica of `master` served by a hot_replica process, with the
    commands that stop and start it."""

    def __init__(self, tmp_path, master, replica=None, toolkit_port=None):
        self.master = master
        self.replica = replica or tmp_path / "replica"
        self.log = tmp_path / "answers.log"
        self.pidfile = tmp_path / "serving.pid"
        self.started = tmp_path / "start-command-ran"
        q = {k: shlex.quote(str(v)) for k, v in vars(self).items()}
        self.stop = "kill $(cat %(pidfile)s)" % q
        self.start = "touch %s && cd %s && %s -m testbed.fakes.hot_replica start %s %s %s%s" % (
            q["started"], shlex.quote(str(ROOT)), PY, q["replica"], q["log"], q["pidfile"],
            "" if toolkit_port is None else " %d" % toolkit_port)

    def run(self, *flags, stop=None, start=None, timeout=120):
        """ds-replica --json with the hot-standby commands; (exit status, result or None, stderr)."""
        argv = [DS_REPLICA, "-q", "--json", "--stop-command", stop or self.stop, "--start-command",
                start or self.start, *flags, str(self.master), str(self.replica)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        result = json.loads(proc.stdout) if proc.returncode == 0 else None
        return proc.returncode, result, proc.stderr.strip()

    def serve(self):
        assert subprocess.run(self.start, shell=True, check=False).returncode == 0
        self.started.unlink()

    def serving(self):
        return self.pidfile.exists() and durable.FileLock(str(self.replica / "misc" / "lock")).probe()[0]

    def shutdown(self):
        if self.pidfile.exists():
            pid = int(self.pidfile.read_text())
            os.kill(pid, 15)
            deadline = time.monotonic() + 10
            while self.pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.02)


@pytest.fixture
def standby(tmp_path):
    master = tmp_path / "master"
    _stopped_master(master, 10)
    clone(str(master), str(tmp_path / "replica"))
    s = Standby(tmp_path, master)
    s.serve()
    yield s
    s.shutdown()


def test_the_process_stops_only_for_the_apply(standby):
    _commit_big(standby.master, 40, 20000)  # about 800 KB: 4 s at the --bwlimit
    t0 = time.time()
    rc, result, err = standby.run("--bwlimit", str(BWLIMIT_KIB))
    assert rc == 0, err
    assert result["transactions"] == 40 and result["elapsed_seconds"] >= 3.0
    assert_reads_as(standby.replica, standby.master)
    assert standby.serving()
    # it answered all through the transfer, and was silent only about as long as the downtime
    assert_served_while_it_travelled(standby.log, t0, result)
    # and it answers the master's newest transaction since
    answers = hot_replica.answers(standby.log)
    assert answers[-1][1] == storage.hex_tid(storage.Storage(standby.master).last_tid())


def test_nothing_new_stops_nothing(standby):
    pid = standby.pidfile.read_text()
    rc, result, err = standby.run()
    assert rc == 0, err
    assert (result["transactions"], result["downtime_seconds"]) == (0, 0.0)
    assert standby.pidfile.read_text() == pid and not standby.started.exists()


def test_check_mode_stops_nothing(standby):
    _commit_big(standby.master, 3, 1000)
    pid, before = standby.pidfile.read_text(), replica_state(standby.replica)
    rc, result, err = standby.run("--check")
    assert rc == 0, err
    assert (result["transactions"], result["downtime_seconds"]) == (3, 0.0)
    assert standby.pidfile.read_text() == pid and not standby.started.exists()
    assert replica_state(standby.replica) == before


def _refused(standby, rc, err, code, phrase, before):
    assert rc == code, err
    assert len(err.splitlines()) == 1 and err.startswith("ds-replica: ") and phrase in err, err
    assert replica_state(standby.replica) == before
    assert standby.started.exists()  # the start command ran all the same


def test_stop_command_fails(standby):
    _commit_big(standby.master, 3, 1000)
    before = replica_state(standby.replica)
    rc, _res, err = standby.run(stop="echo no such service >&2; exit 3", start="touch %s" % standby.started)
    _refused(standby, rc, err, 1, "the stop command failed (exit 3: no such service)", before)


def test_a_stop_command_still_running_at_the_stop_timeout_is_killed(standby):
    """A stop command that hangs (a service manager that never answers) is killed at
    --stop-timeout: the pull fails in one line with its last output, the replica unchanged,
    the start command run, the serving process untouched."""
    _commit_big(standby.master, 3, 1000)
    before = replica_state(standby.replica)
    serving = int(standby.pidfile.read_text())
    t0 = time.monotonic()
    rc, _res, err = standby.run("--stop-timeout", "1", stop="echo waiting for zeo; exec sleep 30",
                                start="touch %s" % standby.started)
    assert time.monotonic() - t0 < 10
    _refused(standby, rc, err, 1, "the stop command failed (exit -9: still running after 1s: killed "
             "(waiting for zeo)): echo waiting for zeo; exec sleep 30", before)
    assert standby.serving() and int(standby.pidfile.read_text()) == serving
    # a stop command whose shell waits on a child: the child is killed with it, it never acts later
    late = standby.started.with_name("stop-command-acted-late")
    stop = "echo waiting for zeo; sh -c %s" % shlex.quote("sleep 2; touch %s" % shlex.quote(str(late)))
    standby.started.unlink()
    rc, _res, err = standby.run("--stop-timeout", "1", stop=stop, start="touch %s" % standby.started)
    _refused(standby, rc, err, 1, "the stop command failed (exit -9: still running after 1s: killed "
             "(waiting for zeo))", before)
    time.sleep(2.5)
    assert not late.exists()


def test_lock_not_freed_in_time(standby):
    _commit_big(standby.master, 3, 1000)
    before = replica_state(standby.replica)
    t0 = time.monotonic()
    rc, _res, err = standby.run("--stop-timeout", "1", stop="true", start="touch %s" % standby.started)
    assert time.monotonic() - t0 < 10
    _refused(standby, rc, err, 75, "misc/lock is still held by pid", before)


def test_replica_written_while_serving_is_refused(standby):
    _commit_big(standby.master, 3, 1000)
    # the stop command stops the process, then a writer (not read-only) commits into the replica
    stop = "%s && while [ -e %s ]; do sleep 0.01; done && cd %s && %s -m testbed.fakes.hot_replica write %s" % (
        standby.stop, shlex.quote(str(standby.pidfile)), shlex.quote(str(ROOT)), PY, shlex.quote(str(standby.replica)))
    rc, _res, err = standby.run(stop=stop)
    assert rc == 1, err
    assert "has diverged: it was written while it served" in err, err
    # the write stays (it is the standby's), the increment was not applied, nothing is left pending
    st, m = storage.Storage(standby.replica), storage.Storage(standby.master)
    assert st.last_tid() not in {t.tid for t in m.chain()}
    assert not os.path.exists(st.path(storage.transaction_name(m.last_tid())))
    assert st.journal_entries() == [] and not (standby.replica / "misc" / ".replica.incoming").exists()
    assert standby.serving()


def test_start_command_fails(standby):
    _commit_big(standby.master, 3, 1000)
    rc, _res, err = standby.run(start="echo cannot start >&2; exit 4")
    assert rc == 1
    assert err == "ds-replica: the start command failed (exit 4: cannot start): echo cannot start >&2; exit 4; " \
                  "the storage process that serves the replica is not running: start it by hand, then check " \
                  "the start command", err
    assert_reads_as(standby.replica, standby.master)  # applied before
    assert not standby.serving()


def test_apply_fails_on_a_full_disk_and_the_next_pull_finishes(tmp_path, small_mount):  # noqa: F811
    master = tmp_path / "master"
    _stopped_master(master)
    clone(str(master), str(small_mount / "replica"))
    s = Standby(tmp_path, master, small_mount / "replica")
    s.serve()
    try:
        free = os.statvfs(small_mount).f_bavail * os.statvfs(small_mount).f_frsize
        _commit_big(master, 4, int(free * 0.7) // 4)  # fits once (the spool), not twice (the apply)
        rc, _res, err = s.run()
        assert rc == 1 and "cannot apply the increment" in err and "pending" in err, err
        assert (s.replica / "journal" / "replica.tar").exists()
        assert s.started.exists() and s.serving()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_mount)], check=True)
        rc, result, err = s.run()
        assert rc == 0, err
        assert_reads_as(s.replica, master)
        assert s.serving() and result["downtime_seconds"] > 0
    finally:
        s.shutdown()


def test_a_hot_standby_serves_a_cascaded_standby_through_its_process(tmp_path):
    """The `http` snapshot method of a hot upstream (issue 21): a cascaded standby's pull has the
    upstream's serving process enter and leave snapshot mode over the toolkit's XML-RPC (nodirect: the
    storage is running), the process answering all the while; the upstream's own pull still stops and
    starts it, its toolkit back on the same address."""
    master, upstream, downstream = tmp_path / "master", tmp_path / "standby1", tmp_path / "standby2"
    _stopped_master(master, 10)
    clone(str(master), str(upstream))
    clone(str(upstream), str(downstream))
    port = free_port()
    url = "http://127.0.0.1:%d%s" % (port, TOOLKIT_PATH)
    durable.write_atomic(str(upstream / "config" / "toolkit.access"), b"replica:%s\n" % os.urandom(8).hex().encode(),
                         mode=0o600)
    conf = "http %s toolkit.access\nnodirect\n" % url  # as the master role writes it (snapshot: [http, nodirect])
    durable.write_atomic(str(upstream / "config" / "snapshot.conf"), conf.encode())
    s = Standby(tmp_path, master, upstream, toolkit_port=port)
    s.serve()
    try:
        _commit_big(master, 40, 20000)  # about 800 KB: 4 s at the --bwlimit
        rc, result, err = s.run()
        assert rc == 0 and result["transactions"] == 40, err
        t0 = time.time()
        proc = subprocess.run([DS_REPLICA, "-v", "--json", "--bwlimit", str(BWLIMIT_KIB), str(upstream),
                               str(downstream)], capture_output=True, text=True, timeout=120, check=False)
        t1 = time.time()
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["transactions"] == 40 and t1 - t0 >= 3.0
        assert "entered snapshot mode through http %s" % url in proc.stderr, proc.stderr
        assert_reads_as(downstream, master)
        # the upstream's process answered all through the transfer, never silent
        silence, _start = hot_replica.longest_silence(s.log, since=t0)
        answered = sum(t0 < t < t1 for t, _tid in hot_replica.answers(s.log))
        assert silence < 0.5 and answered > 10 * (t1 - t0), (silence, answered)
        # it left snapshot mode: no marker, and the process holds misc/sublock again
        assert storage.Storage(upstream).snapshot_code() is None
        assert s.serving() and durable.FileLock(str(upstream / "misc" / "sublock")).probe()[0]
        # the upstream's next pull stops and starts the process; the cascade pulls through the new one
        _commit_big(master, 3, 2000)
        rc, result, err = s.run()
        assert rc == 0 and result["transactions"] == 3 and result["downtime_seconds"] > 0, err
        proc = subprocess.run([DS_REPLICA, "-q", str(upstream), str(downstream)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert_reads_as(downstream, master)
    finally:
        s.shutdown()


def test_two_pulls_never_overlap(standby):
    _commit_big(standby.master, 40, 20000)
    first = subprocess.Popen([DS_REPLICA, "-q", "--bwlimit", str(BWLIMIT_KIB), "--stop-command", standby.stop,
                              "--start-command", standby.start, str(standby.master), str(standby.replica)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the first one receives (the process still serves)
        for hot in (True, False):
            flags = ("--stop-command", standby.stop, "--start-command", standby.start) if hot else ()
            proc = subprocess.run([DS_REPLICA, "-q", *flags, str(standby.master), str(standby.replica)],
                                  capture_output=True, text=True, timeout=30, check=False)
            assert proc.returncode == 75, proc.stderr
            assert "is in use by another pull (pid %d)" % first.pid in proc.stderr, proc.stderr
    finally:
        _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert_reads_as(standby.replica, standby.master)


def test_the_replicate_module_runs_a_hot_pull(standby):
    _commit_big(standby.master, 40, 20000)  # about 800 KB: 4 s at the bwlimit
    t0 = time.time()
    ok, result = run_module("replicate", {"master": str(standby.master), "path": str(standby.replica),
                                          "stop_command": standby.stop, "start_command": standby.start,
                                          "stop_timeout": 30, "bwlimit": BWLIMIT_KIB})
    assert ok and result["changed"] and result["transactions"] == 40, result
    assert_served_while_it_travelled(standby.log, t0, result)
    assert_reads_as(standby.replica, standby.master)
    assert standby.serving()
    ok, result = run_module("replicate", {"master": str(standby.master), "path": str(standby.replica),
                                          "stop_command": standby.stop})
    assert not ok and "parameters are required together: stop_command, start_command" in result["msg"], result


def _wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


def _commit_when_free(master, objects):
    """Commit to the master between the follower's short snapshot holds."""
    for _unused in range(100):
        try:
            return _commit_big(master, objects, 1000)
        except errors.Busy:
            time.sleep(0.05)
    raise AssertionError("the master stayed locked")


def test_follow_stops_the_process_only_to_apply_and_at_most_once_per_interval(standby, tmp_path):
    """`ds-replica follow` with a hot standby's commands: the process serves
    between applies, each apply stops and starts it, and two stops are at
    least --min-apply-interval apart however soon the next transaction comes."""
    stops = tmp_path / "stops"
    stop = "date +%%s.%%N >> %s && %s" % (shlex.quote(str(stops)), standby.stop)

    def master_tid():
        return storage.Storage(str(standby.master)).last_tid()

    def replica_tid():
        return storage.Storage(str(standby.replica)).last_tid()

    _commit_when_free(standby.master, 3)
    follower = subprocess.Popen(
        [DS_REPLICA, "follow", "-q", "--interval", "0.2", "--min-apply-interval", "3", "--stop-command", stop,
         "--start-command", standby.start, str(standby.master), str(standby.replica)],
        stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: replica_tid() == master_tid() and standby.serving(), 60, "the first apply")
        _commit_when_free(standby.master, 3)
        _wait_for(lambda: replica_tid() == master_tid() and standby.serving(), 60, "the second apply")
    finally:
        follower.terminate()
        _unused, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    times = [float(t) for t in stops.read_text().split()]
    assert len(times) >= 2, times
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 3 - 0.1, gaps  # --min-apply-interval
    assert standby.serving(), "the start command must leave the process serving"
    assert_reads_as(standby.replica, standby.master)


def _hot_follower(standby, tmp_path, *flags, master=None):
    """`ds-replica follow --json` with the standby's commands, each stop
    logged (unix time) in the returned file."""
    stops = tmp_path / "stops"
    stop = "date +%%s.%%N >> %s && %s" % (shlex.quote(str(stops)), standby.stop)
    argv = [DS_REPLICA, "follow", "--json", "--interval", "0.2", "--stop-command", stop, "--start-command",
            standby.start, *flags, master or str(standby.master), str(standby.replica)]
    return FollowerProcess(argv, tmp_path / "follow.err"), stops


def _stops(path):
    return path.read_text().split() if path.exists() else []


def test_a_hot_follower_answers_while_the_increment_travels_and_is_silent_only_to_apply(standby, tmp_path):
    """As a pull: the increment is received and checked while the service
    serves; it is stopped only for the apply, and says how long."""
    _commit_big(standby.master, 40, 20000)  # about 800 KB: 4 s at the --bwlimit, the connection's first increment
    metrics = tmp_path / "dirstorage_main.prom"
    follower, stops = _hot_follower(standby, tmp_path, "--bwlimit", str(BWLIMIT_KIB), "--min-apply-interval", "2",
                                    "--metrics", str(metrics))
    try:
        _wait_for(lambda: follower.results and standby.serving(), 60, "the apply")
        status = subprocess.run([DS_REPLICA, "status", str(standby.replica)], capture_output=True, text=True,
                                timeout=30, check=False).stdout
    finally:
        assert follower.end(signal.SIGTERM) == 0
    result = follower.results[0]
    assert result["transactions"] == 40 and result["elapsed_seconds"] >= 3.0, result
    assert_served_while_it_travelled(standby.log, result["applied_at"] - result["elapsed_seconds"], result)
    assert len(_stops(stops)) == 1  # the connection did not stop it: only the apply
    assert read_metrics(str(metrics))["downtime_seconds"] == result["downtime_seconds"]
    assert "service down %.3fs at the last apply" % result["downtime_seconds"] in status, status
    assert_reads_as(standby.replica, standby.master)
    assert standby.serving()


def test_a_hot_follower_reconnects_without_stopping_the_service(standby, tmp_path):
    master = str(standby.master)
    pid = standby.pidfile.read_text()
    follower, stops = _hot_follower(standby, tmp_path, "--min-apply-interval", "1", "-e", LOCAL_SSH,
                                    "--remote-command", DS_REPLICA, master="local:%s" % master)
    try:
        _wait_for(lambda: serve_pids(master), 30, "the master's serve")
        first = serve_pids(master)
        os.kill(first[0], signal.SIGKILL)  # the connection breaks: the follower connects again
        _wait_for(lambda: serve_pids(master) and serve_pids(master) != first, 30, "the second connection")
        _wait_for(lambda: (follower_state(str(standby.replica)) or {}).get("state") == "following", 30, "following")
        assert standby.pidfile.read_text() == pid and not _stops(stops) and not standby.started.exists()
        _commit_when_free(standby.master, 3)  # and it still follows
        _wait_for(lambda: follower.results and standby.serving(), 30, "the apply")
    finally:
        assert follower.end(signal.SIGTERM) == 0
    assert "retrying in" in (tmp_path / "follow.err").read_text()
    assert len(_stops(stops)) == 1
    assert_reads_as(standby.replica, standby.master)


def _spool_files(replica):
    return [n for n in os.listdir(replica / "misc") if n.startswith(SPOOL_PREFIX)]


def test_sigterm_with_an_increment_spooled_ends_at_a_boundary_with_the_service_running(standby, tmp_path):
    follower, stops = _hot_follower(standby, tmp_path, "--min-apply-interval", "60")
    try:
        _commit_when_free(standby.master, 3)
        _wait_for(lambda: follower.results and standby.serving(), 30, "the first apply (at once)")
        applied = follower.results[0]["after_tid"]
        _commit_when_free(standby.master, 3)  # received now, applied only a minute after the first
        _wait_for(lambda: (follower_state(str(standby.replica)) or {}).get("spooled_increments") == 1, 30,
                  "the second increment spooled")
        assert _spool_files(standby.replica)
        pid = standby.pidfile.read_text()
        t0 = time.monotonic()
    finally:
        assert follower.end(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10
    st = storage.Storage(str(standby.replica))
    assert storage.hex_tid(st.last_tid()) == applied and st.journal_entries() == []
    assert not _spool_files(standby.replica)
    assert standby.pidfile.read_text() == pid and standby.serving() and len(_stops(stops)) == 1
    assert follower_state(str(standby.replica))["state"] == "stopped"
    rc, _result, err = standby.run()  # the replica is a copy of the master as of `applied`: a pull catches up
    assert rc == 0, err
    assert_reads_as(standby.replica, standby.master)


def test_sigterm_while_a_hot_follower_applies_finishes_the_apply_and_starts_the_service(standby, tmp_path):
    stopping = tmp_path / "stopping"
    # the stop command takes a second: SIGTERM arrives while the service is being stopped for the apply
    slow_stop = "touch %s && sleep 1 && %s" % (shlex.quote(str(stopping)), standby.stop)
    _commit_when_free(standby.master, 3)  # the connection's first increment: applied at once
    proc = subprocess.Popen([DS_REPLICA, "follow", "-q", "--interval", "0.2", "--stop-command", slow_stop,
                             "--start-command", standby.start, str(standby.master), str(standby.replica)],
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(stopping.exists, 30, "the stop command")
        proc.send_signal(signal.SIGTERM)
        _unused, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert_reads_as(standby.replica, standby.master)  # the apply was finished
    assert standby.serving() and standby.started.exists(), "the service must be started again"
    assert storage.Storage(str(standby.replica)).journal_entries() == [] and not _spool_files(standby.replica)
