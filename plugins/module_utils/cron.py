# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`ds-replica-cron`: one scheduled pull, with metrics for node_exporter.

    ds-replica-cron [--textfile-dir DIR] NAME [--] DS-REPLICA-ARGS...

Runs `ds-replica -q --json DS-REPLICA-ARGS...` as a child process (silent on
success, so cron mails only failures; a crash of the pull cannot stop the
metrics from being written), then writes DIR/dirstorage_NAME.prom (metrics.py).
Exits with ds-replica's exit status (1 if it succeeded but printed no JSON
result, or if the metrics file cannot be written).

The schedule role installs a launcher that calls `main()` with the paths of
the host; pip installs it as the console script `ds-replica-cron`, which runs
the `ds-replica` installed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .metrics import after_failure, after_success, metrics_path, read_metrics, write_metrics

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # node_exporter's textfile collector (Debian)


def _stderr(msg):
    sys.stderr.write("ds-replica-cron: %s\n" % msg)
    sys.stderr.flush()


def default_ds_replica():
    """The `ds-replica` beside this command (pip installs both scripts in one folder), else the one on PATH."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "ds-replica")
    return beside if os.access(beside, os.X_OK) else "ds-replica"


def parse_args(argv, textfile_dir):
    """(textfile folder, storage name, ds-replica's arguments) of the command line."""
    p = argparse.ArgumentParser(prog="ds-replica-cron",
                                description="Run one ds-replica pull and write its metrics for node_exporter.")
    p.add_argument("--textfile-dir", default=textfile_dir,
                   help="node_exporter's textfile collector folder (default: %(default)s)")
    p.add_argument("name", help="the storage's label in the metrics (file dirstorage_NAME.prom)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="ds-replica's arguments, after an optional --")
    opts = p.parse_args(argv)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    return opts.textfile_dir, opts.name, args


def json_result(stdout):
    """The result ds-replica --json printed (its last line), or None."""
    try:
        result = json.loads(stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return result if isinstance(result, dict) else None


def run_pull(ds_replica, args):
    """Run `ds-replica -q --json ARGS` (its stderr goes to ours): (exit status, JSON result or None)."""
    proc = subprocess.run([ds_replica, "-q", "--json", *args], stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        return proc.returncode, None
    result = json_result(proc.stdout)
    if result is None:
        _stderr("ds-replica printed no JSON result")
    return proc.returncode, result


def main(argv=None, ds_replica=None, textfile_dir=TEXTFILE_DIR):
    """One pull, recorded in the metrics file; returns the exit status."""
    textfile_dir, name, args = parse_args(sys.argv[1:] if argv is None else argv, textfile_dir)
    started = time.time()
    rc, result = run_pull(ds_replica or default_ds_replica(), args)
    path = metrics_path(textfile_dir, name)
    previous = read_metrics(path)
    if result is None:
        values = after_failure(previous, started)
    else:
        values = after_success(previous, started, time.time(), result)
    try:
        write_metrics(path, name, values)
    except OSError as e:
        _stderr("cannot write %s: %s" % (path, e))
        return rc or 1
    return 1 if rc == 0 and result is None else rc


if __name__ == "__main__":  # python -m dirstorage_replica.cron
    raise SystemExit(main())
