# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario a + b: a pull against rsync and the limit, and how it scales with N (run by bench/run.py)."""

from __future__ import annotations

import shutil

import generate
from harness import drop_dirty, log, median, secs


def run(bench):
    out = {}
    for n in bench.a.n:
        info = bench.storage(n, bench.a.k)
        replica = bench.replica_for(info, "n%d" % n)
        ds_t, rs_t, lim_t, base_t, res = [], [], [], [], None
        for i in range(bench.a.runs):
            # the pull and the limit read the same files of the master: whichever runs first reads them
            # from a colder cache, so they take turns (the pull first in even runs)
            for which in (("pull", "limit") if i % 2 == 0 else ("limit", "pull")):
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                if which == "pull":
                    wall, res = bench.pull(info["master"], replica)
                    ds_t.append(wall)
                else:
                    lim_t.append(bench.limit(info["master"], replica, info["increment"]))
            if bench.a.baseline_ds:  # the same pull by another engine, interleaved: before/after in one run
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                base = bench.a.baseline_ds
                base_t.append(bench.pull(info["master"], replica, remote=base, ds=base)[0])
            generate.reset_replica(info["base"], replica, info["increment"])
            drop_dirty()
            rs_t.append(bench.rsync(info["master"], replica))
        extra = {"ssh_true_s": bench.handshake(bench.ssh)}
        if base_t:
            extra.update(baseline_ds=bench.a.baseline_ds, baseline_s=base_t, baseline_median_s=median(base_t))
        generate.reset_replica(info["base"], replica, info["increment"])
        drop_dirty()
        extra["breakdown"] = bench.breakdown(info["master"], replica, bench.ssh)
        if bench.a.cm_runs:
            # the same runs through one persistent connection, opened before they start
            bench.open_cm()
            extra["ssh_true_cm_s"] = bench.handshake(bench.ssh_cm)
            ds_c, rs_c = [], []
            for _unused in range(bench.a.cm_runs):
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                bench.open_cm()
                ds_c.append(bench.pull(info["master"], replica, ssh=bench.ssh_cm)[0])
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                bench.open_cm()
                rs_c.append(bench.rsync(info["master"], replica, ssh=bench.ssh_cm))
            generate.reset_replica(info["base"], replica, info["increment"])
            drop_dirty()
            bench.open_cm()
            extra["breakdown_cm"] = bench.breakdown(info["master"], replica, bench.ssh_cm)
            extra.update(ds_replica_cm_s=ds_c, rsync_cm_s=rs_c, ds_replica_cm_median_s=median(ds_c),
                         rsync_cm_median_s=median(rs_c))
            log("N=%d persistent ssh: ds-replica %s, rsync %s (medians); ssh true %s, via the master %s"
                % (n, secs(median(ds_c)), secs(median(rs_c)), secs(extra["ssh_true_s"]),
                   secs(extra["ssh_true_cm_s"])))
        files_total = info["base_facts"]["revisions"] + info["base_facts"]["transactions"] + \
            info["base_facts"]["objects"]
        out[str(n)] = {"n_revisions": n, "files_in_storage": files_total, "k": bench.a.k,
                       "increment_files": res["files"], "increment_bytes": res["bytes"],
                       "ds_replica_s": ds_t, "rsync_s": rs_t, "limit_s": lim_t,
                       "ds_replica_median_s": median(ds_t), "rsync_median_s": median(rs_t),
                       "limit_median_s": median(lim_t),
                       "snapshot_s": res["snapshot_seconds"], **extra}
        log("N=%d: ds-replica %s, rsync %s, the limit (tar of the increment, one syncfs) %s (medians; %d files "
            "in the increment)" % (n, secs(median(ds_t)), secs(median(rs_t)), secs(median(lim_t)), res["files"]))
        shutil.rmtree(replica)
        bench.results["scenarios"]["increment"] = out
        bench.save()
