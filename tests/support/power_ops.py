# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operations whose power cuts are tested, and one cut from start to end.

Each operation is one entry of OPERATIONS: the golden case it starts from, where
its storages live (on the cut file system, or outside it in a folder the cut does
not touch), the command that is frozen and cut, the command an operator runs
after the reboot, and which storages must read as before or after.  Adding an
operation (`clone --delta`, `promote`) is adding one entry.

One cut (`run_cut`): the starting files are put on a fresh copy of a prepared
file system image; the command runs frozen at the chosen call; the image is
copied as a power cut leaves it; the copy is mounted; then
- every storage the operation writes reads, byte for byte outside misc/, as
  before or as after (after recovery, where journal/replica.tar is pending: what
  any tool opening the replica does), or is absent where the operation creates it;
- if the command had already reported success, every storage reads as after;
- the operator's next run exits 0, every storage reads as after (the master as
  the reference recovery left it: no committed transaction lost or damaged), and
  the file system holds the same names as after a clean run: nothing stray.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import queue
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from dirstorage_replica import journal, storage
from tests.support import power_cut
from tests.support.checks import assert_objects, manifest
from tests.support.crash_calls import (
    LOCAL_SSH,
    STRACE,
    count_calls,
    fresh_copy,
    outside_misc,
    parse_counts,
    spread,
)
from tests.support.power_cut import FILESYSTEMS
from tests.support.reliability import DS_REPLICA
from tests.support.treeutil import unpack_case

WORKERS = 2  # cuts run two at a time, each in a folder of its own
SYNC_CALLS = ("fsync", "fdatasync", "syncfs", "sync")
WRAPPER = '#!/bin/sh\nexec %s -o "$DS_STRACE_OUT" $DS_STRACE_ARGS %s "$@"\n' % (STRACE, DS_REPLICA)


def _pull(remote):
    def argv(disk, outside, master_on_disk=False):
        master = (disk if master_on_disk else outside) / "master"
        return [DS_REPLICA, "-q", "-e", LOCAL_SSH, "--remote-command", remote(outside),
                "local:%s" % master, str(disk / "replica")]
    return argv


def _clone(force):
    def argv(disk, outside, master_on_disk=False):
        again = not force and (disk / "parent" / "standby").exists()  # the operator adds --force then
        return [DS_REPLICA, "clone", "-q", *(["--force"] if force or again else []), "-e", LOCAL_SSH,
                "--remote-command", DS_REPLICA, "local:%s" % (outside / "master"),
                str(disk / "parent" / "standby")]
    return argv


@dataclasses.dataclass(frozen=True)
class Operation:
    """case: golden fixture; place: {case part: where it goes} ("disk/..." on
    the cut file system, "out/..." outside it); storages: the storages it
    writes, on the disk; may_be_absent: storages it creates (absent before);
    argv(disk, outside): the command; wrapped: the command starts the traced
    process itself (the master's serve, through the strace wrapper)."""

    case: str
    place: dict
    storages: tuple
    argv: Callable
    next_argv: Callable
    may_be_absent: tuple = ()
    wrapped: bool = False
    checked_after_cut: Optional[tuple] = None  # storages whose cut state is checked (default: all)
    # manifest.json entry whose `objects` every storage must read as after a clean run
    reads_as: str = "master"


def _wrapper(outside):
    return str(outside / "traced-ds-replica")


def _plain(outside):
    return DS_REPLICA


_DIRECT = _pull(_wrapper)


OPERATIONS = {
    # a pull: spool, commit point, apply; the replica on the cut disk, the master's serve untraced
    "pull": Operation("bushy", {"replica": "disk/replica", "master": "out/master"}, ("replica",),
                      _pull(_plain), _pull(_plain)),
    # the first copy into a new folder
    "clone": Operation("bushy", {"master": "out/master"}, ("parent/standby",), _clone(False), _clone(False),
                       may_be_absent=("parent/standby",)),
    # a copy over an old replica (renameat2 RENAME_EXCHANGE)
    "clone-force": Operation("bushy", {"replica": "disk/parent/standby", "master": "out/master"},
                             ("parent/standby",), _clone(True), _clone(True)),
    # the master's side: its serve takes the `direct` snapshot of a crashed master
    # (journal recovery, recombination, misc/snapshot); master and replica on the cut disk
    "direct": Operation("crashed-master", {"master": "disk/master", "replica": "disk/replica"},
                        ("master", "replica"),
                        lambda d, o: _DIRECT(d, o, master_on_disk=True),
                        lambda d, o: _pull(_plain)(d, o, master_on_disk=True),
                        wrapped=True, checked_after_cut=("replica",), reads_as="after_recovery"),
}


