# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replication metrics file for node_exporter's textfile collector.

One file per storage, `DIR/dirstorage_<name>.prom`, in the Prometheus text
format: every metric `dirstorage_replication_<metric>{storage="<name>"}` with
its HELP and TYPE lines. It is replaced atomically (temporary file, fsync,
rename), so the collector never reads half a file.

A failed pull keeps the last success's time and figures (so an alert on
`time() - last_success_timestamp_seconds` sees staleness), and sets
`last_result` 0 and the attempt time. The values are computed here
(`after_success`, `after_failure`); whoever runs the pulls (the cron wrapper,
cron.py) records them with `write_metrics`.
"""

from __future__ import annotations

import os
import tempfile

PREFIX = "dirstorage_replication_"
METRICS = (
    ("last_success_timestamp_seconds", "gauge", "Unix time of the last successful pull."),
    ("last_attempt_timestamp_seconds", "gauge", "Unix time of the last pull attempt."),
    ("last_result", "gauge", "1 if the last pull succeeded, 0 if it failed."),
    ("lag_seconds", "gauge", "Master's newest transaction time minus the replica's, after the last successful pull."),
    ("transactions", "gauge", "Transactions received by the last successful pull."),
    ("bytes", "gauge", "Bytes of file content received by the last successful pull."),
    ("snapshot_seconds", "gauge", "Time the master was held in snapshot mode by the last successful pull."),
    ("downtime_seconds", "gauge", "Time a hot standby's storage process was stopped by the last successful pull."),
    # a master's (ds-replica horizon --metrics): where its standbys stand, which bounds how far it may be packed
    ("standbys", "gauge", "Standbys whose position the master records (misc/standbys)."),
    ("silent_standbys", "gauge", "Recorded standbys not heard from within ds-replica horizon --max-age."),
    ("horizon_age_seconds", "gauge", "Age of the oldest transaction a recorded standby holds (packing past it "
                                     "strands that standby)."),
    ("horizon_holder_silence_seconds", "gauge", "Seconds since the master last heard from the standby that holds "
                                                "the oldest position."),
)
# A master's metrics (ds-replica horizon --metrics); every other one is a standby's.
MASTER_METRICS = ("standbys", "silent_standbys", "horizon_age_seconds", "horizon_holder_silence_seconds")
# The figures of a pull's result (ds-replica --json) that the metrics keep.
RESULT_FIGURES = ("lag_seconds", "transactions", "bytes", "snapshot_seconds", "downtime_seconds")


def metrics_path(textfile_dir, name):
    """The metrics file of storage `name` in the collector's folder."""
    return os.path.join(textfile_dir, "dirstorage_%s.prom" % name)


def escape_label(value):
    """A label value as the text format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_metrics(name, values):
    """The file's text: HELP, TYPE and sample lines of each metric in `values`, in METRICS order."""
    lines = []
    for metric, kind, help_text in METRICS:
        if metric not in values:
            continue
        full = PREFIX + metric
        lines.append("# HELP %s %s" % (full, help_text))
        lines.append("# TYPE %s %s" % (full, kind))
        lines.append('%s{storage="%s"} %s' % (full, escape_label(name), repr(float(values[metric]))))
    return "\n".join(lines) + "\n"


def parse_metrics(text):
    """Values of a metrics file's text (metric name without PREFIX -> float); unreadable lines are skipped."""
    values = {}
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        name = line.split("{", 1)[0][len(PREFIX):]
        try:
            values[name] = float(line.rsplit(None, 1)[1])
        except (IndexError, ValueError):
            pass
    return values


def read_metrics(path):
    """Values of the metrics file at `path`, or {} when there is none (first run) or it cannot be read."""
    try:
        with open(path) as f:
            return parse_metrics(f.read())
    except (OSError, UnicodeDecodeError):
        return {}


def write_metrics(path, name, values):
    """Replace the metrics file at `path` atomically (mode 0644); raises OSError."""
    fd, tmp = tempfile.mkstemp(prefix=".dirstorage_", suffix=".prom.tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(format_metrics(name, values))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def after_success(previous, started, finished, result):
    """The values after a pull that began at `started`, ended at `finished` and answered `result`."""
    values = dict(previous)
    values["last_attempt_timestamp_seconds"] = started
    values["last_success_timestamp_seconds"] = finished
    values["last_result"] = 1
    for key in RESULT_FIGURES:
        values[key] = float(result.get(key) or 0)
    return values


def up_to_date(previous, when):
    """The values when a follower hears from its master, at `when`, that
    nothing is new: a success without lag; the last apply's figures
    (transactions, bytes, a hot standby's downtime...) stay."""
    values = dict(previous)
    values.update(last_attempt_timestamp_seconds=when, last_success_timestamp_seconds=when, last_result=1,
                  lag_seconds=0.0)
    return values


def after_failure(previous, started):
    """The values after a failed pull that began at `started`: the last success and its figures stay."""
    values = dict(previous)
    values["last_attempt_timestamp_seconds"] = started
    values["last_result"] = 0
    values.setdefault("last_success_timestamp_seconds", 0)
    return values


def horizon_values(report, now):
    """A master's values from positions.horizon's `report` at `now`: the
    oldest position of every recorded standby (silent ones included: that is
    what holds a pack back) and how long its standby has been silent."""
    standbys = report["standbys"]
    values = {"standbys": len(standbys), "silent_standbys": sum(1 for s in standbys if s["silent"])}
    if standbys:
        oldest = standbys[0]  # positions.read_records: oldest position first
        values["horizon_age_seconds"] = max(0.0, now - (oldest["tid_time"] or 0.0))
        values["horizon_holder_silence_seconds"] = oldest["seen_age_seconds"]
    return values
