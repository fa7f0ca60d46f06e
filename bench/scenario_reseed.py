# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario r: re-seeding an old master (`clone --delta`) against a full clone (run by bench/run.py).

At every N of --n: the old master is the base plus 100 transactions of its
own (which the master never saw); the master is the base plus K.  Timed
there, --runs times in alternating order (medians): the in-place re-seed
(`clone --delta`, the default), and a pull of the same increment into a copy
of the base (the master's time in snapshot mode for the same K
transactions).  At --clone-n only (a first copy of 1M files
takes minutes): the tree method (`--tree`) and a full clone, the yardstick of the
issue's ratios."""

from __future__ import annotations

import glob
import json
import os
import shutil

import generate
from harness import DS, WORK, drop_dirty, log, median, secs, timed
from old_engine import ustar_bytes

DIVERGED = 100  # the old master's own transactions


def _old_master(info, path):
    for leftover in [path] + glob.glob(path + ".before-reseed-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    generate.link_copy(info["base"], path)
    generate.add_transactions(path, DIVERGED, seed=11)  # the old master's own, unseen history


def _cleanup(*paths):
    for path in paths:
        for leftover in [path] + glob.glob(path + ".before-reseed-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _reseed(bench, target, old, *extra):
    drop_dirty()
    wall, text = timed([DS, "clone", "--delta", *extra, "--json", "-q", "-e", bench.ssh, "--remote-command", DS,
                        target, old])
    return wall, json.loads(text)


def _in_place_once(bench, info, target, old):
    _old_master(info, old)
    wall, delta = _reseed(bench, target, old)
    return wall, delta


def _pull_once(bench, info, target, plain):
    generate.link_copy(info["base"], plain)
    drop_dirty()
    wall, text = timed([DS, "pull", "--json", "-q", "-e", bench.ssh, "--remote-command", DS, target, plain])
    return wall, json.loads(text)


def _in_place_at(bench, n):
    """The in-place re-seed and a pull of the same increment at N=n, --runs
    pairs in alternating order (whichever runs second reads the master's
    increment from a warm cache), medians."""
    info = bench.storage(n, bench.a.k)
    target = "%s:%s" % (bench.user_host, info["master"])
    old, plain = os.path.join(WORK, "reseed-old"), os.path.join(WORK, "reseed-pull")
    reseeds, pulls = [], []
    for run in range(max(2, bench.a.runs)):
        if run % 2 == 0:
            reseeds.append(_in_place_once(bench, info, target, old))
            pulls.append(_pull_once(bench, info, target, plain))
        else:
            pulls.append(_pull_once(bench, info, target, plain))
            reseeds.append(_in_place_once(bench, info, target, old))
        _cleanup(old, plain)
    delta = reseeds[0][1]
    wall = median([w for w, _d in reseeds])
    figures = {"n_revisions": n, "method": delta["method"],
               "diverged_transactions": len(delta["diverged_transactions"]), "in_place_s": wall,
               "in_place_runs_s": [w for w, _d in reseeds],
               "files": delta["files"], "removed_files": delta["removed_files"],
               "wire_bytes": delta["request_bytes"] + delta["answer_bytes"],
               "snapshot_s": median([d["snapshot_seconds"] for _w, d in reseeds]),
               "snapshot_runs_s": [d["snapshot_seconds"] for _w, d in reseeds],
               "pull_s": median([w for w, _p in pulls]),
               "pull_snapshot_s": median([p["snapshot_seconds"] for _w, p in pulls]),
               "pull_snapshot_runs_s": [p["snapshot_seconds"] for _w, p in pulls]}
    log("re-seed in place N=%d, %d diverged: %s (%s; runs %s), %d files in, %d removed, %.2f MB on the wire; "
        "master in snapshot mode %s (runs %s), for a pull of the same increment %s (runs %s; pull %s)"
        % (n, figures["diverged_transactions"], secs(wall), delta["method"],
           " / ".join(secs(w) for w in figures["in_place_runs_s"]), delta["files"], delta["removed_files"],
           figures["wire_bytes"] / 1e6, secs(figures["snapshot_s"]),
           " / ".join(secs(w) for w in figures["snapshot_runs_s"]), secs(figures["pull_snapshot_s"]),
           " / ".join(secs(w) for w in figures["pull_snapshot_runs_s"]), secs(figures["pull_s"])))
    return figures


def _tree_and_clone(bench, n):
    """The tree method and a full clone at N=n."""
    info = bench.storage(n, bench.a.k)
    target = "%s:%s" % (bench.user_host, info["master"])
    old, full = os.path.join(WORK, "reseed-old"), os.path.join(WORK, "reseed-full")
    _old_master(info, old)
    _cleanup(full)
    d_wall, delta = _reseed(bench, target, old, "--tree")
    drop_dirty()
    f_wall, text = timed([DS, "clone", "--json", "-q", "-e", bench.ssh, "--remote-command", DS, target, full])
    whole = json.loads(text)
    full_wire = ustar_bytes(info["master"])
    _cleanup(old, full)
    return {"n_revisions": n, "tree_method": delta["method"], "tree_s": d_wall, "tree_files": delta["files"],
            "tree_kept_files": delta["kept_files"], "clone_s": f_wall, "clone_files": whole["files"],
            "clone_wire_bytes": full_wire, "clone_snapshot_s": whole["snapshot_seconds"]}


def run(bench):
    sizes = sorted(set(bench.a.n))
    in_place = [_in_place_at(bench, n) for n in sizes]
    clone = _tree_and_clone(bench, bench.a.clone_n)
    at_clone_n = [f for f in in_place if f["n_revisions"] == bench.a.clone_n]
    ratios = {}
    if at_clone_n:
        f = at_clone_n[0]
        ratios = {"time_ratio": f["in_place_s"] / clone["clone_s"],
                  "wire_ratio": f["wire_bytes"] / clone["clone_wire_bytes"],
                  "snapshot_ratio": (f["snapshot_s"] / f["pull_snapshot_s"]) if f["pull_snapshot_s"] else None}
    times = [f["in_place_s"] for f in in_place]
    spread = max(times) / min(times) if times else None
    bench.results["scenarios"]["reseed"] = {"in_place": in_place, "tree_and_clone": clone, **ratios,
                                            "in_place_spread": spread}
    log("re-seed: in place %s; at N=%d the full clone took %s (tree method %s): in place %s of its time, %s of "
        "its bytes, snapshot %s of a pull's; in place across sizes x%s"
        % (", ".join("%s at N=%d" % (secs(f["in_place_s"], 2), f["n_revisions"]) for f in in_place),
           bench.a.clone_n, secs(clone["clone_s"], 1), secs(clone["tree_s"], 1),
           "%.1f%%" % (100 * ratios["time_ratio"]) if ratios else "n/a",
           "%.2f%%" % (100 * ratios["wire_ratio"]) if ratios else "n/a",
           "%.2fx" % ratios["snapshot_ratio"] if ratios.get("snapshot_ratio") else "n/a",
           "%.2f" % spread if spread else "n/a"))
    bench.save()
