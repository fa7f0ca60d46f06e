# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario g: --compress on text-rich transactions (run by bench/run.py)."""

from __future__ import annotations

import os
import shutil
import time

from harness import WORK, drop_dirty, log, median, sh


def run(bench):
    """A text-rich increment (pickles of CMS-like objects: real ZODB pickles
    compress, the random bytes of the other scenarios do not) pulled with
    and without --compress, on the free loopback and through a 1 MiB/s cap
    (a slow link): bytes on the wire and wall time."""
    import pickle
    import random

    from dirstorage_replica.clone import clone
    from testbed.fakes.simulated_storage import SimulatedStorage, create_storage
    base = os.path.join(WORK, "compress")
    shutil.rmtree(base, ignore_errors=True)
    master, replica0 = os.path.join(base, "master"), os.path.join(base, "replica0")
    create_storage(master, "bushy")
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _unused in range(rng.randint(2, 10)))
             for _unused in range(2000)]

    def commit_some(tm, count):
        for i in range(count):
            objects = {}
            for _unused in range(5):
                text = " ".join(rng.choice(words) for _unused in range(rng.randint(100, 1500)))
                state = {"title": text[:60], "text": text, "modified": time.time(), "owner": "editor%d" % i}
                objects[rng.randint(1, 3000) if tm.last_oid > 3000 else tm.new_oid()] = pickle.dumps(state, 3)
            tm.commit(objects)

    with SimulatedStorage(master) as tm:
        commit_some(tm, 50)
    clone(master, replica0)
    with SimulatedStorage(master) as tm:
        commit_some(tm, 200)
    out = {}
    for link, extra in (("loopback", []), ("1 MiB/s", ["--bwlimit", "1024"])):
        out[link] = {}
        for comp in (False, True):
            walls, wires, res = [], [], None
            for _unused in range(bench.a.runs):
                replica = os.path.join(base, "replica")
                shutil.rmtree(replica, ignore_errors=True)
                sh(["cp", "-a", replica0, replica])
                drop_dirty()
                wall, res = bench.pull(master, replica, extra + (["--compress"] if comp else []))
                walls.append(wall)
                wires.append(res["wire_bytes"])
            out[link]["gzip" if comp else "plain"] = {
                "wall_s": walls, "wall_median_s": median(walls), "wire_bytes": median(wires),
                "bytes": res["bytes"], "transactions": res["transactions"]}
        log("compression %s: plain %.2fs %.1f MB on the wire, gzip %.2fs %.1f MB" % (
            link, out[link]["plain"]["wall_median_s"], out[link]["plain"]["wire_bytes"] / 1e6,
            out[link]["gzip"]["wall_median_s"], out[link]["gzip"]["wire_bytes"] / 1e6))
    shutil.rmtree(base, ignore_errors=True)
    bench.results["scenarios"]["compression"] = out
    bench.save()