def lay_out(op, case, disk, outside, areas=("disk", "out")):
    """The case's parts where the operation wants them (in `areas` only)."""
    if "disk" in areas:
        (disk / "parent").mkdir(parents=True, exist_ok=True)
    if "out" in areas:
        outside.mkdir(parents=True, exist_ok=True)
    for part, where in op.place.items():
        area, rel = where.split("/", 1)
        if area not in areas:
            continue
        dst = (disk if area == "disk" else outside) / rel
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(case / part, dst, symlinks=True)
    if op.wrapped and "out" in areas:
        wrapper = Path(_wrapper(outside))
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)


def states(op, disk):
    return {name: outside_misc(disk / name) if (disk / name).exists() else None for name in op.storages}


def names(disk):
    """Every name on the disk but the file system's own (lost+found, the tick file)."""
    skip = ("lost+found", power_cut.TICK_FILE)
    return sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.relative_to(disk).parts[0] not in skip)


def reference(op, case, workdir):
    """One clean run on a plain folder: the calls it makes, the states
    before and after, the names it leaves."""
    disk, outside = workdir / "ref-disk", workdir / "ref-out"
    lay_out(op, case, disk, outside)
    before = states(op, disk)
    if op.wrapped:
        out = workdir / "ref-counts.txt"
        env = dict(os.environ, DS_STRACE_OUT=str(out), DS_STRACE_ARGS="-c -U name,calls")
        proc = subprocess.run(op.argv(disk, outside), capture_output=True, text=True, timeout=120, check=False,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        counts = parse_counts(out)
    else:
        counts = count_calls(op.argv(disk, outside), workdir)
    after = states(op, disk)
    assert after != before and None not in after.values(), "the reference run changed nothing"
    objects = manifest(case)[op.reads_as]["objects"]
    for name in op.storages:
        assert_objects(disk / name, objects)  # the state every cut must end in: object by object as the master
    ref = {"counts": counts, "before": before, "after": after, "names": names(disk)}
    if "master" in op.storages:
        assert storage.Storage(disk / "master").snapshot_code() == "shutdown"
    shutil.rmtree(disk)
    shutil.rmtree(outside)
    return ref


def template(op, case, workdir, fs_name):
    """The prepared file system image of this operation (its disk part on it)."""
    image = workdir / ("template-%s.img" % fs_name)
    if not image.exists():
        power_cut.make_image(image, fs_name, fill=lambda root: lay_out(op, case, root, None, areas=("disk",)))
    return image


@dataclasses.dataclass(frozen=True)
class Cut:
    fs_name: str
    call: str      # "exit": after the command exited (no injection)
    when: int
    image: str     # "strict" or "tick"

    def __str__(self):
        where = "after it exited" if self.call == "exit" else "after %s #%d" % (self.call, self.when)
        return "%s, cut %s (%s image)" % (self.fs_name, where, self.image)


def run_cut(op, case, ref, cut, workdir, tmpl):
    """One power cut, end to end (see the module's docstring); returns labels."""
    work_img, cut_img = workdir / "run.img", workdir / "cut.img"
    outside = workdir / "out"
    power_cut.copy_image(tmpl, work_img)
    try:
        lay_out(op, case, None, outside, areas=("out",))
        with power_cut.mounted(work_img, workdir / "run.mnt", cut.fs_name) as disk:
            finished = _freeze_and_copy(op, cut, disk, outside, workdir, work_img, cut_img)
        os.unlink(work_img)
        with power_cut.mounted(cut_img, workdir / "cut.mnt", cut.fs_name) as disk:
            labels = _after_reboot(op, ref, cut, disk, outside, workdir, finished)
        return labels
    finally:
        for path in (work_img, cut_img):
            if path.exists():
                path.unlink()


def _freeze_and_copy(op, cut, disk, outside, workdir, work_img, cut_img):
    """Run the command to the cut and copy the image; the command's exit status
    if it had ended (0: it reported success), else None."""
    argv = op.argv(disk, outside)
    if cut.call == "exit":
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                              env=dict(os.environ, DS_STRACE_OUT="/dev/null", DS_STRACE_ARGS=""))
        assert proc.returncode == 0, "%s: %s" % (cut, proc.stderr)
        finished = 0
    else:
        frozen = power_cut.Frozen(argv, cut.call, cut.when, workdir / "strace.log", wrapped=op.wrapped)
        try:
            if frozen.wait_frozen():
                _cut(cut, disk, work_img, cut_img)
                return None
        finally:
            frozen.kill()
        finished = frozen.finished
        assert finished == 0, "%s: the command failed: %s" % (cut, frozen.output)
    _cut(cut, disk, work_img, cut_img)
    return finished


def _cut(cut, disk, work_img, cut_img):
    if cut.image == "tick":
        power_cut.tick(disk)
    power_cut.copy_image(work_img, cut_img)


