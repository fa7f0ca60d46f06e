# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operations whose power cuts are tested, and one cut from start to end.

Each operation is one entry of OPERATIONS: the golden case it starts from, where
its storages live (on the cut file system, or outside it in a folder the cut does
not touch), the command that is frozen and cut, the command an operator runs
after the reboot, and which storages must read as before or after.

One cut (`run_cut`): the starting files are put on a fresh copy of a prepared
file system image; the command runs frozen at the chosen call; the image is
copied as a power cut leaves it; the copy is mounted; then
- every storage the operation writes reads, byte for byte outside misc/, as
  before or as after (after recovery, where journal/replica.tar is pending: what
  any tool opening the replica does), or is absent where the operation creates it;
- where the operation keeps the old tree aside (`clone --delta` by a new tree
  of a storage holding transactions the master does not), the old tree is
  whole somewhere a person or the next run finds it (in place, kept aside as
  `NAME.before-reseed-*`, or in a hidden folder marked to be kept aside), and
  every kept-aside tree reads as the old storage;
- where the operation re-seeds in place (`clone --delta` in place, issue 19),
  the storage may also read as after with files nothing reaches that the
  diverged transactions wrote (the removal was cut; the next run, or verify,
  finishes it), and then the diverged transactions' keep-aside is whole: it
  reads as the clean run's, outside its misc/;
- if the command had already reported success, every storage reads as after;
- the operator's next run exits 0, every storage reads as after (the master as
  the reference recovery left it: no committed transaction lost or damaged), and
  the file system holds the same names as after a clean run: nothing stray (one
  kept-aside tree where a clean run keeps one).

Each cut is labelled by what it cut: IN_FLIGHT (the command was frozen at its
call, mid-operation), AFTER_SUCCESS (the cut after the command exited 0), or
NEVER_CAME (the command ended before making that call: nothing was cut while
it ran, so such a cut proves nothing).  `assert_cut_in_flight` puts a floor on
the share of the planned calls that froze the operation; the call numbers come
from the clean run counted per tracee where the operation works in threads,
as strace's injection counts them.

Three things a clean run writes differ from run to run and are compared without
them: the time in `config/promoted` (promote) and in a kept-aside tree's name,
the folder of the master in `config/upstream` (clone --delta; each cut has its own).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from dirstorage_replica import durable, journal, storage
from dirstorage_replica.keep_aside import KEEP_ASIDE
from testbed.harness import power_cut
from testbed.harness.power_cut import FILESYSTEMS
from testbed.harness.reliability import DS_REPLICA
from tests.support.checks import assert_objects, manifest
from tests.support.crash_calls import (
    LOCAL_SSH,
    STRACE,
    count_calls_per_tracee,
    fresh_copy,
    outside_misc,
    parse_counts,
    spread,
)
from tests.support.treeutil import unpack_case

WORKERS = 2  # cuts run two at a time, each in a folder of its own
# the labels of a cut (see the module docstring) and the planned cuts at a call, counted per file system
IN_FLIGHT, AFTER_SUCCESS, NEVER_CAME, PLANNED = ("cuts in flight", "cuts after success",
                                                 "cuts at a call that never came", "cuts planned at a call")
# at least this share of the cuts planned at a call must freeze the operation in flight
IN_FLIGHT_FLOOR = 0.9
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


def _clone_delta(disk, outside):
    return [DS_REPLICA, "clone", "--delta", "-q", "-e", LOCAL_SSH, "--remote-command", DS_REPLICA,
            "local:%s" % (outside / "master"), str(disk / "parent" / "standby")]


def _promote(disk, outside):
    return [DS_REPLICA, "promote", "-q", str(disk / "replica")]


# strace options of an operation that works in threads (clone --delta links
# the kept files in one): follow them, but not the master's serve, which runs
# its own program (local_ssh.py, then ds-replica serve) and is detached at exec
THREADS = ("-f", "--detach-on=execve")


