"""Replication that survives live writes, crashes and stuck snapshots.

Short versions of the scenarios (the long ones are tests/soak/test_soak.py).
Each test reports its figures on the terminal and in tests/output/reliability.json.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dirstorage_replica import durable, errors, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.replica import pull
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage
from testbed.fakes.toolkit import ToolkitServer
from testbed.harness.reliability import DS_REPLICA, report, run_follow_kills, run_live_writes, run_pull_kills
from tests.support.checks import assert_reads_as, replica_state

LIVE_SECONDS = float(os.environ.get("RELIABILITY_LIVE_SECONDS", "60"))
KILLS = int(os.environ.get("RELIABILITY_KILLS", "25"))
FOLLOW_SECONDS = float(os.environ.get("RELIABILITY_FOLLOW_SECONDS", "63"))


@pytest.fixture
def fast_dir(tmp_path):
    """A scratch folder on tmpfs (/dev/shm) when there is one: fsync there is
    cheap, so the test master reaches its write rate on a small CI machine."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="ds-reliability-", dir="/dev/shm"))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def _one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ds-replica: ") and "Traceback" not in proc.stderr
    return lines[0]


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------ live writes

@pytest.mark.slow
def test_pulls_every_second_while_master_writes(fast_dir, request):
    stats = run_live_writes(fast_dir, LIVE_SECONDS, rate=60.0)
    achieved = stats["master_transactions"] / (LIVE_SECONDS + 2.0)
    stats["achieved_tps"] = round(achieved, 1)
    report(request, "live_writes", stats)
    assert stats["ok"] >= 0.9 * stats["pulls"]
    assert stats["pulls"] >= 0.8 * LIVE_SECONDS
    # the live pulls carried the writes: nearly every one brought transactions,
    # and each transaction came exactly once (clone, live pulls, final pull)
    assert stats["pulls_with_transactions"] >= 0.8 * stats["ok"], stats
    assert (stats["transactions_at_clone"] + stats["transactions"] + stats["final_transactions"]
            == stats["master_transactions"]), stats
    assert achieved >= 45, "the test master wrote only %.1f tx/s" % achieved


# ------------------------------------------------------- the follower

@pytest.mark.slow
def test_follower_keeps_up_through_kills(fast_dir, sshd, request):
    """`ds-replica follow` over a real sshd, the master writing 50 tx/s; the
    follower, the master's serve and the ssh connection are each SIGKILLed
    at least twice: every sampled state reads as the master at its
    transaction, increments come in order, each kill is recovered alone."""
    stats = run_follow_kills(fast_dir, sshd, FOLLOW_SECONDS, rate=50.0, kill_every=FOLLOW_SECONDS / 8)
    report(request, "follow_kills", stats)
    assert all(n >= 2 for n in stats["kills"].values()), stats["kills"]
    assert stats["master_transactions"] >= 45 * FOLLOW_SECONDS, "the test master wrote too slowly"
    assert stats["samples"] >= 4 and stats["states_checked"] >= 8


# ----------------------------------------------------- pulling side killed

@pytest.mark.slow
def test_killed_pulls_leave_transaction_boundaries(fast_dir, request):
    stats = run_pull_kills(fast_dir, KILLS, history=500)
    report(request, "pull_kills", stats)
    # most runs were really killed mid-pull (not finished before the signal)
    killed = sum(n for kind, n in stats["kill_points"].items() if kind != "finished-first")
    assert killed >= KILLS / 2, stats["kill_points"]
    # the kills spread over the pull: at least two distinct phases were hit
    assert len([k for k in stats["kill_points"] if k != "finished-first"]) >= 2, stats["kill_points"]


# ------------------------------------------------------ master side killed

