# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario r: re-seeding an old master (`clone --delta`) against a full clone (run by bench/run.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil

import generate
from harness import DS, WORK, drop_dirty, log, secs, timed
from old_engine import ustar_bytes


def run(bench):
    """The N storage's old master, 100 transactions of its own past the
    base (which the master never saw), re-seeded from the master (base +
    K) with clone --delta, against a full clone of the master; one run
    each, bytes on the wire in both directions."""
    n = bench.a.clone_n
    info = bench.storage(n, bench.a.k)
    master = info["master"]
    old = os.path.join(WORK, "reseed-old")
    full = os.path.join(WORK, "reseed-full")
    for path in [old, full] + glob.glob(old + ".before-reseed-*"):
        shutil.rmtree(path, ignore_errors=True)
    generate.link_copy(info["base"], old)
    generate.add_transactions(old, 100, seed=11)  # the old master's own, unseen history
    drop_dirty()
    target = "%s:%s" % (bench.user_host, master)
    d_wall, text = timed([DS, "clone", "--delta", "--json", "-q", "-e", bench.ssh, "--remote-command", DS,
                          target, old])
    delta = json.loads(text)
    drop_dirty()
    f_wall, text = timed([DS, "clone", "--json", "-q", "-e", bench.ssh, "--remote-command", DS, target, full])
    whole = json.loads(text)
    full_wire = ustar_bytes(master)
    delta_wire = delta["request_bytes"] + delta["answer_bytes"]
    bench.results["scenarios"]["reseed"] = {
        "n_revisions": n, "method": delta["method"], "diverged_transactions": len(delta["diverged_transactions"]),
        "delta_s": d_wall, "clone_s": f_wall, "time_ratio": d_wall / f_wall,
        "delta_files": delta["files"], "delta_kept_files": delta["kept_files"],
        "delta_removed_files": delta["removed_files"], "delta_request_bytes": delta["request_bytes"],
        "delta_answer_bytes": delta["answer_bytes"], "delta_wire_bytes": delta_wire,
        "clone_files": whole["files"], "clone_wire_bytes": full_wire, "wire_ratio": delta_wire / full_wire,
        "delta_snapshot_s": delta["snapshot_seconds"], "clone_snapshot_s": whole["snapshot_seconds"]}
    log("re-seed N=%d after %d diverged transactions: clone --delta (%s) %s (%d files in, %.1f MB on the wire), "
        "full clone %s (%.1f MB): %.1f%% of the time, %.2f%% of the bytes"
        % (n, len(delta["diverged_transactions"]), delta["method"], secs(d_wall, 1), delta["files"],
           delta_wire / 1e6,
           secs(f_wall, 1), full_wire / 1e6, 100 * d_wall / f_wall, 100 * delta_wire / full_wire))
    for path in [old, full] + glob.glob(old + ".before-reseed-*"):
        shutil.rmtree(path, ignore_errors=True)
    bench.save()
