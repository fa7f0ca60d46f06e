# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record a metrics history as Prometheus would scrape it from two standbys, for the
dashboard picture (bench/plot_dashboard.py -> docs/grafana/dirstorage-replication.png).

Two live simulated masters (`main`, writing --rate tx/s, and `catalog`, a tenth of that,
each a `python -m tests.support.simulated_storage` process with its snapshot toolkit) and
two standbys (`standby1`, `standby2`), each with a replica of both storages and its own
textfile folder. Every --pull-interval seconds the real cron wrapper (`ds-replica-cron`,
the console script beside this python) pulls each replica, as cron would; every --scrape
seconds the .prom files are read, as node_exporter's textfile collector and Prometheus
would. From 35% to 60% of the run, standby2 loses sight of the `main` master (its path
vanishes), so its pulls fail and catch up afterwards.

    .venv/bin/python bench/record_metrics.py [--seconds 300] [--out docs/grafana/dashboard-history.json]

Writes a JSON list of scrapes {"t", "instance", "storage", "values": {metric: value}}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dirstorage_replica.clone import clone  # noqa: E402
from dirstorage_replica.metrics import metrics_path, read_metrics  # noqa: E402
from tests.support.reliability import MasterProcess  # noqa: E402

CRON = str(Path(sys.executable).with_name("ds-replica-cron"))
STANDBYS = ("standby1", "standby2")
STORAGES = {"main": 1.0, "catalog": 0.1}  # share of --rate each master writes
OUTAGE = ("standby2", "main", 0.35, 0.60)  # who loses its master, from/to (share of the run)
DEFAULT_OUT = ROOT / "docs" / "grafana" / "dashboard-history.json"


class Standby(object):
    """One standby: a replica and a view of the master of each storage, a textfile folder."""

    def __init__(self, work, name, masters):
        self.name = name
        self.textfile = work / name / "textfile"
        self.textfile.mkdir(parents=True)
        self.sources = {}
        for storage, home in masters.items():
            source = work / name / ("master-" + storage)  # the path this standby reaches its master by
            source.symlink_to(home)
            clone(str(home), str(work / name / storage))
            self.sources[storage] = source
        self.running = {}

    def pull(self, storage):
        """Start the cron wrapper for `storage` unless its previous run is still going."""
        proc = self.running.get(storage)
        if proc is not None and proc.poll() is None:
            return
        replica = self.textfile.parent / storage
        self.running[storage] = subprocess.Popen(
            [CRON, "--textfile-dir", str(self.textfile), storage, "--", str(self.sources[storage]), str(replica)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def set_reachable(self, storage, reachable, home):
        source = self.sources[storage]
        if reachable and not source.is_symlink():
            source.symlink_to(home)
        elif not reachable and source.is_symlink():
            source.unlink()

    def scrape(self, now):
        return [{"t": now, "instance": self.name, "storage": storage,
                 "values": read_metrics(metrics_path(str(self.textfile), storage))}
                for storage in self.sources if os.path.exists(metrics_path(str(self.textfile), storage))]

    def wait(self):
        for proc in self.running.values():
            proc.wait()


def record(work, seconds, rate, pull_interval, scrape):
    masters = {}
    procs = []
    try:
        for i, (storage, share) in enumerate(STORAGES.items()):
            home = work / "masters" / storage
            procs.append(MasterProcess(home, rate=rate * share, create="bushy", seed=i + 1))
            masters[storage] = home
        time.sleep(1.0)
        standbys = {name: Standby(work, name, masters) for name in STANDBYS}
        return run_schedule(standbys, masters, seconds, pull_interval, scrape)
    finally:
        for proc in procs:
            proc.stop()


def run_schedule(standbys, masters, seconds, pull_interval, scrape):
    history = []
    start = time.time()
    next_pull = next_scrape = start
    who, storage, down_from, down_to = OUTAGE
    while time.time() < start + seconds:
        now = time.time()
        share = (now - start) / seconds
        standbys[who].set_reachable(storage, not down_from <= share < down_to, masters[storage])
        if now >= next_pull:
            for standby in standbys.values():
                for name in STORAGES:
                    standby.pull(name)
            next_pull += pull_interval
        if now >= next_scrape:
            for standby in standbys.values():
                history.extend(standby.scrape(now))
            next_scrape += scrape
        time.sleep(max(0.0, min(next_pull, next_scrape) - time.time()))
    for standby in standbys.values():
        standby.wait()
    return history


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--seconds", type=float, default=300.0, help="length of the recording")
    p.add_argument("--rate", type=float, default=20.0, help="transactions/s written to the main master")
    p.add_argument("--pull-interval", type=float, default=15.0, help="seconds between scheduled pulls")
    p.add_argument("--scrape", type=float, default=3.0, help="seconds between scrapes of the metrics files")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ds-dashboard-") as tmp:
        history = record(Path(tmp), args.seconds, args.rate, args.pull_interval, args.scrape)
    with open(args.out, "w") as f:
        json.dump(history, f, indent=0)
        f.write("\n")
    print("%d scrapes -> %s" % (len(history), args.out))


if __name__ == "__main__":
    main()
