# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario h: a hot standby's downtime during a pull (run by bench/run.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys

import generate
from harness import ROOT, WORK, drop_dirty, log, median, secs, sh


def run(bench):
    """A hot standby: a read-only process (testbed/fakes/hot_replica.py) serves the replica; the
    pull stops it only for the apply.  Wall time of the pull, its downtime_seconds (stop command
    to the end of the start command) and the longest silence in the process's answers."""
    from testbed.fakes import hot_replica

    n = min(bench.a.n)
    out = {"n_revisions": n}
    log_path, pidfile = os.path.join(WORK, "hot-answers.log"), os.path.join(WORK, "hot.pid")
    for k in (100, 1000):
        info = bench.storage(n, k)
        replica = bench.replica_for(info, "hot")
        start = "cd %s && %s -m testbed.fakes.hot_replica start %s %s %s" % tuple(
            shlex.quote(x) for x in (ROOT, sys.executable, replica, log_path, pidfile))
        hot = ["--stop-command", "kill $(cat %s)" % shlex.quote(pidfile), "--start-command", start]
        walls, downs, silences = [], [], []
        for _unused in range(bench.a.runs):
            generate.reset_replica(info["base"], replica, info["increment"])
            drop_dirty()
            if os.path.exists(log_path):
                os.unlink(log_path)
            sh(["/bin/sh", "-c", start])
            try:
                wall, res = bench.pull(info["master"], replica, hot)
            finally:
                sh(["/bin/sh", "-c", "kill $(cat %s); while [ -e %s ]; do sleep 0.01; done"
                    % (shlex.quote(pidfile), shlex.quote(pidfile))])
            walls.append(wall)
            downs.append(res["downtime_seconds"])
            silences.append(hot_replica.longest_silence(log_path)[0])
        out[str(k)] = {"files": len(info["increment"]), "bytes": info["increment_bytes"], "wall_s": walls,
                       "downtime_s": downs, "silence_s": silences, "wall_median_s": median(walls),
                       "downtime_median_s": median(downs), "silence_median_s": median(silences)}
        log("hot standby K=%d: down %s of a %s pull (longest silence %s)" % (
            k, secs(median(downs)), secs(median(walls)), secs(median(silences))))
        shutil.rmtree(replica)
    bench.results["scenarios"]["hot"] = out
    bench.save()
