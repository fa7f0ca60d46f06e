"""`make real-engine-check`, part two: replication against a running master
of the REAL engine (../shared/real-engine/live_master.py: ZODB commits,
snapshot mode over XML-RPC as Zope's toolkit), through the real sshd of the
tests, judged by the real engine's own reader (read_state.py).

Checks: follow at a busy and a quiet rate (lag of every transaction, and no
snapshot mode while nothing is new), a pull and a clone from the live
master, a re-seed (clone --delta) of a replica that diverged, and a pack
made by the real engine mirrored on a standby.  Prints
one line of figures per check and exits 1 if any failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from dirstorage_replica import storage
from testbed.harness.reliability import DS_REPLICA, FollowerProcess, write_snapshot_conf
from testbed.harness.sshd import start_sshd

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "real-engine"))
PASSWORD = "real-engine-check"
FAILED = []


def real_python():
    python, engine = os.environ.get("DS_REAL_PYTHON"), os.environ.get("DS_REAL_ENGINE")
    if not (python and engine):
        sys.exit("real-engine-check: DS_REAL_ENGINE and DS_REAL_PYTHON are not set: set up the real engine as "
                 "%s/README.md says (fetch, setup.sh), then run the export line it prints" % SHARED)
    return python


def engine_script(name, *args):
    return [real_python(), os.path.join(SHARED, name), *map(str, args)]


def read_state(home, recover=False):
    out = subprocess.run(engine_script("read_state.py", home, *(["--recover"] if recover else [])),
                         capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveMaster(object):
    """live_master.py on `home`, snapshot.conf pointing at its toolkit."""

    def __init__(self, home, rate, workdir):
        port = free_port()
        ready = os.path.join(workdir, "ready-%d" % port)
        self.snapshot_log = os.path.join(workdir, "snapshots-%d" % port)
        env = dict(os.environ, SNAPSHOT_LOG=self.snapshot_log)
        self.proc = subprocess.Popen(engine_script("live_master.py", home, port, "admin:" + PASSWORD, rate, ready),
                                     env=env, stderr=open(os.path.join(workdir, "master-%d.err" % port), "w"))
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("live_master.py did not start (see %s)" % workdir)
            time.sleep(0.1)
        write_snapshot_conf(home, "http://127.0.0.1:%d/DirectoryStorageToolkit" % port, PASSWORD)

    def snapshots(self):
        try:
            with open(self.snapshot_log) as f:
                return [float(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def pause(self):
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)  # a commit under way finishes

    def resume(self):
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def check(name, ok, figures):
    print("%-10s %s  %s" % (name, "ok    " if ok else "FAILED", figures), flush=True)
    if not ok:
        FAILED.append(name)


def lags_of(master_home, results, since):
    st = storage.Storage(master_home)
    tids = sorted(t.tid for t in st.chain(stop=since))
    lags, pos = [], 0
    for r in sorted(results, key=lambda r: r["after_tid"]):
        after, before = bytes.fromhex(r["after_tid"]), bytes.fromhex(r["before_tid"])
        while pos < len(tids) and tids[pos] <= after:
            if tids[pos] > before:
                lags.append(r["applied_at"] - storage.tid_to_epoch(tids[pos]))
            pos += 1
    return sorted(lags), len(tids)


def pct(values, q):
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def ssh_master(sshd, home):
    return ["-e", sshd.ssh_command_string(), "--remote-command", DS_REPLICA, "%s@%s:%s" % (sshd.user, sshd.host, home)]


def ds(*args, timeout=600):
    return subprocess.run([DS_REPLICA, *args], capture_output=True, text=True, timeout=timeout, check=False)


def follow_check(sshd, workdir, name, rate, seconds, idle_seconds=0.0):
    """Follow a live master writing `rate` tx/s for `seconds`; then, writes
    paused, `idle_seconds` in which no snapshot may be taken."""
    home, replica = os.path.join(workdir, name, "master"), os.path.join(workdir, name, "replica")
    os.makedirs(os.path.dirname(home))
    subprocess.run(engine_script("new_storage.py", home, "bushy", 20), check=True, capture_output=True)
    master = LiveMaster(home, rate, workdir)
    try:
        time.sleep(1.0)
        result = ds("clone", *ssh_master(sshd, home), replica)
        assert result.returncode == 0, result.stderr
        since = storage.Storage(replica).last_tid()
        follower = FollowerProcess([DS_REPLICA, "follow", "--json", "--interval", "0.5",
                                    *ssh_master(sshd, home), replica], os.path.join(workdir, name + ".err"))
        time.sleep(seconds)
        master.pause()
        time.sleep(2.0)  # the last commits arrive
        idle_from = time.time()
        time.sleep(idle_seconds)
        idle_snapshots = len([t for t in master.snapshots() if t > idle_from])
        rc = follower.end(signal.SIGTERM)
    finally:
        master.stop()
    lags, written = lags_of(home, follower.results, since)
    same = read_state(home) == read_state(replica)
    figures = {"rate_tps": rate, "seconds": seconds, "transactions": written, "followed": len(lags),
               "lag_p50_s": pct(lags, 0.5), "lag_p99_s": pct(lags, 0.99), "lag_max_s": pct(lags, 1.0),
               "increments": len(follower.results), "idle_s": idle_seconds, "idle_snapshots": idle_snapshots,
               "snapshot_share": round(sum(r.get("snapshot_seconds") or 0 for r in follower.results) / seconds, 4),
               "follower_exit": rc, "replica_reads_as_master": same}
    ok = (same and rc == 0 and lags and len(lags) == written and pct(lags, 0.99) <= 2.0
          and idle_snapshots == 0)
    check(name, ok, figures)
    return figures


def pull_and_clone_check(sshd, workdir):
    """A clone and pulls from a master writing 20 tx/s; the replica reads as the master."""
    home, replica = os.path.join(workdir, "pull", "master"), os.path.join(workdir, "pull", "replica")
    os.makedirs(os.path.dirname(home))
    subprocess.run(engine_script("new_storage.py", home, "chunky", 20), check=True, capture_output=True)
    master = LiveMaster(home, 20, workdir)
    try:
        time.sleep(2.0)
        clone_rc = ds("clone", *ssh_master(sshd, home), replica)
        pulls = []
        for _unused in range(3):
            time.sleep(2.0)
            pulls.append(ds("--json", *ssh_master(sshd, home), replica))
        master.pause()
        last = ds("--json", *ssh_master(sshd, home), replica)
    finally:
        master.stop()
    transactions = [json.loads(p.stdout)["transactions"] for p in pulls + [last] if p.returncode == 0]
    same = read_state(home) == read_state(replica)
    ok = clone_rc.returncode == 0 and all(p.returncode == 0 for p in pulls + [last]) and same
    check("pull", ok, {"clone_exit": clone_rc.returncode, "pull_transactions": transactions,
                       "replica_reads_as_master": same, "errors": [p.stderr.strip() for p in pulls + [last]
                                                                   if p.returncode][:2]})


def hot_follow_check(sshd, workdir, seconds=30.0):
    """A hot follower of a live master, its increments trickled (--bwlimit):
    the read-only service (testbed/fakes/hot_replica.py) answers while they
    travel and is silent only for the applies."""
    from testbed.fakes import hot_replica
    base = os.path.join(workdir, "hot")
    home, replica, log, pidfile = (os.path.join(base, n) for n in ("master", "replica", "answers.log", "pid"))
    os.makedirs(base)
    subprocess.run(engine_script("new_storage.py", home, "lawn", 20), check=True, capture_output=True)
    master = LiveMaster(home, 10, workdir)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    start = "cd %s && %s -m testbed.fakes.hot_replica start %s %s %s" % (root, sys.executable, replica, log, pidfile)
    try:
        time.sleep(1.0)
        assert ds("clone", *ssh_master(sshd, home), replica).returncode == 0
        assert subprocess.run(start, shell=True, check=False).returncode == 0
        t0 = time.time()
        follower = FollowerProcess([DS_REPLICA, "follow", "--json", "--interval", "0.5", "--bwlimit", "100",
                                    "--min-apply-interval", "5", "--stop-command", "kill $(cat %s)" % pidfile,
                                    "--start-command", start, *ssh_master(sshd, home), replica],
                                   os.path.join(workdir, "hot.err"))
        time.sleep(seconds)
        master.pause()
        rc = follower.end(signal.SIGTERM)
        wall = time.time() - t0
    finally:
        master.stop()
    silence, _at = hot_replica.longest_silence(log)
    answers = len(hot_replica.answers(log))
    down = sum(r.get("downtime_seconds") or 0 for r in follower.results)
    served = os.path.exists(pidfile)  # still serving after SIGTERM
    if served:
        subprocess.run("kill $(cat %s)" % pidfile, shell=True, check=False)
        time.sleep(0.5)
    applied = sum(r.get("transactions", 0) for r in follower.results)
    travelled = sum(r.get("elapsed_seconds") or 0 for r in follower.results)
    ok = rc == 0 and served and applied and silence < 2.0 and down < 0.2 * wall
    check("hot-follow", ok, {"seconds": round(wall, 1), "applies": len(follower.results), "transactions": applied,
                             "receive_and_apply_s": round(travelled, 3), "service_answers": answers,
                             "longest_service_gap_s": round(silence, 3), "service_down_s": round(down, 3),
                             "service_down_share": round(down / wall, 4), "service_running_after_sigterm": served})


def resume_check(workdir, share=0.5):
    """A clone of a live master killed after `share` of its bytes, resumed
    with clone --delta: what it receives, against a full clone, counted by
    testbed/ssh_standins/counting_ssh.py."""
    base = os.path.join(workdir, "resume")
    home = os.path.join(base, "master")
    os.makedirs(base)
    subprocess.run(engine_script("new_storage.py", home, "flat", 200), check=True, capture_output=True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    counting = os.path.join(root, "testbed", "ssh_standins", "counting_ssh.py")

    def counted(name, limit, *args):
        count = os.path.join(base, name + ".count")
        proc = ds(*args[:-2], "-e", "%s %s %s %d" % (sys.executable, counting, count, limit), "--remote-command",
                  DS_REPLICA, "m.invalid:" + args[-2], args[-1])
        with open(count) as f:
            return proc, int(f.read())

    master = LiveMaster(home, 5, workdir)
    try:
        time.sleep(1.0)
        master.pause()  # the same storage for the three copies
        whole, full = counted("full", 0, "clone", home, os.path.join(base, "whole"))
        killed, cut = counted("killed", int(full * share), "clone", home, os.path.join(base, "replica"))
        resumed, got = counted("resumed", 0, "clone", "--delta", home, os.path.join(base, "replica"))
    finally:
        master.stop()
    same = resumed.returncode == 0 and read_state(home) == read_state(os.path.join(base, "replica"))
    ok = whole.returncode == 0 and killed.returncode == -9 and same and got <= (1 - share + 0.10) * full
    check("resume", ok, {"full_clone_bytes": full, "killed_after_bytes": cut, "resumed_bytes": got,
                         "resumed_share": round(got / full, 3), "limit_share": 1 - share + 0.10,
                         "replica_reads_as_master": same})


def reseed_check(sshd, workdir):
    """A replica written to by the real engine itself (a promoted standby, a
    split brain), then re-seeded from the master: it reads as the master."""
    home, replica = os.path.join(workdir, "reseed", "master"), os.path.join(workdir, "reseed", "replica")
    os.makedirs(os.path.dirname(home))
    subprocess.run(engine_script("new_storage.py", home, "bushy", 30), check=True, capture_output=True)
    result = ds("clone", home, replica)
    assert result.returncode == 0, result.stderr
    commit = ("import os,sys; sys.path.insert(0, os.environ['DS_REAL_ENGINE']); import transaction, ZODB; "
              "from DirectoryStorage.Full import Full; from DirectoryStorage.Filesystem import Filesystem; "
              "db = ZODB.DB(Full(Filesystem(sys.argv[1]), synchronous=1)); r = db.open().root(); "
              "[(r.__setitem__('div%d' % i, i), transaction.commit()) for i in range(int(sys.argv[2]))]; db.close()")
    subprocess.run([real_python(), "-c", commit, home, "5"], check=True)
    subprocess.run([real_python(), "-c", commit, replica, "4"], check=True)  # the replica diverges
    refused = ds(*ssh_master(sshd, home)[:-1], "%s@%s:%s" % (sshd.user, sshd.host, home), replica)
    master = LiveMaster(home, 5, workdir)
    try:
        time.sleep(1.0)
        reseed = ds("clone", "--delta", "--json", *ssh_master(sshd, home), replica)
        master.pause()
        final = ds(*ssh_master(sshd, home), replica)
    finally:
        master.stop()
    same = read_state(home) == read_state(replica)
    out = json.loads(reseed.stdout) if reseed.returncode == 0 else {}
    listed = ds("kept-aside", "--json", out["kept_aside"]) if out.get("kept_aside") else None
    kept = [t["description"] for t in json.loads(listed.stdout)["transactions"]] if listed else []
    # in place (issue 19): the four transactions the replica wrote itself, and only them, kept aside
    ok = (refused.returncode != 0 and reseed.returncode == 0 and final.returncode == 0 and same
          and out.get("method") == "in-place" and len(out.get("diverged_transactions", [])) == 4 and len(kept) == 4)
    check("reseed", ok, {"pull_refused": refused.stderr.strip()[:90], "reseed_exit": reseed.returncode,
                         "method": out.get("method"), "method_reason": out.get("method_reason"),
                         "reseed_files": out.get("files"), "reseed_bytes": out.get("bytes"),
                         "transactions": out.get("transactions"), "diverged": len(out.get("diverged_transactions", [])),
                         "kept_aside_listed": len(kept), "snapshot_seconds": out.get("snapshot_seconds"),
                         "elapsed_seconds": out.get("elapsed_seconds"),
                         "replica_reads_as_master": same, "error": reseed.stderr.strip()[:200]})


def live_files(home):
    """{logical name: bytes} of A/'s storage files, and the set-aside (-deleted) paths."""
    st = storage.Storage(home)
    files, aside = {}, set()
    for rel, name in st.iter_files("A"):
        if name is None:
            aside.add(rel)
        else:
            with open(os.path.join(st.a_dir, rel), "rb") as f:
                files[name] = f.read()
    return files, aside