@dataclasses.dataclass(frozen=True)
class Operation:
    """case: golden fixture; place: {case part: where it goes} ("disk/..." on
    the cut file system, "out/..." outside it); storages: the storages it
    writes, on the disk; may_be_absent: storages it creates (absent before);
    argv(disk, outside): the command; wrapped: the command starts the traced
    process itself (the master's serve, through the strace wrapper); keeps_aside:
    the storage whose old tree the command keeps aside as NAME.before-reseed-*."""

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
    trace_options: tuple = ()  # more strace options (THREADS)
    keeps_aside: Optional[str] = None
    # the storage an in-place re-seed rewinds: only the diverged transactions' files are kept aside
    in_place: Optional[str] = None
    prepare: Optional[Callable] = None  # prepare(outside): changes to the master's copy, after lay_out
    # the master was packed past the replica: after the apply the pull packs the replica as the master was
    # (packmirror.py), so a cut may find it applied and part way through that pack
    packs: Optional[str] = None


# a pull that does not pack the replica as its master was (the state between the apply and the pack)
NO_PACK = [sys.executable, "-c", "import sys; from dirstorage_replica import replica, cli; "
           "replica.pack_as_master = lambda *a, **k: None; sys.exit(cli.main())"]


def packing(now, applied, packed):
    """A storage part way through packing as its master: each file the applied
    or the packed one's (or the temporary file of one being relinked), x.packed
    still the applied one's (written last)."""
    return (all(now[p] in (applied.get(p), packed.get(p)) or durable.ATOMIC_TEMP in p for p in now)
            and now.get("A/x/packed") == applied.get("A/x/packed"))


def _wrapper(outside):
    return str(outside / "traced-ds-replica")


def _plain(outside):
    return DS_REPLICA


_DIRECT = _pull(_wrapper)


OPERATIONS = {
    # a pull: spool, commit point, apply; the replica on the cut disk, the master's serve untraced
    "pull": Operation("bushy", {"replica": "disk/replica", "master": "out/master"}, ("replica",),
                      _pull(_plain), _pull(_plain), packs="replica"),
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
    # a re-seed of an old master that wrote two transactions the new master never
    # saw (`diverged`), in place: keeps those transactions' files aside in
    # standby.before-reseed-*, applies the master's increment through the journal
    # (config/upstream staged with it), removes the diverged files
    "clone-delta": Operation("diverged", {"replica": "disk/parent/standby", "master": "out/master"},
                             ("parent/standby",), _clone_delta, _clone_delta, in_place="parent/standby"),
    # the same by a new tree, the master being packed past the anchor (the fallback):
    # links what it holds (in a thread), receives the rest, swaps the new copy in and
    # keeps the old tree aside as standby.before-reseed-*
    "clone-delta-tree": Operation("diverged", {"replica": "disk/parent/standby", "master": "out/master"},
                                  ("parent/standby",), _clone_delta, _clone_delta, trace_options=THREADS,
                                  keeps_aside="parent/standby", prepare=lambda out: _pack_past(out / "master")),
    # a standby made the master: the increment a cut pull left pending
    # (`pending-replica`) is applied first, the storage checked, then config/promoted
    # written; the next run is promote again
    "promote": Operation("pending-replica", {"replica": "disk/replica"}, ("replica",), _promote, _promote),
}


def _pack_past(master):
    """Mark the master packed at its newest transaction (what a pack after the
    anchor leaves in x.packed): the in-place re-seed must use a new tree."""
    st = storage.Storage(master)
    (master / "A").joinpath(*st.relpath("x.packed").split("/")[1:]).write_bytes(st.last_tid())


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
    if op.prepare is not None and "out" in areas:
        op.prepare(outside)
    if op.wrapped and "out" in areas:
        wrapper = Path(_wrapper(outside))
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)


def states(op, disk):
    return {name: _state(disk / name) if (disk / name).exists() else None for name in op.storages}


