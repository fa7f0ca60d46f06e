# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario d: how long a pull holds the master in snapshot mode (run by bench/run.py)."""

from __future__ import annotations

import os
import shutil

import generate
from harness import WORK, drop_dirty, log, median, secs


def run(bench):
    n = min(bench.a.n)
    info = bench.storage(n, bench.a.k_snapshot)
    replica = bench.replica_for(info, "snap")
    out = {"n_revisions": n, "k": bench.a.k_snapshot, "increment_bytes": info["increment_bytes"],
           "increment_files": len(info["increment"])}
    bw = bench.a.bwlimit or max(256, int(info["increment_bytes"] / 1024 / 8))  # ~8 s of transfer
    for label, extra in (("free", []), ("bwlimit", ["--bwlimit", str(bw)])):
        walls, snaps = [], []
        for _unused in range(bench.a.runs):
            generate.reset_replica(info["base"], replica, info["increment"])
            drop_dirty()
            wall, res = bench.pull(info["master"], replica, extra)
            walls.append(wall)
            snaps.append(res["snapshot_seconds"])
        out[label] = {"wall_s": walls, "snapshot_s": snaps, "wall_median_s": median(walls),
                      "snapshot_median_s": median(snaps), "share": median(snaps) / median(walls)}
        log("snapshot K=%d %s: %s of %s (%.0f%%)" % (bench.a.k_snapshot, label, secs(median(snaps)),
                                                     secs(median(walls)), 100 * out[label]["share"]))
    out["bwlimit_kib_s"] = bw
    # keep the archive of the last pull for the durable-apply scenario
    bench.archive = os.path.join(WORK, "increment-k%d.tar" % bench.a.k_snapshot)
    shutil.copyfile(os.path.join(replica, "misc", "replica.previous"), bench.archive)
    shutil.rmtree(replica)
    bench.results["scenarios"]["snapshot"] = out
    bench.save()