class ObservedMaster(object):
    """A SimulatedStorage in this process with its toolkit, recording the codes of
    enterSnapshot/leaveSnapshot calls; `on_enter(code)` runs after a
    successful enterSnapshot, before the answer goes back."""

    def __init__(self, home):
        create_storage(home, "bushy")
        self.home = str(home)
        self.tm = SimulatedStorage(home).open()
        self.entered, self.left, self.enter_calls, self.enter_times = [], [], 0, []
        self.on_enter = None
        enter, leave = self.tm.enter_snapshot, self.tm.leave_snapshot

        def entering(code):
            self.enter_calls += 1
            self.enter_times.append(time.monotonic())
            enter(code)
            self.entered.append(code)
            if self.on_enter:
                self.on_enter(code)

        def leaving(code):
            leave(code)
            self.left.append(code)

        self.tm.enter_snapshot, self.tm.leave_snapshot = entering, leaving
        self.toolkit = ToolkitServer(self.tm)
        self.toolkit.write_snapshot_conf(self.home, extra_lines=["nodirect"])

    def commit_many(self, n, size=3000):
        for i in range(n):
            self.tm.commit({self.tm.new_oid() if i % 3 == 0 or self.tm.last_tid == storage.ZERO_TID
                            else i % max(1, self.tm.last_oid): PICKLE_HEAD + os.urandom(size) + b"."})

    def close(self):
        self.toolkit.stop()
        if self.tm.is_open:
            self.tm.close()


@pytest.fixture
def observed(tmp_path):
    m = ObservedMaster(tmp_path / "master")
    m.commit_many(10)
    clone(m.home, str(tmp_path / "replica"))
    m.commit_many(300)
    yield m
    m.close()