def _state(home):
    """outside_misc, with config/promoted read without its time and
    config/upstream without the folder of the master (each cut has its own)."""
    state = outside_misc(home)
    if "config/promoted" in state:
        kind, mode, _digest = state["config/promoted"]
        mark = json.loads((home / "config" / "promoted").read_text())
        state["config/promoted"] = (kind, mode, "tid %s, %s" % (mark.pop("tid"), " ".join(sorted(mark))))
    if "config/upstream" in state:
        kind, mode, _digest = state["config/upstream"]
        master = (home / "config" / "upstream").read_text()
        state["config/upstream"] = (kind, mode, "%s*/%s" % (master.split(":", 1)[0], os.path.basename(master)))
    return state


def _atomic_temp(path):
    """A temporary file of durable.write_atomic (NAME.tmp-PID)."""
    return re.search(re.escape(durable.ATOMIC_TEMP) + r"\d+$", path) is not None


ASIDE_STAMP = re.compile(r"\.before-reseed-\d{8}T\d{6}Z")


def names(disk):
    """Every name on the disk but the file system's own (lost+found, the tick
    file); a kept-aside tree's time as `*`."""
    skip = ("lost+found", power_cut.TICK_FILE)
    return sorted(ASIDE_STAMP.sub(".before-reseed-*", str(p.relative_to(disk)))
                  for p in disk.rglob("*") if p.relative_to(disk).parts[0] not in skip)


def kept_aside(op, disk):
    """The trees (or, in place, the folders) kept aside from
    `op.keeps_aside` or `op.in_place` (none if it keeps none)."""
    if (op.keeps_aside or op.in_place) is None:
        return []
    home = disk / (op.keeps_aside or op.in_place)
    return sorted(home.parent.glob(home.name + ".before-reseed-*"))


def _marked_aside(op, disk):
    """Hidden folders a cut re-seed left, marked to be kept aside (the next run renames them)."""
    home = disk / op.keeps_aside
    return [p for p in home.parent.glob(".%s.clone-*" % home.name) if (p / "misc" / KEEP_ASIDE).exists()]


