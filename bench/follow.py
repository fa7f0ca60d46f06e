# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario "follow" of `make bench`: a live master writing RATE tx/s for
SECONDS, followed by `ds-replica follow` over the loopback sshd.

Measured:
- lag of every transaction: the time the follower applied the increment
  that brought it, minus the transaction's own time (its tid is the commit
  time), p50/p99/max;
- the master's time in snapshot mode (the serve's snapshot_seconds of every
  increment, from before enterSnapshot to after leaveSnapshot) as a share of
  the wall time;
- CPU time of the follower and of the master's `ds-replica serve`, as a
  share of one core.

Run alone: `python bench/follow.py [--seconds S] [--rate R] [--interval I]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from dirstorage_replica import storage  # noqa: E402
from dirstorage_replica.clone import clone  # noqa: E402
from testbed.harness.reliability import FollowerProcess, MasterProcess, serve_pids  # noqa: E402

DS = os.path.join(ROOT, ".venv", "bin", "ds-replica")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user + system CPU seconds of a live process (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def watch_cpu(follower, master_home, seconds, log):
    """Sample the CPU time of the follower and of each serve until `seconds` have passed."""
    serve_cpu = {}
    t_end = time.monotonic() + seconds
    next_log = time.monotonic() + 60
    follower_cpu = 0.0
    while time.monotonic() < t_end:
        time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        for pid in serve_pids(master_home):
            value = cpu_seconds(pid)
            if value is not None:
                serve_cpu[pid] = value
        follower_cpu = cpu_seconds(follower.proc.pid) or follower_cpu
        if time.monotonic() >= next_log:
            next_log += 60
            done = follower.results[-1] if follower.results else {}
            log("follow: %d increments so far, last lag %.3fs"
                % (len(follower.results), done.get("apply_lag_seconds", -1)))
    return follower_cpu, sum(serve_cpu.values()), len(serve_cpu)


def transaction_lags(master_home, results, since):
    """Per transaction: applied_at of the increment that brought it minus its tid time."""
    st = storage.Storage(master_home)
    tids = [t.tid for t in st.chain(stop=since)]
    tids.reverse()
    lags = []
    pos = 0
    for r in sorted(results, key=lambda r: r["after_tid"]):
        after = bytes.fromhex(r["after_tid"])
        while pos < len(tids) and tids[pos] <= after:
            if tids[pos] > bytes.fromhex(r["before_tid"]):
                lags.append(r["applied_at"] - storage.tid_to_epoch(tids[pos]))
            pos += 1
    return sorted(lags), len(tids)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run(workdir, ssh, user_host, seconds=600.0, rate=50.0, interval=0.5, log=print):
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    master_home, replica = os.path.join(workdir, "master"), os.path.join(workdir, "replica")
    # the master flushes its journal as the real engine does (200 transactions, 2,000 files or
    # 3,600 s): at 0.2 tx/s, A/x.serial stays behind for the whole run
    master = MasterProcess(master_home, rate=rate, create="bushy", seed=7)
    try:
        time.sleep(2.0)
        clone(master_home, replica)
        since = storage.Storage(replica).last_tid()
        argv = [DS, "follow", "--json", "--interval", "%g" % interval, "-e", ssh, "--remote-command", DS,
                "%s:%s" % (user_host, master_home), replica]
        follower = FollowerProcess(argv, os.path.join(workdir, "follow.err"))
        t0 = time.monotonic()
        follower_cpu, serve_cpu, serves = watch_cpu(follower, master_home, seconds, log)
        wall = time.monotonic() - t0
        rc = follower.end(signal.SIGTERM)
    finally:
        master.stop()
    lags, written = transaction_lags(master_home, follower.results, since)
    snapshot = sum(r["snapshot_seconds"] for r in follower.results)
    with open(os.path.join(workdir, "follow.err")) as f:
        errors = [line.strip() for line in f if "retrying" in line]
    out = {
        "seconds": round(wall, 1), "rate_tps": rate, "interval_s": interval,
        "master_transactions": written, "achieved_tps": round(written / wall, 1),
        "transactions_followed": len(lags), "increments": len(follower.results),
        "lag_p50_s": _r(percentile(lags, 0.50)), "lag_p99_s": _r(percentile(lags, 0.99)),
        "lag_max_s": _r(lags[-1] if lags else None),
        "snapshot_seconds_total": round(snapshot, 3), "snapshot_share": round(snapshot / wall, 4),
        "follower_cpu_share": round(follower_cpu / wall, 4), "serve_cpu_share": round(serve_cpu / wall, 4),
        "serve_processes": serves, "retries": len(errors), "retry_examples": errors[:3], "follower_exit": rc,
        "loadavg_end": open("/proc/loadavg").read().split()[:3],
    }
    log("follow %.0fs at %g tx/s (interval %gs): lag p50 %.3fs p99 %.3fs max %.3fs; snapshot %.1f%% of wall; "
        "CPU follower %.1f%%, serve %.1f%% of a core"
        % (wall, rate, interval, out["lag_p50_s"] or -1, out["lag_p99_s"] or -1, out["lag_max_s"] or -1,
           100 * out["snapshot_share"], 100 * out["follower_cpu_share"], 100 * out["serve_cpu_share"]))
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _r(x):
    return None if x is None else round(x, 3)


def main(argv=None):
    p = argparse.ArgumentParser(description="bench scenario follow, alone")
    p.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_FOLLOW_SECONDS", 600)))
    p.add_argument("--rate", type=float, default=float(os.environ.get("BENCH_FOLLOW_RATE", 50)))
    p.add_argument("--interval", type=float, default=float(os.environ.get("BENCH_FOLLOW_INTERVAL", 0.5)))
    p.add_argument("--workdir", default=os.path.join(HERE, "results", "work", "follow"))
    a = p.parse_args(argv)
    from testbed.harness.sshd import start_sshd

    sshd = start_sshd(["127.0.0.1"])
    try:
        out = run(a.workdir, sshd.ssh_command_string(), "%s@127.0.0.1" % sshd.user, a.seconds, a.rate, a.interval)
    finally:
        sshd.stop()
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
