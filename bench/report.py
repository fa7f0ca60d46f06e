# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The summary bench/run.py prints at the end: one line or a few per scenario
measured, from results.json's scenarios."""

from __future__ import annotations


def report(results):
    sc = results["scenarios"]
    lines = []
    for link, r in sc.get("compression", {}).items():
        lines.append("g. compression, %d text-rich transactions (%.1f MB), %s: plain %.2fs with %.1f MB on the wire, "
                     "--compress %.2fs with %.1f MB (x%.1f fewer bytes)" % (
                         r["plain"]["transactions"], r["plain"]["bytes"] / 1e6, link, r["plain"]["wall_median_s"],
                         r["plain"]["wire_bytes"] / 1e6, r["gzip"]["wall_median_s"], r["gzip"]["wire_bytes"] / 1e6,
                         r["plain"]["wire_bytes"] / max(1, r["gzip"]["wire_bytes"])))
    inc = sc.get("increment", {})
    ns = sorted(inc, key=int)
    for n in ns:
        r = inc[n]
        lines.append("a. N=%-7s increment %5d files: ds-replica %7.3fs  rsync %7.3fs  -> ds-replica %.1fx faster "
                     "(target >= 20x)" % (n, r["increment_files"], r["ds_replica_median_s"], r["rsync_median_s"],
                                          r["rsync_median_s"] / r["ds_replica_median_s"]))
        if r.get("limit_median_s"):
            lines.append("   the limit (tar of exactly the increment over the same ssh, one syncfs) %7.3fs -> pull is "
                         "x%.2f of it (target <= 1.3x)" % (r["limit_median_s"],
                                                           r["ds_replica_median_s"] / r["limit_median_s"]))
        if "baseline_median_s" in r:
            ratio = r["ds_replica_median_s"] / r["baseline_median_s"]
            lines.append("   baseline engine %s: %7.3fs -> this engine takes x%.2f of its time"
                         % (r["baseline_ds"], r["baseline_median_s"], ratio))
        if "ds_replica_cm_median_s" in r:
            lines.append("   persistent ssh connection: ds-replica %7.3fs  rsync %7.3fs  -> %.1fx "
                         "(ssh true: %.3fs new, %.3fs through the master)"
                         % (r["ds_replica_cm_median_s"], r["rsync_cm_median_s"],
                            r["rsync_cm_median_s"] / r["ds_replica_cm_median_s"], r["ssh_true_s"],
                            r["ssh_true_cm_s"]))
        for key in ("breakdown", "breakdown_cm"):
            bd = r.get(key)
            if bd:
                lines.append("   one -v pull%s: local start %.2f, ssh setup %.2f, serve %.2f (snapshot %.3f), "
                             "transfer tail %.2f, commit %.2f, apply+exit %.2f = %.2fs"
                             % (" (persistent)" if key == "breakdown_cm" else "", bd["local_start_s"],
                                bd["ssh_setup_s"], bd["serve_s"], bd["snapshot_seconds"], bd["transfer_tail_s"],
                                bd["commit_s"], bd["apply_exit_s"], bd["wall_s"]))
    if len(ns) >= 2:
        lo, hi = inc[ns[0]], inc[ns[-1]]
        lines.append("b. N %s -> %s: ds-replica x%.2f (target <= 1.2x), rsync x%.2f"
                     % (ns[0], ns[-1], hi["ds_replica_median_s"] / lo["ds_replica_median_s"],
                        hi["rsync_median_s"] / lo["rsync_median_s"]))
        if "ds_replica_cm_median_s" in lo and "ds_replica_cm_median_s" in hi:
            lines.append("   persistent ssh: ds-replica x%.2f, rsync x%.2f"
                         % (hi["ds_replica_cm_median_s"] / lo["ds_replica_cm_median_s"],
                            hi["rsync_cm_median_s"] / lo["rsync_cm_median_s"]))
    fc = sc.get("first_copy")
    if fc:
        lines.append("c. first copy N=%d (%d files, %.0f MB): clone %.1fs, tar|ssh|tar %.1fs -> x%.2f (target <= 1.3x)"
                     % (fc["n_revisions"], fc["files"], fc["bytes"] / 1e6, fc["clone_median_s"],
                        fc["tar_ssh_median_s"], fc["ratio"]))
    s = sc.get("snapshot")
    if s:
        for label in ("free", "bwlimit"):
            if label in s:
                lines.append("d. K=%d %-7s: snapshot %.3fs of %.3fs wall = %.1f%% (target <= 25%%)"
                             % (s["k"], label, s[label]["snapshot_median_s"], s[label]["wall_median_s"],
                                100 * s[label]["share"]))
    m = sc.get("memory", {})
    for profile, r in m.items():
        lines.append("e. %.0f MB increment of %s objects (%d files): serve %.0f MB, pull %.0f MB peak RSS "
                     "(target < 100 MB)" % (r["bytes"] / 1e6, profile, r["files"], r["serve_peak_rss_mb"],
                                            r["pull_peak_rss_mb"]))
    fo = sc.get("follow")
    if fo:
        lines.append("follow. %.0fs, master at %.1f tx/s (asked %g), interval %gs: lag p50 %.3fs (target <= 0.5s), "
                     "p99 %.3fs (target <= 2s); master in snapshot mode %.1f%% of the time (target <= 5%%); "
                     "CPU follower %.1f%%, serve %.1f%% of a core"
                     % (fo["seconds"], fo["achieved_tps"], fo["rate_tps"], fo["interval_s"], fo["lag_p50_s"],
                        fo["lag_p99_s"], 100 * fo["snapshot_share"], 100 * fo["follower_cpu_share"],
                        100 * fo["serve_cpu_share"]))
    d = sc.get("durable_apply")
    if d:
        lines.append("f. durable apply of %d files: engine (syncfs every %d files) %.0f files/s vs fsync each "
                     "%.0f files/s -> x%.2f"
                     % (d["files"], d["flush_files"], d["engine_files_per_s"], d["fsync_each_files_per_s"],
                        d["ratio"]))
        lines.append("   one final syncfs (before bb5a421): %.0f files/s -> x%.2f against fsync each"
                     % (d["one_syncfs_files_per_s"], d["ratio_one_syncfs"]))
    h = sc.get("hot")
    for k in ("100", "1000"):
        if h and k in h:
            r = h[k]
            lines.append("h. hot standby, K=%s (%d files): storage process down %.3fs (longest silence %.3fs) of a "
                         "%.3fs pull" % (k, r["files"], r["downtime_median_s"], r["silence_median_s"],
                                         r["wall_median_s"]))
    return "\n".join(lines)