def reference(op, case, workdir):
    """One clean run on a plain folder: the calls it makes, the states
    before and after, the names it leaves."""
    disk, outside = workdir / "ref-disk", workdir / "ref-out"
    lay_out(op, case, disk, outside)
    before = states(op, disk)
    # what a tool opening the storage reads before the operation (a pending increment applied)
    before_opened = {name: _opened(disk / name, workdir) for name in op.storages
                     if before[name] is not None and _pending(disk / name)}
    if op.wrapped:
        out = workdir / "ref-counts.txt"
        env = dict(os.environ, DS_STRACE_OUT=str(out), DS_STRACE_ARGS="-c -U name,calls")
        proc = subprocess.run(op.argv(disk, outside), capture_output=True, text=True, timeout=120, check=False,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        counts = parse_counts(out)
    else:
        counts = _count_calls(op, disk, outside, workdir)
    after = states(op, disk)
    assert after != before and None not in after.values(), "the reference run changed nothing"
    objects = manifest(case)[op.reads_as]["objects"]
    for name in op.storages:
        assert_objects(disk / name, objects)  # the state every cut must end in: object by object as the master
    aside = [_state(p) for p in kept_aside(op, disk)]
    if op.keeps_aside:
        assert aside == [before[op.keeps_aside]], \
            "the reference run did not keep the old tree aside, whole"
    if op.in_place:
        assert len(aside) == 1 and any(p.startswith("A/") for p in aside[0]), \
            "the reference run kept nothing of the diverged transactions aside"
    ref = {"counts": counts, "before": before, "before_opened": before_opened, "after": after,
           "aside": aside, "names": names(disk)}
    if "master" in op.storages:
        assert storage.Storage(disk / "master").snapshot_code() == "shutdown"
    shutil.rmtree(disk)
    shutil.rmtree(outside)
    if op.packs:
        ref["applied"] = _applied_not_packed(op, case, workdir)
        assert ref["applied"] not in (before[op.packs], after[op.packs]), "the reference pull packed nothing"
    return ref


def _applied_not_packed(op, case, workdir):
    """The state of `op.packs` after a clean run that does not pack it as its master."""
    disk, outside = workdir / "ref-disk", workdir / "ref-out"
    lay_out(op, case, disk, outside)
    proc = subprocess.run(NO_PACK + op.argv(disk, outside)[1:], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    applied = _state(disk / op.packs)
    shutil.rmtree(disk)
    shutil.rmtree(outside)
    return applied


def _count_calls(op, disk, outside, workdir):
    """The clean run, whole under strace (with the operation's options): its disk-changing calls,
    per tracee where it follows threads (the numbers strace's injection can reach)."""
    if "-f" in op.trace_options:
        return count_calls_per_tracee(op.argv(disk, outside), workdir, op.trace_options)
    out = workdir / "ref-counts.txt"
    proc = subprocess.run([STRACE, *op.trace_options, "-c", "-U", "name,calls", "-o", str(out),
                           *op.argv(disk, outside)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return parse_counts(out)


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
        # where the original was, as after a reboot: a path written into a storage still names it
        with power_cut.mounted(cut_img, workdir / "run.mnt", cut.fs_name) as disk:
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
        frozen = power_cut.Frozen(argv, cut.call, cut.when, workdir / "strace.log", wrapped=op.wrapped,
                                  options=op.trace_options)
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
    labels = [IN_FLIGHT if finished is None else AFTER_SUCCESS if cut.call == "exit" else NEVER_CAME]
    found = states(op, disk)
    for name in op.checked_after_cut or op.storages:
        state = found[name]
        if state is not None and _pending(disk / name):
            state = _opened(disk / name, workdir)
            labels.append("pending (past the commit point)")
        if state is not None and any(_atomic_temp(path) for path in state):
            # a small file's write cut before its rename: nobody reads it; the next run must remove it
            state = {path: v for path, v in state.items() if not _atomic_temp(path)}
            labels.append("a temporary file left")
        old = [ref["before"][name]] + ([ref["before_opened"][name]] if name in ref["before_opened"] else [])
        if name == op.in_place and state not in old and _after_with_orphans(state, ref, name):
            labels.append("new, diverged files not yet removed")
            state = ref["after"][name]
        if name == op.packs and state not in old + [ref["after"][name]] and (
                state == ref["applied"] or packing(state, ref["applied"], ref["after"][name])):
            labels.append("applied, packing as the master")
            state = ref["after"][name]
        assert state in old + [ref["after"][name]] or (state is None and name in op.may_be_absent), \
            "%s: %s reads neither as before nor as after (%s)" % (cut, name, _differences(state, ref, name))
        if finished == 0:
            assert state == ref["after"][name], "%s: %s lost what the command had reported done" % (cut, name)
        labels.append("%s %s" % (name, "absent" if state is None else "old" if state in old else "new"))
        if name == op.keeps_aside:
            labels += _old_tree_found(op, ref, cut, disk, state in old)
        if name == op.in_place:
            labels += _diverged_kept(op, ref, cut, disk, state in old)
    for name in set(op.storages) - set(op.checked_after_cut or op.storages):
        labels.append("%s %s" % (name, "mid-recovery" if _unrecovered(disk / name) else "recovered"))
    proc = subprocess.run(op.next_argv(disk, outside), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, "%s: the next run failed: %s" % (cut, proc.stderr)
    assert states(op, disk) == ref["after"], "%s: the next run did not give the state of a clean run" % cut
    assert [_state(p) for p in kept_aside(op, disk)] == ref["aside"], \
        "%s: after the next run the kept-aside trees are not the one old tree of a clean run" % cut
    stray = sorted(set(names(disk)) ^ set(ref["names"]))
    assert not stray, "%s: after the next run %d names differ from a clean run's: %s" % (cut, len(stray), stray[:4])
    return labels


def _differences(state, ref, name):
    """The first paths where `state` differs from the before and after states."""
    if state is None:
        return "absent"
    found = []
    for when in ("before", "after"):
        other = ref[when][name] or {}
        paths = sorted(p for p in set(state) | set(other) if state.get(p) != other.get(p))
        found.append("from %s: %d paths, %s" % (when, len(paths), ", ".join(paths[:3])))
    return "; ".join(found)


def _old_tree_found(op, ref, cut, disk, in_place):
    """A re-seed keeping the old tree aside: every kept-aside tree reads as the
    old storage, and the old storage is whole somewhere (in place, kept aside,
    or in a hidden folder the next run renames to its aside name)."""
    old = ref["before"][op.keeps_aside]
    aside = kept_aside(op, disk)
    assert all(_state(p) == old for p in aside), "%s: a kept-aside tree is not the old storage" % cut
    if in_place:
        return []
    if any(_state(p) == old for p in aside):
        return ["old tree kept aside"]
    assert any(_state(p) == old for p in _marked_aside(op, disk)), "%s: the old storage is nowhere whole" % cut
    return ["old tree in a hidden folder marked to be kept aside"]


def _after_with_orphans(state, ref, name):
    """`state` is the clean run's after state plus files and folders of the
    before state that the clean run removed (what an in-place re-seed cut
    before or in its removal step leaves: nothing reaches them)."""
    after, before = ref["after"][name], ref["before"][name]
    if state is None or {p: v for p, v in state.items() if p in after} != after:
        return False
    return all(p in before and p not in after and before[p] == v for p, v in state.items() if p not in after)


def _diverged_kept(op, ref, cut, disk, old):
    """An in-place re-seed: every keep-aside folder reads as the clean run's
    (outside misc/); past the commit point, there is one."""
    aside = [_state(p) for p in kept_aside(op, disk)]
    assert all(a == ref["aside"][0] for a in aside), "%s: a keep-aside folder is not whole" % cut
    if old:
        return ["keep-aside %s" % ("whole" if aside else "not made yet")]
    assert aside, "%s: past the commit point, the diverged transactions are kept nowhere" % cut
    return ["keep-aside whole"]


def _pending(home):
    return (home / "journal" / journal.REPLICA_TAR).exists()


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
    state = _state(opened)
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


def run_operation(name, workdir, choose, filesystems=tuple(FILESYSTEMS)):
    """Every cut `choose(counts, fs_index, fs_name)` picks for operation `name`
    on each of `filesystems` (fs_index: its position there), WORKERS at a time;
    the labels counted, per file system."""
    op = OPERATIONS[name]
    case = unpack_case(op.case, workdir / "case")
    ref = reference(op, case, workdir)
    cuts = [c for i, fs in enumerate(filesystems) for c in choose(ref["counts"], i, fs)]
    for fs in filesystems:
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

    figures = {fs: collections.Counter({PLANNED: sum(c.fs_name == fs and c.call != "exit" for c in cuts)})
               for fs in filesystems}
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


def assert_cut_in_flight(figures, floor=IN_FLIGHT_FLOOR):
    """On every file system: at least `floor` of the cuts planned at a call froze the
    operation in flight, every other one came after the command ended, and a cut after
    success was run."""
    for fs, counted in figures.items():
        planned = counted[PLANNED]
        assert planned and counted[IN_FLIGHT] + counted[NEVER_CAME] == planned, (fs, dict(counted))
        assert counted[IN_FLIGHT] >= floor * planned, \
            "%s: only %d of %d cuts froze the operation in flight: %s" % (fs, counted[IN_FLIGHT], planned,
                                                                          dict(counted))
        assert counted[AFTER_SUCCESS] >= 1, (fs, dict(counted))


def _failure(cut, error):
    text = str(error).splitlines()[0] if str(error) else ""
    if not isinstance(error, AssertionError):  # a crash of the check itself, e.g. recovery refusing
        text = "%s: %s: %s" % (cut, type(error).__name__, text)
    return "FAILED: " + text
