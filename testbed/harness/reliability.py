# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared machinery of the reliability tests (tests/integration/test_reliability.py)
and their long versions (tests/soak/test_soak.py).

- ``MasterProcess``: the test master as a separate process (``python -m
  testbed.fakes.simulated_storage``) writing at a given rate, with its XML-RPC toolkit and
  a ``config/snapshot.conf`` saying ``http URL ACCESS`` + ``nodirect``.
- ``StateLog``: what the replica read like after each pull (newest tid and, per
  object, current tid and pickle MD5), checked at the end, object by object,
  against the master's own history (its revision and transaction files are
  write-once, and the test master never packs here): the replica must read
  exactly as the master did at the replica's newest transaction.
- ``run_live_writes``, ``run_pull_kills`` and ``run_follow_kills``: the
  scenarios that the integration tests run briefly and the soak runs long.
- ``report``: put a test's figures in ``tests/output/reliability.json`` and on
  the pytest terminal (whatever ``-s`` says).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dirstorage_replica import durable, errors, journal, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.options import PullOptions
from dirstorage_replica.replica import pull
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage

ROOT = Path(__file__).resolve().parent.parent.parent
DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))
OUTPUT = ROOT / "tests" / "output" / "reliability.json"
TOOLKIT_USER = "admin"


# ------------------------------------------------------------------ report

SUMMARY_KEY = pytest.StashKey()


def report(request, name, figures):
    """Record `figures` (a dict) under `name` in tests/output/reliability.json
    and write one summary line on the pytest terminal, even under capture."""
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(OUTPUT.read_text())
    except (OSError, ValueError):
        data = {}
    figures = dict(figures, recorded=time.strftime("%Y-%m-%dT%H:%M:%S"))
    data[name] = figures
    OUTPUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    line = "%s: %s" % (name, ", ".join("%s=%s" % (k, v) for k, v in sorted(figures.items()) if k != "recorded"))
    print(line)
    # shown in the run's closing summary (tests/conftest.py), whatever the capture mode
    request.config.stash.setdefault(SUMMARY_KEY, []).append(line)
    return line


# ------------------------------------------------------------- the master

def write_snapshot_conf(home, url, password, extra=("nodirect",)):
    """config/snapshot.conf: ``http URL toolkit.access`` then `extra` lines."""
    config = os.path.join(home, "config")
    durable.write_atomic(os.path.join(config, "toolkit.access"), ("%s:%s\n" % (TOOLKIT_USER, password)).encode(),
                         mode=0o600)
    lines = ["http %s toolkit.access" % url] + list(extra)
    durable.write_atomic(os.path.join(config, "snapshot.conf"), ("\n".join(lines) + "\n").encode())


class MasterProcess(object):
    """``python -m testbed.fakes.simulated_storage HOME ...`` in its own process."""

    def __init__(self, home, rate=0.0, create=None, seed=None, journal_args=()):
        self.home = str(home)
        self.password = "pw-%d" % random.randrange(10 ** 9)
        argv = [sys.executable, "-m", "testbed.fakes.simulated_storage", self.home, "--rate", str(rate),
                "--xmlrpc-port", "0", "--user", TOOLKIT_USER, "--password", self.password] + list(journal_args)
        if create:
            argv += ["--create", create]
        if seed is not None:
            argv += ["--seed", str(seed)]
        self.proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError("the test master did not start: %r %s" % (line, self.proc.stderr.read()))
        self.url = line.split()[1]
        write_snapshot_conf(self.home, self.url, self.password)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM: a clean close (journal flushed into A/, misc/snapshot
        ``shutdown``).  Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        if self.proc.returncode != 0:
            raise AssertionError("the test master failed (%s): %s" % (self.proc.returncode, err))
        return self.proc.returncode


# ---------------------------------------------------- states and checks

def replica_digest(path, since=None):
    """(newest tid, {oid: (current tid, pickle md5)}) of a storage at rest.

    Also walks the transaction chain down to `since` (checking every
    transaction file's MD5): the replica holds whole transactions only.
    Objects are oids 0..x.oid that have a current-revision file."""
    st = storage.Storage(path)
    tid = st.last_tid()
    for _txn in st.chain(newest=tid, stop=since if since is not None and since <= tid else storage.ZERO_TID):
        pass
    objects = {}
    for oid_int in range(int.from_bytes(st.last_oid(), "big") + 1):
        oid = oid_int.to_bytes(8, "big")
        try:
            ctid, pickle = st.load(oid)
        except FileNotFoundError:
            continue
        objects[oid_int] = (ctid, hashlib.md5(pickle).hexdigest())
    return tid, objects


