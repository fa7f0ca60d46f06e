# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario f: the durable apply against fsync per file and a single final syncfs (run by bench/run.py)."""

from __future__ import annotations

import os
import shutil
import time

from harness import WORK, drop_dirty, log, median
from old_engine import apply_one_syncfs, old_style_apply

from dirstorage_replica import durable, journal, storage


def run(bench):
    info = bench.storage(min(bench.a.n), bench.a.k_snapshot)
    if not getattr(bench, "archive", None):  # scenario d did not run: one pull makes the archive
        replica = bench.replica_for(info, "apply")
        bench.archive = os.path.join(WORK, "increment-k%d.tar" % bench.a.k_snapshot)
        bench.pull(info["master"], replica)
        shutil.copyfile(os.path.join(replica, "misc", "replica.previous"), bench.archive)
        shutil.rmtree(replica)
    new, old, batched, count = [], [], [], 0  # batched: here, the old single-syncfs apply
    runs = max(bench.a.runs, 5)  # cheap, and noisy on a shared disk
    modes = ("engine", "fsync-each", "one-syncfs")
    for i in range(runs):
        for mode in modes[i % 3:] + modes[:i % 3]:
            # a fresh home per run: no unlink/relink churn from a reset in the timed window
            home = os.path.join(WORK, "apply-%s-%d" % (mode, i))
            shutil.rmtree(home, ignore_errors=True)
            for d in ("A", "B", "journal", "misc"):
                os.makedirs(os.path.join(home, d))
            shutil.copytree(os.path.join(info["base"], "config"), os.path.join(home, "config"))
            shutil.copyfile(bench.archive, os.path.join(home, "journal", journal.REPLICA_TAR))
            st = storage.Storage(home)
            drop_dirty()
            t0 = time.monotonic()
            if mode == "engine":
                count = journal.apply_archive(st)
                new.append(time.monotonic() - t0)
            elif mode == "one-syncfs":
                count = apply_one_syncfs(st)
                batched.append(time.monotonic() - t0)
            else:
                count = old_style_apply(st, os.path.join(home, "journal", journal.REPLICA_TAR))
                old.append(time.monotonic() - t0)
            shutil.rmtree(home)
    bench.results["scenarios"]["durable_apply"] = {
        "files": count, "runs": runs, "flush_files": durable.Durability.FLUSH_FILES,
        "flush_bytes": durable.Durability.FLUSH_BYTES,
        "engine_s": new, "fsync_each_s": old, "one_syncfs_s": batched,
        "engine_files_per_s": count / median(new), "fsync_each_files_per_s": count / median(old),
        "one_syncfs_files_per_s": count / median(batched),
        "ratio": median(old) / median(new), "ratio_one_syncfs": median(old) / median(batched)}
    log("durable apply of %d files: engine (syncfs every %d files) %.0f files/s, fsync each %.0f files/s, "
        "one final syncfs %.0f files/s" % (count, durable.Durability.FLUSH_FILES, count / median(new),
                                           count / median(old), count / median(batched)))
    bench.save()
