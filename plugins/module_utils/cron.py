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

Runs of one storage never overlap: each takes `LOCK_DIR/ds-replica-NAME.lock`
(flock), in a folder only the replica account may write (default
`~/.ds-replica`, made 0700: a lock in the world-writable /run/lock would
let any local user take it first and so stop every pull).  A run that finds the lock held exits 0
at once while the holder is younger than `--stuck-after` seconds; after
that it says so in one line, exits 75 and records a failed run in the
metrics, so that a stuck run is never silent for long.

The schedule role installs a launcher that calls `main()` with the paths of
the host; pip installs it as the console script `ds-replica-cron`, which runs
the `ds-replica` installed beside it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import stat
import subprocess
import sys
import time

from .metrics import after_failure, after_success, metrics_path, read_metrics, write_metrics

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # node_exporter's textfile collector (Debian)
LOCK_FOLDER = ".ds-replica"  # the default lock folder, in the account's home
STUCK_AFTER = 3600.0  # --stuck-after: a run holding the lock longer is reported
EXIT_TEMPFAIL = 75
_NAME_RE = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*\Z")


def _stderr(msg):
    sys.stderr.write("ds-replica-cron: %s\n" % msg)
    sys.stderr.flush()


def default_ds_replica():
    """The `ds-replica` beside this command (pip installs both scripts in one folder), else the one on PATH."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "ds-replica")
    return beside if os.access(beside, os.X_OK) else "ds-replica"


def parse_args(argv, textfile_dir):
    """The command line: textfile_dir, lock_dir (None: the default), stuck_after, name and args
    (ds-replica's arguments)."""
    p = argparse.ArgumentParser(prog="ds-replica-cron",
                                description="Run one ds-replica pull and write its metrics for node_exporter.")
    p.add_argument("--textfile-dir", default=textfile_dir,
                   help="node_exporter's textfile collector folder (default: %(default)s)")
    p.add_argument("--lock-dir", help="folder of the lock that keeps runs from overlapping, writable by this "
                                      "account only (default: ~/%s, made 0700)" % LOCK_FOLDER)
    p.add_argument("--stuck-after", type=float, default=STUCK_AFTER, metavar="S",
                   help="report a run that has held the lock for S seconds (default %(default)g)")
    p.add_argument("name", help="the storage's label in the metrics (file dirstorage_NAME.prom)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="ds-replica's arguments, after an optional --")
    opts = p.parse_args(argv)
    if not _NAME_RE.match(opts.name):
        p.error("the name %r is not a storage label ([A-Za-z0-9_.@-])" % opts.name)
    opts.args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    return opts


class LockError(Exception):
    """The lock cannot be taken safely (one line)."""


def default_lock_dir():
    """~/.ds-replica of the account this runs as (cron sets HOME from its passwd entry)."""
    return os.path.join(os.path.expanduser("~"), LOCK_FOLDER)


def own_folder(path):
    """Create `path` (0700) if missing; refuse a folder another account could
    write to or replace (the lock would then be theirs to hold)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LockError("the lock folder %s is not a folder that only this account (uid %d) may write "
                        "(owner uid %d, mode %o); give one with --lock-dir (the schedule role's schedule_lock_dir)"
                        % (path, os.getuid(), st.st_uid, stat.S_IMODE(st.st_mode)))


def take_lock(folder, name):
    """(fd, None) with the run's lock held, its pid and start time written in
    it; (None, what the holder wrote) when another run holds it."""
    own_folder(folder)
    path = os.path.join(folder, "ds-replica-%s.lock" % name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode("ascii", "replace")
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.write(fd, ("%d %.3f\n" % (os.getpid(), time.time())).encode("ascii"))
    return fd, None


def held_for(holder, now):
    """(pid, seconds) of the run holding the lock, from what it wrote
    ((None, 0.0) while it has not written yet)."""
    words = holder.split()
    try:
        return int(words[0]), max(0.0, now - float(words[1]))
    except (IndexError, ValueError):
        return None, 0.0


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
    opts = parse_args(sys.argv[1:] if argv is None else argv, textfile_dir)
    started = time.time()
    folder = opts.lock_dir or default_lock_dir()
    try:
        fd, holder = take_lock(folder, opts.name)
    except (LockError, OSError) as e:
        _stderr("cannot take the lock of %s: %s" % (opts.name, e))
        return 1
    if fd is None:
        return _held(opts, folder, holder, started)
    try:
        rc, result = run_pull(ds_replica or default_ds_replica(), opts.args)
        values = (after_failure if result is None else
                  lambda previous, started: after_success(previous, started, time.time(), result))
        if not _record(opts, values, started):
            return rc or 1
        return 1 if rc == 0 and result is None else rc
    finally:
        os.close(fd)


def _held(opts, folder, holder, started):
    """Another run holds the lock: 0 while it is young; past --stuck-after,
    a line, a failed run in the metrics, and exit 75."""
    pid, seconds = held_for(holder, started)
    if seconds < opts.stuck_after:
        return 0
    _stderr("the previous run of %s (pid %s) has held %s for %.0fs: it seems stuck; check that process "
            "(this run did not pull)" % (opts.name, pid, os.path.join(folder, "ds-replica-%s.lock" % opts.name),
                                         seconds))
    _record(opts, after_failure, started)
    return EXIT_TEMPFAIL


def _record(opts, values, started):
    """Write the metrics file from the previous values; False (said) when it cannot be written."""
    path = metrics_path(opts.textfile_dir, opts.name)
    try:
        write_metrics(path, opts.name, values(read_metrics(path), started))
    except OSError as e:
        _stderr("cannot write %s: %s" % (path, e))
        return False
    return True


if __name__ == "__main__":  # python -m dirstorage_replica.cron
    raise SystemExit(main())