def _after_reboot(op, ref, cut, disk, outside, workdir, finished):
    labels = ["cuts"] if finished is None else ["cuts after success"]
    found = states(op, disk)
    for name in op.checked_after_cut or op.storages:
        state = found[name]
        if state is not None and (disk / name / "journal" / journal.REPLICA_TAR).exists():
            state = _opened(disk / name, workdir)
            labels.append("pending (past the commit point)")
        allowed = [ref["before"][name], ref["after"][name]]
        assert state in allowed or (state is None and name in op.may_be_absent), \
            "%s: %s reads neither as before nor as after" % (cut, name)
        if finished == 0:
            assert state == ref["after"][name], "%s: %s lost what the command had reported done" % (cut, name)
        labels.append("%s %s" % (name, "absent" if state is None else "old" if state == allowed[0] else "new"))
    for name in set(op.storages) - set(op.checked_after_cut or op.storages):
        labels.append("%s %s" % (name, "mid-recovery" if _unrecovered(disk / name) else "recovered"))
    proc = subprocess.run(op.next_argv(disk, outside), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, "%s: the next run failed: %s" % (cut, proc.stderr)
    assert states(op, disk) == ref["after"], "%s: the next run did not give the state of a clean run" % cut
    stray = sorted(set(names(disk)) ^ set(ref["names"]))
    assert not stray, "%s: after the next run %d names differ from a clean run's: %s" % (cut, len(stray), stray[:4])
    return labels


def _unrecovered(home):
    """A master's journal or B/ still holds files its recovery moves."""
    return any((home / "journal").iterdir()) or any(p.is_file() for p in (home / "B").rglob("*"))


def _opened(replica, workdir):
    """What any tool opening the replica reads: recovery, on a copy."""
    opened = workdir / "opened"
    fresh_copy(replica, opened)
    st = storage.Storage(opened)
    with st.lock(), st.sublock():
        journal.recover(st)
    state = outside_misc(opened)
    shutil.rmtree(opened)
    return state


def sampled_cuts(counts, fs_index, fs_name):
    """One cut per kind of call, rotating over the calls and image kinds by
    file system; a cut after success."""
    cuts = [Cut(fs_name, "exit", 0, "strict")]
    for i, (call, n) in enumerate(sorted(counts.items())):
        whens = spread(n, 3)
        image = "strict" if call in SYNC_CALLS else ("tick", "strict")[(i + fs_index) % 2]
        cuts.append(Cut(fs_name, call, whens[(i + fs_index) % len(whens)], image))
    return cuts


def every_cut(counts, fs_name, sampled=None):
    """Every call of every kind (a spread of `sampled[call]` where given), both image kinds; a cut after success."""
    cuts = [Cut(fs_name, "exit", 0, "strict")]
    for call, n in sorted(counts.items()):
        whens = spread(n, sampled[call]) if sampled and call in sampled else range(1, n + 1)
        cuts += [Cut(fs_name, call, w, image) for w in whens for image in ("strict", "tick")]
    return cuts


def run_operation(name, workdir, choose):
    """Every cut `choose(counts, fs_index, fs_name)` picks for operation `name`,
    WORKERS at a time; the labels counted, per file system."""
    op = OPERATIONS[name]
    case = unpack_case(op.case, workdir / "case")
    ref = reference(op, case, workdir)
    cuts = [c for i, fs in enumerate(FILESYSTEMS) for c in choose(ref["counts"], i, fs)]
    for fs in FILESYSTEMS:
        template(op, case, workdir, fs)
    folders = queue.Queue()
    for i in range(WORKERS):
        (workdir / ("w%d" % i)).mkdir()
        folders.put(workdir / ("w%d" % i))

    def one(cut):
        folder = folders.get()
        try:
            return cut.fs_name, run_cut(op, case, ref, cut, folder, template(op, case, workdir, cut.fs_name))
        except Exception as e:  # every cut is run; the failures are listed together
            return cut.fs_name, [_failure(cut, e)]
        finally:
            folders.put(folder)

    figures = {fs: collections.Counter() for fs in FILESYSTEMS}
    failures = []
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for fs, labels in pool.map(one, cuts):
            failed = [label for label in labels if label.startswith("FAILED")]
            for label in failed:  # at once, for long runs (seen with pytest -s)
                print(label, file=sys.stderr, flush=True)
            failures += failed
            figures[fs].update(label for label in labels if not label.startswith("FAILED"))
    assert not failures, "%d of %d cuts failed:\n%s" % (len(failures), len(cuts), "\n".join(failures[:30]))
    return ref, figures


def _failure(cut, error):
    text = str(error).splitlines()[0] if str(error) else ""
    if not isinstance(error, AssertionError):  # a crash of the check itself, e.g. recovery refusing
        text = "%s: %s: %s" % (cut, type(error).__name__, text)
    return "FAILED: " + text
