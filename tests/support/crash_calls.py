# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the crash-point and power-cut tests share: the system calls by which a
process changes the disk, how many of them a clean run makes (strace -c), a
spread of call numbers where there are too many to visit each, and the
replica as a reader of the storage sees it (all but misc/)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.checks import replica_state

ROOT = Path(__file__).resolve().parent.parent.parent
LOCAL_SSH = "%s %s" % (sys.executable, ROOT / "testbed" / "ssh_standins" / "local_ssh.py")
STRACE = shutil.which("strace") or "/usr/bin/strace"
# every syscall by which a pull changes what is on disk (or its locks)
DISK_CALLS = ("rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "link",
              "linkat", "symlink", "symlinkat", "fsync", "fdatasync", "syncfs", "sync", "ftruncate", "truncate",
              "fchmod", "fchmodat", "chmod", "flock", "write", "pwrite64", "writev", "close")


def outside_misc(path):
    """The replica's files and folders, byte for byte, but for misc/ (locks,
    the spool): what a reader of the storage sees."""
    return {k: v for k, v in replica_state(path).items() if k != "misc" and not k.startswith("misc/")}


def parse_counts(path):
    """`strace -c -U name,calls` output -> {syscall: calls} for DISK_CALLS."""
    counts = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^\s*(\w+)\s+(\d+)\s*$", line)
        if m and m.group(1) in DISK_CALLS:
            counts[m.group(1)] = int(m.group(2))
    return counts


def count_calls(argv, tmp_path):
    """Run `argv` whole under strace -c; its disk-changing calls, counted."""
    out = Path(tmp_path) / "strace-counts.txt"
    proc = subprocess.run([STRACE, "-c", "-U", "name,calls", "-o", str(out), *argv],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return parse_counts(out)


def count_calls_per_tracee(argv, tmp_path, options=("-f",)):
    """Run `argv` whole under strace `options` (`-f`: its threads and
    children too); of each disk-changing call, the most that any one tracee
    (thread or process) made.  strace's fault injection counts the Nth call
    per tracee, so these are the call numbers a cut or a kill can reach
    (strace -c adds up all tracees: a cut past one tracee's count never
    happens)."""
    log = Path(tmp_path) / "strace-per-tracee.log"
    proc = subprocess.run([STRACE, *options, "-qq", "-e", "trace=" + ",".join(DISK_CALLS), "-e", "signal=none",
                           "-o", str(log), *argv], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return parse_per_tracee(log)


def parse_per_tracee(log):
    """`strace -f -o log` output -> {syscall: the most calls by one tracee}, DISK_CALLS only."""
    per = {}
    for line in Path(log).read_text().splitlines():
        m = re.match(r"^(\d+)\s+(\w+)\(", line)
        if m and m.group(2) in DISK_CALLS:
            key = (m.group(1), m.group(2))
            per[key] = per.get(key, 0) + 1
    counts = {}
    for (_pid, call), n in per.items():
        counts[call] = max(counts.get(call, 0), n)
    return counts


def fresh_copy(src, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)


def spread(n, k):
    """k call numbers spread over 1..n, first and last included (all of them if n <= k)."""
    if n <= k:
        return list(range(1, n + 1))
    if k == 1:
        return [n]
    return sorted({1 + round(i * (n - 1) / (k - 1)) for i in range(k)})


def call_points(counts, sampled):
    """(call, when) for every call of every kind, but a spread of `sampled[call]` where given."""
    points = []
    for call, n in sorted(counts.items()):
        whens = spread(n, sampled[call]) if call in sampled else range(1, n + 1)
        points += [(call, when) for when in whens]
    return points