def _ssh_pull(sshd, master, replica, *extra, **kw):
    argv = [DS_REPLICA, "-q", "-e", sshd.ssh_command_string(), *extra,
            "%s@%s:%s" % (sshd.user, sshd.host, master), str(replica)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _serve_pids():
    out = subprocess.run(["pgrep", "-f", "ds-replica serve"], capture_output=True, text=True, check=False).stdout
    return {int(p) for p in out.split()}


def test_killed_serve_leaves_no_stuck_master(observed, sshd, tmp_path, request):
    """SIGKILL of `ds-replica serve` while it holds the master in snapshot
    mode: the next pull sees the dead holder's code and leaves it."""
    m = observed
    stopped = []

    def stop_it(code):
        pid = int(code.rsplit("-", 1)[1])
        os.kill(pid, signal.SIGSTOP)  # frozen inside snapshot mode
        stopped.append((code, pid))

    m.on_enter = stop_it
    replica = tmp_path / "replica"
    before = replica_state(replica)
    first = _ssh_pull(sshd, m.home, replica)
    _wait(lambda: stopped, what="the serve to enter snapshot mode")
    code, pid = stopped[0]
    assert pid in _serve_pids()
    os.kill(pid, signal.SIGKILL)
    out, err = first.communicate(timeout=60)
    assert first.returncode != 0
    line = _one_line_error(subprocess.CompletedProcess([], first.returncode, out, err))
    assert replica_state(replica) == before
    # the master is stuck in the dead serve's snapshot...
    assert m.tm.snapshot_code == "user/" + code
    assert not _alive(pid)
    m.on_enter = None
    second = _ssh_pull(sshd, m.home, replica)
    out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    # ...until the next pull leaves it for the dead code, then works
    assert code in m.left
    assert m.tm.snapshot_code is None
    m.tm.flush()
    assert_reads_as(replica, m.home)
    report(request, "killed_serve", {"first_error": line, "stale_code_left": code,
                                     "enter_calls": m.enter_calls, "leave_calls": len(m.left)})


def _lose_ssh(m, sshd, replica, *extra):
    """Freeze the serve inside snapshot mode, kill the pull's ssh client, then
    let the orphaned serve run on.  Returns (pull result, serve's code)."""
    stopped = []

    def stop_it(code):
        pid = int(code.rsplit("-", 1)[1])
        os.kill(pid, signal.SIGSTOP)
        stopped.append((code, pid))

    m.on_enter = stop_it
    first = _ssh_pull(sshd, m.home, replica, *extra)
    _wait(lambda: stopped, what="the serve to enter snapshot mode")
    code, pid = stopped[0]
    m.on_enter = None
    try:
        kids = subprocess.run(["pgrep", "-P", str(first.pid), "-x", "ssh"], capture_output=True,
                              text=True, check=False).stdout.split()
        assert kids, "no ssh client under the pull"
        for kid in kids:
            os.kill(int(kid), signal.SIGKILL)  # the connection is gone
        out, err = first.communicate(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)  # never leave a stopped serve behind, whatever failed above
    # the orphaned serve finds its peer gone and cleans up
    _wait(lambda: not _alive(pid), timeout=60, what="the orphaned serve to end")
    return subprocess.CompletedProcess(first.args, first.returncode, out, err), code


def test_lost_ssh_connection_leaves_no_stuck_master(observed, sshd, tmp_path, request):
    m = observed
    replica = tmp_path / "replica"
    before = replica_state(replica)
    first, code = _lose_ssh(m, sshd, replica)
    # the pull fails, or (engine today) reconnects with request version 0 and
    # rides on the frozen serve's snapshot: either way a whole state
    if first.returncode != 0:
        line = _one_line_error(first)
        assert replica_state(replica) == before
    else:
        line = "(pull reconnected and completed)"
    _wait(lambda: m.tm.snapshot_code is None, timeout=10, what="the master to leave snapshot mode")
    assert code in m.left  # the orphaned serve left its own snapshot
    second = _ssh_pull(sshd, m.home, replica)
    _out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    m.tm.flush()
    assert_reads_as(replica, m.home)
    report(request, "lost_ssh", {"first_pull": line, "serve_left_its_own_snapshot": code in m.left})


def test_lost_ssh_connection_is_reported_as_retryable(observed, sshd, tmp_path):
    m = observed
    first, _code = _lose_ssh(m, sshd, tmp_path / "replica", "--snapshot-timeout", "5")
    line = _one_line_error(first)
    assert first.returncode == 75, line
    assert "version 1" not in line, line


def test_snapshot_held_by_a_live_backup_is_respected(observed, sshd, tmp_path, request):
    m = observed
    replica = tmp_path / "replica"
    # a backup job: enterSnapshot('backup-job'), then holds misc/sublock as a tool must
    m.tm.enter_snapshot("backup-job")
    sub = storage.Storage(m.home).sublock()
    assert sub.acquire()
    before = replica_state(replica)
    calls = m.enter_calls
    t0 = time.monotonic()
    p = _ssh_pull(sshd, m.home, replica, "--snapshot-timeout", "3", "--snapshot-interval", "1")
    out, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 75, err  # EX_TEMPFAIL: retry later
    line = _one_line_error(subprocess.CompletedProcess([], p.returncode, out, err))
    assert "cannot enter snapshot mode" in line
    # tries at 0, 1 and 2 s; a 4th would end past the 3 s budget
    tries = m.enter_times[calls:]
    gaps = [tries[i + 1] - tries[i] for i in range(len(tries) - 1)]
    assert len(tries) == 3 and all(1.0 <= g < 2.0 for g in gaps), gaps
    assert m.tm.snapshot_code == "user/backup-job" and "backup-job" not in m.left
    assert replica_state(replica) == before
    # a backup that holds the snapshot without the sublock: the pull either
    # reads the coherent A/ or refuses retryably; never leaves the backup's snapshot
    sub.release()
    p = _ssh_pull(sshd, m.home, replica)
    _out, err = p.communicate(timeout=120)
    assert p.returncode in (0, 75), err
    assert m.tm.snapshot_code == "user/backup-job" and "backup-job" not in m.left
    # the backup leaves; the pull works and leaves its own snapshot
    m.tm.leave_snapshot("backup-job")
    m.commit_many(5)
    p = _ssh_pull(sshd, m.home, replica)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert m.tm.snapshot_code is None
    m.tm.flush()
    assert_reads_as(replica, m.home)
    report(request, "live_backup", {"refusal": line, "retries": m.enter_calls - calls, "seconds": round(took, 2)})


# --------------------------------------------------------------- full disk

@pytest.fixture
def small_mount(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")  # ci-runs: CI is root
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        pytest.fail("cannot mount a tmpfs for the full-disk test: %s" % r.stderr.strip(), pytrace=False)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _stopped_master(home, n=5):
    create_storage(home, "lawn")
    tm = SimulatedStorage(home).open()
    for _unused in range(n):
        tm.commit({tm.new_oid(): PICKLE_HEAD + os.urandom(2000) + b"."})
    tm.close()


def _commit_big(home, objects, size):
    with SimulatedStorage(home) as tm:
        for _unused in range(objects):
            tm.commit({tm.new_oid(): PICKLE_HEAD + os.urandom(size) + b"."})


def _free(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


@pytest.mark.parametrize("where", ["spool", "apply"])
def test_full_disk_on_the_replica(tmp_path, small_mount, request, where):
    """ENOSPC: a one-line error, the replica unchanged (or, past the commit
    point, completed by the next pull); room made, the next pull works."""
    master = tmp_path / "master"
    _stopped_master(master)
    replica = small_mount / "replica"
    clone(str(master), str(replica))
    free = _free(small_mount)
    # spool: the increment alone does not fit; apply: it fits once, not twice
    total = int(free * 1.5) if where == "spool" else int(free * 0.7)
    _commit_big(master, 4, total // 4)
    before = replica_state(replica)
    proc = subprocess.run([DS_REPLICA, "-q", str(master), str(replica)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode != 0
    line = _one_line_error(proc)
    assert "space" in line.lower(), line
    assert "network" not in line, line  # the replica's disk is the problem, not the link
    pending = (replica / "journal" / "replica.tar").exists()
    if where == "spool":
        assert line.startswith("ds-replica: cannot store the increment"), line
        assert replica_state(replica) == before
        assert not (replica / "misc" / ".replica.incoming").exists()
    else:
        assert line.startswith("ds-replica: cannot apply the increment") and "pending" in line, line
        assert pending
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_mount)], check=True)
    proc = subprocess.run([DS_REPLICA, "-q", str(master), str(replica)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert_reads_as(replica, master)
    assert subprocess.run([DS_REPLICA, "verify", str(replica)], capture_output=True, check=False).returncode == 0
    report(request, "full_disk_" + where, {"error": line, "free_bytes": free, "increment_bytes": total,
                                           "pending_after_error": pending})


# ------------------------------------------------------------- wrong hands

@pytest.fixture
def pair(tmp_path):
    master = tmp_path / "master"
    _stopped_master(master, 20)
    replica = tmp_path / "replica"
    clone(str(master), str(replica))
    _commit_big(master, 40, 20000)
    return master, replica


def test_second_pull_is_refused_at_once(pair):
    master, replica = pair
    slow = subprocess.Popen([DS_REPLICA, "-q", "--bwlimit", "100", str(master), str(replica)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = durable.FileLock(str(replica / "misc" / "lock"))
        _wait(lambda: lock.probe()[0], what="the first pull to lock the replica")
        t0 = time.monotonic()
        proc = subprocess.run([DS_REPLICA, "-q", str(master), str(replica)], capture_output=True, text=True,
                              timeout=30, check=False)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == 75
        line = _one_line_error(proc)
        assert "in use" in line and "pid %d" % slow.pid in line, line
        assert slow.poll() is None, "the first pull did not take long enough"
    finally:
        out, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, err
    assert_reads_as(replica, master)


def test_storage_process_holding_the_replica_is_detected(pair):
    master, replica = pair
    tm = SimulatedStorage(replica).open()  # someone runs a storage on the replica
    try:
        with pytest.raises(errors.Busy, match="in use"):
            pull(str(master), str(replica))
    finally:
        tm.close()
    # a plain flock() from another process, as zc.lockfile takes it
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(replica / "misc" / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        proc = subprocess.run([DS_REPLICA, "-q", str(master), str(replica)], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 75 and "in use" in _one_line_error(proc)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    pull(str(master), str(replica))
    assert_reads_as(replica, master)


def test_replica_written_to_is_refused_as_diverged(pair):
    master, replica = pair
    with SimulatedStorage(replica) as tm:
        tm.commit({0: PICKLE_HEAD + b"someone wrote here."})
    before = replica_state(replica)
    proc = subprocess.run([DS_REPLICA, "-q", str(master), str(replica)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    line = _one_line_error(proc)
    assert "diverged" in line and "clone" in line, line
    assert replica_state(replica) == before


def test_master_packed_past_the_replica_is_refused(pair):
    master, replica = pair
    with SimulatedStorage(master) as tm:
        tm.pack(tm.last_tid)
    before = replica_state(replica)
    proc = subprocess.run([DS_REPLICA, "-q", str(master), str(replica)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "packed since the last replica" in _one_line_error(proc)
    assert replica_state(replica) == before
