# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario c: the first copy, `ds-replica clone` against `tar | ssh | tar` (run by bench/run.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil

from harness import DS, WORK, drop_dirty, log, median, secs, timed


def run(bench):
    n = bench.a.clone_n
    info = bench.storage(n, bench.a.k)
    base = info["base"]
    dest = os.path.join(WORK, "clone-dest")
    cl, tr, snaps, res = [], [], [], None
    for _unused in range(bench.a.clone_runs):
        shutil.rmtree(dest, ignore_errors=True)
        drop_dirty()
        wall, text = timed([DS, "clone", "--json", "-q", "-e", bench.ssh, "--remote-command", DS,
                            "%s:%s" % (bench.user_host, base), dest])
        res = json.loads(text)
        cl.append(wall)
        snaps.append(res["snapshot_seconds"])
        shutil.rmtree(dest)
        os.makedirs(dest)
        drop_dirty()
        remote = "tar -cf - -C %s A" % shlex.quote(base)
        pipe = "%s %s %s | tar -xf - -C %s" % (bench.ssh, bench.user_host, shlex.quote(remote), shlex.quote(dest))
        tr.append(timed(["bash", "-o", "pipefail", "-c", pipe])[0])
    shutil.rmtree(dest, ignore_errors=True)
    bench.results["scenarios"]["first_copy"] = {
        "n_revisions": n, "runs": len(cl), "files": res["files"], "bytes": res["bytes"],
        "clone_s": cl, "tar_ssh_s": tr,
        "clone_median_s": median(cl), "tar_ssh_median_s": median(tr),
        "clone_snapshot_s": snaps, "clone_snapshot_median_s": median(snaps),
        "ratio": median(cl) / median(tr)}
    log("clone N=%d: ds-replica clone %s (master in snapshot mode %s), tar|ssh|tar %s"
        % (n, secs(median(cl), 1), secs(median(snaps), 1), secs(median(tr), 1)))
    bench.save()