class StateLog(object):
    """States seen on a replica; `check(master_home)` compares each with the
    master's state at the same transaction, object by object."""

    def __init__(self):
        self.states = []  # (label, tid, objects)
        self._last_tid = None

    def record(self, replica, label=""):
        tid, objects = replica_digest(replica, since=self._last_tid)
        self._last_tid = tid
        self.states.append((label, tid, objects))
        return tid

    def record_recovered(self, replica, label=""):
        """Record a replica whose pulling process was killed: recovered first,
        as any tool opening it would."""
        st = storage.Storage(replica)
        with st.lock(), st.sublock():
            journal.recover(st)
        assert st.journal_entries() == [], "%s: the journal is not empty after recovery" % label
        return self.record(replica, label)

    def forget_chain_position(self):
        """The replica was replaced (restored from an older copy)."""
        self._last_tid = None

    def check(self, master_home):
        """Every recorded state equals the master's at that tid.  Needs the
        master at rest with its whole history in A/ (stopped cleanly, never
        packed).  Returns the number of (state, object) pairs compared."""
        st = storage.Storage(master_home)
        history = list(st.chain())
        history.reverse()
        md5_cache = {}

        def md5_of(oid_int, tid):
            key = (oid_int, tid)
            if key not in md5_cache:
                rev = storage.parse_revision(st.read(storage.revision_name(oid_int.to_bytes(8, "big"), tid)))
                md5_cache[key] = hashlib.md5(rev.pickle).hexdigest()
            return md5_cache[key]

        known = {t.tid for t in history}
        compared = 0
        current = {}
        pos = 0
        for label, tid, objects in sorted(self.states, key=lambda s: s[1]):
            assert tid == storage.ZERO_TID or tid in known, (
                "%s: replica tid %s is not a transaction of the master" % (label, storage.hex_tid(tid)))
            while pos < len(history) and history[pos].tid <= tid:
                for oid in history[pos].oids:
                    current[int.from_bytes(oid, "big")] = history[pos].tid
                pos += 1
            assert set(objects) == set(current), (
                "%s at %s: objects differ: only on replica %s, only on master %s"
                % (label, storage.hex_tid(tid), sorted(set(objects) - set(current))[:10],
                   sorted(set(current) - set(objects))[:10]))
            for oid_int, ctid in current.items():
                got = objects[oid_int]
                assert got[0] == ctid, "%s at %s: object %d has serial %s, master %s" % (
                    label, storage.hex_tid(tid), oid_int, storage.hex_tid(got[0]), storage.hex_tid(ctid))
                assert got[1] == md5_of(oid_int, ctid), "%s at %s: object %d pickle differs" % (
                    label, storage.hex_tid(tid), oid_int)
                compared += 1
        return compared


# --------------------------------------------------------------- scenarios

def run_live_writes(workdir, seconds, rate=50.0, interval=1.0, fmt="bushy", seed=1):
    """A master process writing `rate` tx/s; a standby pulling every
    `interval` seconds for `seconds`.  Every pull succeeds or fails
    retryably; every state reached is checked against the master at the end."""
    workdir = Path(workdir)
    master_home = workdir / "master"
    replica = workdir / "replica"
    master = MasterProcess(master_home, rate=rate, create=fmt, seed=seed)
    log = StateLog()
    lags, elapsed, snap = [], [], []
    failures = []
    stats = {"pulls": 0, "ok": 0, "retryable_failures": 0, "transactions": 0, "bytes": 0,
             "pulls_with_transactions": 0}
    try:
        time.sleep(1.0)
        clone(str(master_home), str(replica))  # the first copy, from the live master
        log.record(replica, "clone")
        stats["transactions_at_clone"] = sum(1 for _unused in storage.Storage(replica).chain())
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            assert master.alive(), "the test master died"
            stats["pulls"] += 1
            try:
                result = pull(str(master_home), str(replica), PullOptions(snapshot_timeout=5))
            except errors.DSError as e:
                # only the retryable kinds are allowed, with a one-line message
                assert e.retryable, "pull %d failed for good: %s" % (stats["pulls"], e)
                assert "\n" not in str(e)
                stats["retryable_failures"] += 1
                failures.append(str(e))
            else:
                stats["ok"] += 1
                stats["transactions"] += result["transactions"]
                stats["pulls_with_transactions"] += result["transactions"] > 0
                stats["bytes"] += result["bytes"]
                lags.append(result["lag_seconds"])
                elapsed.append(result["elapsed_seconds"])
                snap.append(result["snapshot_seconds"])
            st = storage.Storage(replica)
            assert st.journal_entries() == [] and st.snapshot_code() == "shutdown"
            assert not (replica / "misc" / ".replica.incoming").exists()
            log.record(replica, "pull %d" % stats["pulls"])
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        master.stop()
    # one last pull from the stopped master: the replica catches up exactly
    stats["final_transactions"] = pull(str(master_home), str(replica))["transactions"]
    log.record(replica, "final")
    assert storage.Storage(replica).last_tid() == storage.Storage(master_home).last_tid()
    stats["states_checked"] = len(log.states)
    stats["objects_compared"] = log.check(master_home)
    stats["objects"] = len(log.states[-1][2])
    stats["master_transactions"] = sum(1 for _unused in storage.Storage(master_home).chain())
    stats["lag_max_s"] = round(max(lags), 3) if lags else None
    stats["lag_median_s"] = round(statistics.median(lags), 3) if lags else None
    stats["pull_elapsed_max_s"] = round(max(elapsed), 3) if elapsed else None
    stats["snapshot_max_s"] = round(max(snap), 3) if snap else None
    stats["seconds"] = seconds
    stats["rate_tps"] = rate
    if failures:
        stats["failure_examples"] = sorted(set(failures))[:3]
    return stats