def pack_check(sshd, workdir):
    """The real engine packs the master (db.pack(t)) after a standby pulled;
    the next pull mirrors the pack: the standby's A/ holds the master's
    files byte for byte, sets aside what the master set aside, takes its
    x.packed, and reads as the master; the master's horizon names it."""
    home, replica = os.path.join(workdir, "pack", "master"), os.path.join(workdir, "pack", "replica")
    os.makedirs(os.path.dirname(home))
    subprocess.run(engine_script("new_storage.py", home, "bushy", 30), check=True, capture_output=True)
    opened = ("import os,sys,time; sys.path.insert(0, os.environ['DS_REAL_ENGINE']); import transaction, ZODB; "
              "from DirectoryStorage.Full import Full; from DirectoryStorage.Filesystem import Filesystem; "
              "db = ZODB.DB(Full(Filesystem(sys.argv[1]), synchronous=1)); ")
    commit = opened + ("r = db.open().root(); [(r.__setitem__('k%d' % (i % 3), time.time()), transaction.commit()) "
                       "for i in range(int(sys.argv[2]))]; db.close()")
    pack = opened + "db.pack(time.time()); db.close()"
    ssh = ["--standby-name", "real-standby", *ssh_master(sshd, home)]
    assert ds("clone", *ssh, replica).returncode == 0
    subprocess.run([real_python(), "-c", commit, home, "10"], check=True)
    first = ds("--json", *ssh, replica)
    time.sleep(1.0)
    subprocess.run([real_python(), "-c", pack, home], check=True)
    subprocess.run([real_python(), "-c", commit, home, "3"], check=True)
    mirrored = ds("--json", *ssh, replica)
    again = ds("--json", *ssh, replica)
    horizon = ds("horizon", "--json", home)
    (m_files, m_aside), (r_files, r_aside) = live_files(home), live_files(replica)
    out = json.loads(mirrored.stdout) if mirrored.returncode == 0 else {}
    packs = out.get("pack") or {}
    same = read_state(home) == read_state(replica)
    master_packed, replica_packed = storage.Storage(home).packed_tid(), storage.Storage(replica).packed_tid()
    holder = (json.loads(horizon.stdout).get("horizon") or {}).get("standby") if horizon.returncode == 0 else None
    ok = (first.returncode == 0 and mirrored.returncode == 0 and again.returncode == 0 and same
          and m_files == r_files and r_aside <= m_aside and len(r_aside) == packs.get("set_aside")
          and master_packed == replica_packed != storage.ZERO_TID and json.loads(again.stdout)["pack"] is None
          and holder == "real-standby")
    check("pack", ok, {"master_set_aside": len(m_aside), "standby_set_aside": packs.get("set_aside"),
                       "relinked": packs.get("relinked"), "files_equal": m_files == r_files,
                       "files": len(m_files), "packed": storage.hex_tid(replica_packed),
                       "packed_as_master": master_packed == replica_packed, "replica_reads_as_master": same,
                       "second_pull_exchange": (json.loads(again.stdout).get("pack") if again.returncode == 0
                                                else again.stderr.strip()[:90]),
                       "horizon_standby": holder, "stderr": mirrored.stderr.strip()[:200]})


def main():
    real_python()
    workdir = tempfile.mkdtemp(prefix="ds-real-engine-check-")
    sshd = start_sshd(["127.0.0.1"])
    try:
        follow_check(sshd, workdir, "follow-40", 40, float(os.environ.get("REAL_FOLLOW_SECONDS", 30)))
        follow_check(sshd, workdir, "follow-0.2", 0.2, float(os.environ.get("REAL_QUIET_SECONDS", 40)),
                     idle_seconds=5.0)
        pull_and_clone_check(sshd, workdir)
        hot_follow_check(sshd, workdir, float(os.environ.get("REAL_HOT_SECONDS", 30)))
        resume_check(workdir)
        reseed_check(sshd, workdir)
        pack_check(sshd, workdir)
    finally:
        sshd.stop()
        if not FAILED:
            shutil.rmtree(workdir, ignore_errors=True)
    if FAILED:
        print("real-engine-check FAILED: %s (work left in %s)" % (", ".join(FAILED), workdir))
        return 1
    print("real-engine-check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
