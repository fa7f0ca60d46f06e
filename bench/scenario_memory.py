# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario e: peak memory of the serve and the pull for a large increment (run by bench/run.py)."""

from __future__ import annotations

import os
import shutil

from harness import DS, WORK, drop_dirty, log


def run(bench):
    n = min(bench.a.n)
    out = {}
    for profile, avg in (("large", 560_000), ("medium", 36_000)):
        k = max(1, int(bench.a.mem_mb * 1e6 / avg / 8))
        info = bench.storage(n, k, inc_profile=profile)
        replica = bench.replica_for(info, "mem")
        serve_rss = os.path.join(WORK, "serve-rss.txt")
        wrapper = os.path.join(WORK, "serve-with-time.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec /usr/bin/time -f %%M -o %s %s \"$@\"\n" % (serve_rss, DS))
        os.chmod(wrapper, 0o755)
        pull_rss = os.path.join(WORK, "pull-rss.txt")
        drop_dirty()
        wall, res = bench.pull(info["master"], replica, remote=wrapper,
                               wrap=["/usr/bin/time", "-f", "%M", "-o", pull_rss])
        out[profile] = {"k": k, "files": res["files"], "bytes": res["bytes"], "wall_s": wall,
                        "serve_peak_rss_mb": int(open(serve_rss).read().split()[-1]) / 1024,
                        "pull_peak_rss_mb": int(open(pull_rss).read().split()[-1]) / 1024}
        log("memory (%s objects, %.0f MB in %d files): serve %.0f MB, pull %.0f MB"
            % (profile, res["bytes"] / 1e6, res["files"], out[profile]["serve_peak_rss_mb"],
               out[profile]["pull_peak_rss_mb"]))
        shutil.rmtree(replica)
        bench.results["scenarios"]["memory"] = out
        bench.save()