def _copy_tree(src, dst):
    subprocess.run(["rm", "-rf", str(dst)], check=True)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def _classify_kill(replica, before_tid):
    st = storage.Storage(replica)
    if os.path.exists(os.path.join(st.journal_dir, journal.REPLICA_TAR)):
        return "applying"        # past the commit point: recovery finishes it
    if st.last_tid() != before_tid:
        return "after-apply"
    if os.path.exists(st.sub("misc", ".replica.incoming")):
        return "transfer"
    return "before-transfer"


def run_pull_kills(workdir, kills, history=600, rate=10.0, seed=11, verify_every=1):
    """SIGKILL `ds-replica` pulls at random moments; after each kill the
    replica is at a transaction boundary and the next pull succeeds.

    The master is a running test-master process (toolkit snapshot mode,
    `nodirect`), so a pull killed while it holds the master's snapshot leaves
    it behind, and the next pull must leave that stale snapshot first."""
    rng = random.Random(seed)
    workdir = Path(workdir)
    master_home = workdir / "master"
    base = workdir / "base"
    replica = workdir / "replica"
    # a replica at an early point, then a long history after it
    create_storage(master_home, "chunky")
    tm = SimulatedStorage(master_home).open()
    for i in range(5):
        tm.commit({tm.new_oid(): PICKLE_HEAD + rng.randbytes(3000) + b"."}, description=b"early %d" % i)
    tm.close()
    clone(str(master_home), str(base))
    _extend_history(master_home, history, rng)
    master = MasterProcess(master_home, rate=rate, seed=seed)
    log = StateLog()
    kinds = {}
    stats = {"kills": 0, "stale_snapshots_left_behind": 0, "recovered_by_test": 0, "recovered_by_next_pull": 0,
             "verify_runs": 0}
    durations = []
    try:
        # a baseline pull to learn how long a whole pull takes
        _copy_tree(base, replica)
        t0 = time.monotonic()
        proc = subprocess.run([DS_REPLICA, "-q", "--json", str(master_home), str(replica)], capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        full = time.monotonic() - t0
        durations.append(full)
        stats["baseline_pull_s"] = round(full, 3)
        stats["baseline_files"] = json.loads(proc.stdout)["files"]
        log.forget_chain_position()
        log.record(replica, "baseline")
        for n in range(kills):
            assert master.alive(), "the test master died"
            _copy_tree(base, replica)
            log.forget_chain_position()
            before = storage.Storage(replica).last_tid()
            delay = rng.uniform(0.0, full * 1.1)
            p = subprocess.Popen([DS_REPLICA, "-q", str(master_home), str(replica)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stderr.close()
            stats["kills"] += 1
            kind = _classify_kill(replica, before) if p.returncode == -signal.SIGKILL else "finished-first"
            kinds[kind] = kinds.get(kind, 0) + 1
            if "ds-replica-" in (storage.Storage(master_home).snapshot_code() or "") and \
                    storage.Storage(master_home).snapshot_code().endswith("-%d" % p.pid):
                stats["stale_snapshots_left_behind"] += 1
            st = storage.Storage(replica)
            if n % 2 == 0:
                # open the replica as any tool would: recovery gives a transaction boundary
                with st.lock(), st.sublock():
                    report_ = journal.recover(st)
                if report_["replica_tar"]:
                    stats["recovered_by_test"] += 1
                assert st.journal_entries() == []
                log.record(replica, "after kill %d (%s, %.3fs)" % (n, kind, delay))
            elif kind == "applying":
                stats["recovered_by_next_pull"] += 1
            t0 = time.monotonic()
            proc = subprocess.run([DS_REPLICA, "-q", "--json", "--snapshot-timeout", "10", str(master_home),
                                   str(replica)], capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, "pull after kill %d (%s) failed: %s" % (n, kind, proc.stderr)
            durations.append(time.monotonic() - t0)
            assert storage.Storage(replica).journal_entries() == []
            log.record(replica, "pull after kill %d (%s)" % (n, kind))
            if verify_every and n % verify_every == 0:
                v = subprocess.run([DS_REPLICA, "verify", str(replica)], capture_output=True, text=True, timeout=120,
                                   check=False)
                assert v.returncode == 0, "verify after kill %d (%s): %s%s" % (n, kind, v.stdout, v.stderr)
                stats["verify_runs"] += 1
    finally:
        master.stop()
    assert storage.Storage(master_home).snapshot_code() == "shutdown"
    stats["kill_points"] = dict(sorted(kinds.items()))
    stats["states_checked"] = len(log.states)
    stats["objects_compared"] = log.check(master_home)
    stats["pull_max_s"] = round(max(durations), 3)
    return stats


def _extend_history(home, transactions, rng, large_every=25, large_size=150_000):
    """Commit `transactions` more transactions on a stopped master (no fsync:
    building the history fast; the bytes are what matters)."""
    tm = SimulatedStorage(home).open()
    tm.store.sync = False
    try:
        for i in range(transactions):
            batch = {}
            for _unused in range(rng.randint(1, 4)):
                if tm.last_oid < 400 and rng.random() < 0.5:
                    oid = tm.new_oid()
                else:
                    oid = rng.randint(0, tm.last_oid)
                size = large_size if i % large_every == large_every - 1 else rng.randint(2000, 6000)
                batch[oid] = PICKLE_HEAD + rng.randbytes(size) + b"."
            tm.commit(batch, description=b"history %d" % i)
    finally:
        tm.store.sync = True
        tm.close()


# ------------------------------------------------------------ follow kills

class FollowerProcess(object):
    """`ds-replica follow --json ...` (`argv`); its JSON lines (one per
    increment) are collected by a thread."""

    def __init__(self, argv, stderr_path):
        self.stderr = open(stderr_path, "a")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.results = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.results.append(json.loads(line))

    @classmethod
    def over_ssh(cls, sshd, master_home, replica, stderr_path, interval=0.2):
        """Following `master_home` through the test sshd."""
        return cls([DS_REPLICA, "follow", "--json", "--interval", str(interval), "-e", sshd.ssh_command_string(),
                    "%s@%s:%s" % (sshd.user, sshd.host, master_home), str(replica)], stderr_path)

    def ssh_clients(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "ssh"], capture_output=True, text=True,
                             check=False).stdout
        return [int(p) for p in out.split()]

    def end(self, sig):
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        finally:
            self._reader.join(timeout=10)
            self.stderr.close()
        return self.proc.returncode


def serve_pids(master_home):
    """The `ds-replica serve` processes of this master (no other test's)."""
    out = subprocess.run(["pgrep", "-f", "ds-replica serve %s" % master_home], capture_output=True, text=True,
                         check=False).stdout
    return [int(p) for p in out.split()]


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))


def _sample(replica, log, label):
    """Record the replica's state when no follower is applying (its lock is
    free): a follower that wants it meanwhile backs off and tries again."""
    st = storage.Storage(replica)
    lock = st.lock()
    deadline = time.monotonic() + 2.0
    while not lock.acquire():  # the follower applies for a few milliseconds at a time
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    try:
        log.record(replica, label)
    finally:
        lock.release()
    return True


def _kill(kind, follower, master_home):
    """SIGKILL the follower, the master's serve or the ssh client; returns the pids."""
    if kind == "follower":
        follower.proc.kill()
        return [follower.proc.pid]
    pids = serve_pids(master_home) if kind == "serve" else follower.ssh_clients()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def _continuous(lives):
    """Increments in the order applied, for each life of the follower: each
    starts exactly where the previous ended (across a killed follower: not
    before, since recovery may have finished an increment it did not report)."""
    flat = [r for life in lives for r in life]
    for prev, cur in zip(flat, flat[1:], strict=False):
        assert cur["before_tid"] >= prev["after_tid"], "increment applied out of order: %s then %s" % (prev, cur)
    for life in lives:
        for prev, cur in zip(life, life[1:], strict=False):
            assert cur["before_tid"] == prev["after_tid"], "transactions missing between %s and %s" % (prev, cur)
    assert all(r["after_tid"] > r["before_tid"] and r["transactions"] > 0 for r in flat)
    return flat


KILL_KINDS = ("follower", "serve", "ssh")


def run_follow_kills(workdir, sshd, seconds, rate=50.0, kill_every=8.0, seed=21, recover_within=45.0):
    """A master writing `rate` tx/s for `seconds`, followed over ssh by
    `ds-replica follow`; every `kill_every` s the follower, the master's
    serve or the ssh client (in turn) is SIGKILLed.  A killed follower is
    started again (as systemd's Restart=always does); the others must be
    recovered by the follower alone.  Every sampled state of the replica is
    checked against the master at the end."""
    workdir = Path(workdir)
    master_home, replica = workdir / "master", workdir / "replica"
    master = MasterProcess(master_home, rate=rate, create="bushy", seed=seed)
    log = StateLog()
    stats = {"kills": dict.fromkeys(KILL_KINDS, 0), "samples": 0, "recovery_max_s": 0.0}
    lives = []
    try:
        time.sleep(1.0)
        clone(str(master_home), str(replica))
        log.record(replica, "clone")
        follower = FollowerProcess.over_ssh(sshd, master_home, replica, workdir / "follow.err")
        t_end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < t_end or min(stats["kills"].values()) < 2:
            time.sleep(kill_every / 2)
            stats["samples"] += _sample(replica, log, "sample %d" % n)
            time.sleep(kill_every / 2)
            kind = KILL_KINDS[n % len(KILL_KINDS)]
            t_kill = time.monotonic()
            if not _kill(kind, follower, master_home):
                continue  # nothing to kill at this instant (reconnecting): try again next turn
            n += 1
            stats["kills"][kind] += 1
            if kind == "follower":
                follower.proc.wait()
                lives.append(follower.results)
                log.record_recovered(replica, "after killing the follower %d" % n)
                follower = FollowerProcess.over_ssh(sshd, master_home, replica, workdir / "follow.err")
            assert master.alive(), "the test master died"
            time.sleep(0.5)  # transactions committed after the kill, which the follower must bring
            target = storage.Storage(master_home).last_tid()
            done = _wait_for(lambda tid=target: storage.Storage(replica).last_tid() >= tid, recover_within,
                             "the follower to recover from killing the %s" % kind)
            stats["recovery_max_s"] = max(stats["recovery_max_s"], round(done - t_kill, 3))
        assert follower.end(signal.SIGTERM) == 0, "SIGTERM: the follower did not exit 0"
        lives.append(follower.results)
        _wait_for(lambda: not serve_pids(master_home), 15, "the master's serve to end")
        assert not (storage.Storage(master_home).snapshot_code() or "").startswith("user/ds-replica"), \
            "a snapshot was left held on the master"
        st = storage.Storage(replica)
        assert st.journal_entries() == [] and not os.path.exists(st.sub("misc", ".replica.incoming"))
        log.record(replica, "after SIGTERM")
    finally:
        master.stop()
    results = _continuous(lives)
    pull(str(master_home), str(replica))
    log.record(replica, "final")
    stats.update(_follow_figures(results, log, master_home, seconds, rate))
    stats["messages"] = _one_line_messages(workdir / "follow.err")
    return stats


def _one_line_messages(path):
    """The follower's stderr: every line one message; a few distinct ones."""
    lines = Path(path).read_text().splitlines()
    assert all(line.startswith("ds-replica: ") for line in lines) and "Traceback" not in "".join(lines), lines[:20]
    kinds = sorted({re.sub(r"[0-9A-F]{16}|\d+(\.\d+)?", "N", line) for line in lines})
    return kinds[:8]


def _follow_figures(results, log, master_home, seconds, rate):
    lags = sorted(r["apply_lag_seconds"] for r in results)
    return {
        "states_checked": len(log.states),
        "objects_compared": log.check(master_home),
        "increments": len(results),
        "transactions_followed": sum(r["transactions"] for r in results),
        "master_transactions": sum(1 for _unused in storage.Storage(master_home).chain()),
        "newest_lag_p50_s": lags[len(lags) // 2] if lags else None,
        "newest_lag_max_s": lags[-1] if lags else None,
        "seconds": seconds,
        "rate_tps": rate,
    }
