# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario follow: continuous replication of a live master (bench/follow.py) (run by bench/run.py)."""

from __future__ import annotations

import os

import follow as follow_bench
from harness import WORK, log


def run(bench):
    where = bench.a.follow_dir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else WORK)
    out = follow_bench.run(os.path.join(where, "ds-bench-follow"), bench.ssh, bench.user_host,
                           seconds=bench.a.follow_seconds, rate=bench.a.follow_rate,
                           interval=bench.a.follow_interval, log=log)
    out["where"] = where
    bench.results["scenarios"]["follow"] = out
    bench.save()
