# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make bench`: a pull costs what changed, not what exists.

Everything runs in one go against one private OpenSSH sshd on 127.0.0.1
(testbed/harness/sshd.py), with generated storages cached under
bench/results/cache/.  Each timing is the median of BENCH_RUNS runs.

  a. increment vs rsync: pull K new transactions from an N-file storage,
     against `rsync -a -e ssh master/ replica/` and against the limit (issue
     25): tar of exactly the increment's files over the same ssh, one syncfs
     (the pull and the limit take turns going first); each with a new ssh
     connection per run (the headline), then both again through one
     persistent OpenSSH control master (ControlMaster/ControlPersist), which
     takes the per-run handshake out; and one `ds-replica -v` pull broken
     down into local start, ssh setup, serve, transfer and apply
  b. scaling: the same increment from every N in BENCH_N
  c. first copy: `ds-replica clone` against `tar | ssh | tar`
  d. snapshot time: snapshot_seconds / pull wall time for K=1000, also throttled
  e. memory: peak RSS of serve and of the pull for a ~1 GB increment
  f. durable apply: journal.apply_archive (a syncfs every 1,000 files or
     64 MiB, then a final one) against fsync per file and per folder, and
     against a single final syncfs (the engine before bb5a421)
  g. compression (see compression())
  follow: a live master writing BENCH_FOLLOW_RATE tx/s for BENCH_FOLLOW_SECONDS,
     followed by `ds-replica follow` (bench/follow.py): lag of each
     transaction, the master's share of time in snapshot mode, CPU
  h. hot standby: a read-only process serves the replica; the pull stops it
     only for the apply: downtime against the pull's wall time, K=100 and 1000
     (BENCH_ONLY=h; not in the default set)
  r. re-seed (issue 11): the old master of the BENCH_CLONE_N storage with 100
     transactions of its own, re-seeded from the master with `clone --delta`,
     against a full `clone`: time and bytes on the wire (both directions)

Settings (environment or flags): BENCH_N (default 30000,300000), BENCH_K (100),
BENCH_RUNS (3), BENCH_CM_RUNS (persistent-connection runs, default BENCH_RUNS; 0 skips them),
BENCH_K_SNAPSHOT (1000), BENCH_CLONE_N (largest N),
BENCH_CLONE_RUNS (1), BENCH_MEM_MB (1024), BENCH_ONLY (e.g. "a,b,d"), BENCH_CACHE, BENCH_BWLIMIT (KiB/s),
BENCH_FOLLOW_SECONDS (600), BENCH_FOLLOW_RATE (50), BENCH_FOLLOW_INTERVAL (0.5),
BENCH_FOLLOW_DIR (default /dev/shm when writable: the test master's fsyncs then keep its rate on a busy disk),
BENCH_BASELINE_DS (another engine's ds-replica: scenario a times it too, run for run, so that a refactoring
is compared before/after in one run on one machine state).
Results: bench/results/results.json; plot: docs/benchmark-pull-vs-n.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import generate  # noqa: E402
import scenario_compression  # noqa: E402
import scenario_durable  # noqa: E402
import scenario_first_copy  # noqa: E402
import scenario_follow  # noqa: E402
import scenario_hot  # noqa: E402
import scenario_increment  # noqa: E402
import scenario_memory  # noqa: E402
import scenario_reseed  # noqa: E402
import scenario_snapshot  # noqa: E402
from harness import RESULTS, Bench, env_list  # noqa: E402
from report import report  # noqa: E402

# (the --only names that run it, scenario), in the order they run
SCENARIOS = [
    ({"a", "b"}, scenario_increment),
    ({"d"}, scenario_snapshot),
    ({"f"}, scenario_durable),
    ({"e"}, scenario_memory),
    ({"g"}, scenario_compression),
    ({"c"}, scenario_first_copy),
    ({"follow"}, scenario_follow),
    ({"h"}, scenario_hot),
    ({"r"}, scenario_reseed),
]


def main(argv=None):
    p = argparse.ArgumentParser(description="ds-replica benchmarks (make bench)")
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=env_list("BENCH_N", "30000,300000"))
    p.add_argument("--cm-runs", type=int, default=int(os.environ.get("BENCH_CM_RUNS", -1)),
                   help="runs per N through a persistent ssh connection (default: --runs; 0: none)")
    p.add_argument("--k", type=int, default=int(os.environ.get("BENCH_K", 100)))
    p.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    p.add_argument("--k-snapshot", type=int, default=int(os.environ.get("BENCH_K_SNAPSHOT", 1000)))
    p.add_argument("--clone-n", type=int, default=int(os.environ.get("BENCH_CLONE_N", 0)) or None)
    p.add_argument("--clone-runs", type=int, default=int(os.environ.get("BENCH_CLONE_RUNS", 1)),
                   help="a first copy of 300k files takes minutes on this disk: one run by default")
    p.add_argument("--mem-mb", type=int, default=int(os.environ.get("BENCH_MEM_MB", 1024)))
    p.add_argument("--bwlimit", type=int, default=int(os.environ.get("BENCH_BWLIMIT", 0)) or None)
    p.add_argument("--only", default=os.environ.get("BENCH_ONLY", "a,b,c,d,e,f,g,r,follow"))
    p.add_argument("--follow-seconds", type=float, default=float(os.environ.get("BENCH_FOLLOW_SECONDS", 600)))
    p.add_argument("--follow-rate", type=float, default=float(os.environ.get("BENCH_FOLLOW_RATE", 50)))
    p.add_argument("--follow-interval", type=float, default=float(os.environ.get("BENCH_FOLLOW_INTERVAL", 0.5)))
    p.add_argument("--follow-dir", default=os.environ.get("BENCH_FOLLOW_DIR"))
    p.add_argument("--cache", default=os.environ.get("BENCH_CACHE", generate.DEFAULT_CACHE))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--baseline-ds", default=os.environ.get("BENCH_BASELINE_DS"), metavar="PATH",
                   help="scenario a also times this ds-replica (another engine, installed on this machine; "
                        "it serves itself on the master), interleaved with this one's runs")
    p.add_argument("--merge", action="store_true", help="keep other scenarios of an earlier results.json")
    a = p.parse_args(argv)
    a.clone_n = a.clone_n or max(a.n)
    if a.cm_runs < 0:
        a.cm_runs = a.runs
    only = set(a.only.split(","))
    t0 = time.monotonic()
    b = Bench(a)
    b.start()
    try:
        for names, scenario in SCENARIOS:
            if only & names:
                scenario.run(b)
    finally:
        b.stop()
    b.results["total_seconds"] = round(time.monotonic() - t0, 1)
    b.results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    b.save()
    print("\n" + report(b.results))
    print("total %.0fs; results in %s" % (b.results["total_seconds"], os.path.join(RESULTS, "results.json")))
    if not a.no_plot and "increment" in b.results["scenarios"]:
        import plot
        print("plot:", plot.plot(os.path.join(RESULTS, "results.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
