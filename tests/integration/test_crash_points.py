"""A pull killed at every step that changes the replica's disk, not at random
moments: the old state or the new one, and the next run repairs.

strace's fault injection (`-e inject=SYSCALL:signal=KILL:when=N`) SIGKILLs the
pull as it enters its Nth call of SYSCALL, before the call takes effect.  A
baseline run counts the pull's calls of every syscall that writes to disk
(rename, mkdir, unlink, fsync, syncfs, ftruncate, flock, link, write ...);
then for each of them the pull is killed at every call (writes: a spread of
calls), on a fresh copy of the golden `bushy` case.  That is `make soak`;
`make test` kills at a spread of at most KILLS_PER_CALL calls of each kind.  Killing at the entry of
call N leaves the disk exactly as it is after call N-1, so together the runs
visit every state between two disk changes a crash can leave.

The master's serve runs in a process of its own (testbed/ssh_standins/local_ssh.py
stands in for ssh), untraced: only the replica side is killed.

After each kill:
- before the commit point (the rename of the spool to journal/replica.tar)
  the replica outside misc/ is byte for byte what it was;
- past it, recovery (what any tool opening the replica does) gives byte for
  byte the replica a clean pull gives;
- a plain pull then exits 0 and leaves that same replica, nothing pending,
  no spool left, and `ds-replica verify` passes.

(Power loss, where unsynced writes vanish, is tests/integration/test_power_loss.py.)
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import queue
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dirstorage_replica import journal, storage
from testbed.harness.reliability import DS_REPLICA, report
from tests.support.checks import assert_objects, manifest
from tests.support.crash_calls import (
    LOCAL_SSH,
    STRACE,
    call_points,
    count_calls,
    fresh_copy,
    outside_misc,
    parse_counts,
)
from tests.support.power_ops import NO_PACK, packing

# calls too many to kill at each one: a spread of them (first and last included)
SAMPLED = {"write": 20, "close": 12, "mkdir": 12, "unlinkat": 8, "unlink": 8, "rename": 30}
# where the pull test already covers the copy itself (--force clones) or the answer (serve)
LIGHT = {"write": 6, "close": 6, "mkdir": 4, "unlinkat": 6, "unlink": 4, "rename": 20}
WORKERS = 2  # kill points run two at a time, each in its own folder

pytestmark = pytest.mark.slow


def pull_argv(case):
    return [DS_REPLICA, "-q", "-e", LOCAL_SSH, "--remote-command", DS_REPLICA,
            "local:%s" % (case / "master"), str(case / "replica")]


# make test: at most this many kill points of each call, a spread (first and last included); make soak
# (SOAK=1: tests/soak/test_crash_points_soak.py collects these tests) the spreads above, every call of the rest
KILLS_PER_CALL = None if os.environ.get("SOAK") == "1" else 6


def kill_points(counts, sampled=None):
    sampled = SAMPLED if sampled is None else sampled
    if KILLS_PER_CALL:
        sampled = {call: min(sampled.get(call, n), KILLS_PER_CALL) for call, n in counts.items()}
    return call_points(counts, sampled)


def run_kill_points(points, one, tmp_path):
    """one(call, when, workdir) -> labels, for every kill point, WORKERS at a
    time, each worker in a folder of its own; the labels counted."""
    dirs = queue.Queue()
    for i in range(WORKERS):
        dirs.put(tmp_path / ("run%d" % i))

    def task(point):
        work = dirs.get()
        try:
            return one(point[0], point[1], work)
        finally:
            dirs.put(work)

    figures = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for labels in pool.map(task, points):
            figures.update(labels)
    return figures


def inject(call, when):
    return "inject=%s:signal=KILL:when=%d" % (call, when)


def test_pull_killed_at_every_disk_change(unpack_fixture, tmp_path, request):
    probe = subprocess.run([STRACE, "-o", "/dev/null", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.fail("strace cannot trace here (%s): run `make deps` as root to install it, and allow ptrace"
                    % probe.stderr.strip(), pytrace=False)
    pristine = unpack_fixture("bushy")
    m = manifest(pristine)
    old = outside_misc(pristine / "replica")

    # the reference: one clean pull, and the syscalls it makes
    ref_case = tmp_path / "reference"
    shutil.copytree(pristine, ref_case, symlinks=True)
    counts = count_calls(pull_argv(ref_case), tmp_path)
    assert counts.get("rename") and (counts.get("fsync") or counts.get("syncfs")), counts
    new = outside_misc(ref_case / "replica")
    assert new != old
    assert_objects(ref_case / "replica", m["master"]["objects"])
    # the `bushy` master was packed (by the real engine): after the apply, the pull packs the replica as the
    # master was (packmirror.py); `applied` is the replica between the two, a pull that does not pack
    applied_case = tmp_path / "applied"
    shutil.copytree(pristine, applied_case, symlinks=True)
    subprocess.run(NO_PACK + pull_argv(applied_case)[1:], check=True, timeout=120)
    applied = outside_misc(applied_case / "replica")
    assert applied not in (old, new)

    def one(call, when, work):
        fresh_copy(pristine, work)
        where = "killed at %s #%d" % (call, when)
        proc = subprocess.run([STRACE, "-o", "/dev/null", "-e", inject(call, when), *pull_argv(work)],
                              capture_output=True, text=True, timeout=120, check=False)
        replica = work / "replica"
        st = storage.Storage(replica)
        if proc.returncode == 0:
            assert outside_misc(replica) == new, where
            return ["finished before the kill point"]  # fewer calls this time: a whole pull
        assert proc.returncode == -signal.SIGKILL, "%s: exit %s\n%s" % (where, proc.returncode, proc.stderr)
        labels = ["kills"]
        pending = (replica / "journal" / journal.REPLICA_TAR).exists()
        now = outside_misc(replica)
        if not pending:
            # before the commit point, or after the pending increment was retired
            assert now in (old, new) or packing(now, applied, new), \
                "%s: the replica is neither the old nor the new one" % where
            labels.append("old state" if now == old else "new state" if now == new else "packing as the master")
        else:
            labels.append("pending (past the commit point)")
            # what any tool opening the replica does: recovery, on a copy
            opened = work.with_name(work.name + "-opened")
            fresh_copy(replica, opened)
            ost = storage.Storage(opened)
            with ost.lock(), ost.sublock():
                journal.recover(ost)
            assert outside_misc(opened) == applied, "%s: recovery did not give the new replica" % where
        # the next run repairs: a plain pull, nothing left behind
        again = subprocess.run(pull_argv(work), capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, "%s: the next pull failed: %s" % (where, again.stderr)
        assert outside_misc(replica) == new, "%s: the next pull did not give the new replica" % where
        assert st.journal_entries() == [] and not (replica / "misc" / ".replica.incoming").exists(), where
        return labels

    points = kill_points(counts)
    figures = run_kill_points(points, one, tmp_path)
    verify = subprocess.run([DS_REPLICA, "verify", str(tmp_path / "run0" / "replica")], capture_output=True,
                            text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert figures["kills"] >= len(points) * 0.9, figures
    assert figures["old state"] and figures["pending (past the commit point)"], figures
    report(request, "crash_points", dict(calls=dict(sorted(counts.items())), **figures))


def _leftovers(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith("."))


# ds-replica on a filesystem without renameat2 RENAME_EXCHANGE: the old replica
# is moved aside, then the new copy moved in
NO_EXCHANGE = [sys.executable, "-c", "import sys; from dirstorage_replica import partial, cli; "
               "partial._exchange = lambda a, b: False; sys.exit(cli.main())"]


@pytest.mark.parametrize("over", ["new", "force", "force-no-exchange"])
def test_clone_killed_at_every_disk_change(unpack_fixture, tmp_path, request, over):
    """A first copy killed anywhere: the destination holds nothing that looks
    like a storage (or, with --force, still the old replica) or the whole new
    copy; the next clone finishes and leaves no hidden folder behind."""
    pristine = unpack_fixture("bushy")
    m = manifest(pristine)
    force = over != "new"
    exe = NO_EXCHANGE if over == "force-no-exchange" else [DS_REPLICA]

    def argv(parent):
        return [*exe, "clone", "-q", *(["--force"] if force else []), "-e", LOCAL_SSH,
                "--remote-command", DS_REPLICA, "local:%s" % (parent / "master"), str(parent / "standby")]

    def prepare(parent):
        """parent/master (a worker's own copy, kept) and parent/standby."""
        if not (parent / "master").exists():
            parent.mkdir(exist_ok=True)
            shutil.copytree(pristine / "master", parent / "master", symlinks=True)
        if (parent / "standby").exists():
            shutil.rmtree(parent / "standby")
        for hidden in _leftovers(parent):
            shutil.rmtree(parent / hidden)
        if force:
            shutil.copytree(pristine / "replica", parent / "standby", symlinks=True)

    ref = tmp_path / "reference"
    prepare(ref)
    old = outside_misc(ref / "standby") if force else None
    counts = count_calls(argv(ref), tmp_path)
    new = outside_misc(ref / "standby")
    assert_objects(ref / "standby", m["master"]["objects"])
    assert _leftovers(ref) == []

    def one(call, when, work):
        prepare(work)
        where = "killed at %s #%d" % (call, when)
        proc = subprocess.run([STRACE, "-o", "/dev/null", "-e", inject(call, when), *argv(work)],
                              capture_output=True, text=True, timeout=120, check=False)
        dest = work / "standby"
        if proc.returncode == 0:
            labels = ["finished before the kill point"]
        else:
            assert proc.returncode == -signal.SIGKILL, "%s: exit %s\n%s" % (where, proc.returncode, proc.stderr)
            labels = ["kills"]
        aside = [p for p in work.iterdir() if p.name.startswith(".standby.replaced-")]
        if not dest.exists() and aside:
            # between the two renames of a filesystem without RENAME_EXCHANGE: the
            # old replica whole, set aside, for the next clone to put back
            assert over == "force-no-exchange", "%s: the old replica was moved aside" % where
            assert [outside_misc(p) for p in aside] == [old], "%s: the old replica set aside is not whole" % where
            labels.append("old replica set aside")
        elif not dest.exists():
            assert not force, "%s: the old replica is gone from its place" % where
            labels.append("nothing")
        else:
            now = outside_misc(dest)
            assert now in (old, new), "%s: the destination is neither the old replica nor the new copy" % where
            labels.append("old replica" if now == old else "new copy")
        again = subprocess.run(argv(work) + (["--force"] if dest.exists() and not force else []),
                               capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, "%s: the next clone failed: %s" % (where, again.stderr)
        assert outside_misc(dest) == new, "%s: the next clone did not give the new copy" % where
        assert _leftovers(work) == [], "%s: left behind: %s" % (where, _leftovers(work))
        return labels

    points = kill_points(counts, LIGHT if force else SAMPLED)
    figures = run_kill_points(points, one, tmp_path)
    assert figures["kills"] >= len(points) * 0.9, figures
    assert figures["new copy"] and (figures["old replica"] if force else figures["nothing"]), figures
    if over == "force-no-exchange":
        assert figures["old replica set aside"], figures
        # a clone without --force after such a crash: the old replica is put back and kept
        work = tmp_path / "run0"
        prepare(work)
        crashed = subprocess.run([STRACE, "-o", "/dev/null", "-e", inject("rename", counts["rename"]), *argv(work)],
                                 capture_output=True, text=True, timeout=120, check=False)
        assert crashed.returncode == -signal.SIGKILL and not (work / "standby").exists()
        refused = subprocess.run([c for c in argv(work) if c != "--force"], capture_output=True, text=True,
                                 timeout=120, check=False)
        assert refused.returncode != 0 and "already holds a storage" in refused.stderr, refused.stderr
        assert outside_misc(work / "standby") == old and _leftovers(work) == []
    report(request, "clone_crash_points_" + over,
           dict(calls=dict(sorted(counts.items())), **figures))


def test_direct_snapshot_serve_killed_at_every_disk_change(unpack_fixture, tmp_path, request):
    """The master's side: a stopped master that crashed with committed
    transactions still in its journal (golden `crashed-master` case).  Its serve
    takes the `direct` snapshot (recover the journal, recombine B/, write
    misc/snapshot) and is killed at each of its disk changes.  The pull fails
    retryably or clearly, the replica is unchanged, and the next pull recovers
    the master and brings the replica to exactly the recovered master."""
    pristine = unpack_fixture("crashed-master")
    m = manifest(pristine)
    old = outside_misc(pristine / "replica")
    wrapper = tmp_path / "traced-ds-replica"
    wrapper.write_text('#!/bin/sh\nexec %s -o "$DS_STRACE_OUT" $DS_STRACE_ARGS %s "$@"\n' % (STRACE, DS_REPLICA))
    wrapper.chmod(0o755)

    def argv(case):
        return [DS_REPLICA, "-q", "-e", LOCAL_SSH, "--remote-command", str(wrapper), "local:%s" % (case / "master"),
                str(case / "replica")]

    ref = tmp_path / "reference"
    shutil.copytree(pristine, ref, symlinks=True)
    out = tmp_path / "strace-counts.txt"
    env = dict(os.environ, DS_STRACE_OUT=str(out), DS_STRACE_ARGS="-c -U name,calls")
    proc = subprocess.run(argv(ref), capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    counts = parse_counts(out)
    assert counts.get("rename"), counts
    new = outside_misc(ref / "replica")
    recovered = outside_misc(ref / "master")
    assert_objects(ref / "replica", m["after_recovery"]["objects"])

    def one(call, when, work):
        fresh_copy(pristine, work)
        where = "serve killed at %s #%d" % (call, when)
        env = dict(os.environ, DS_STRACE_OUT="/dev/null", DS_STRACE_ARGS="-e " + inject(call, when))
        proc = subprocess.run(argv(work), capture_output=True, text=True, timeout=120, check=False, env=env)
        if proc.returncode == 0:
            labels = ["finished before the kill point"]
            assert outside_misc(work / "replica") == new, where
        else:
            assert proc.returncode in (1, 75) and proc.stderr.count("\n") == 1, "%s: %r" % (where, proc.stderr)
            assert "Traceback" not in proc.stderr, where
            labels = ["kills", "exit %d" % proc.returncode]
            assert outside_misc(work / "replica") == old, "%s: the replica changed" % where
            # the master is left for its own recovery: no lock held by the dead serve
            assert not storage.Storage(work / "master").lock().probe()[0], where
        again = subprocess.run(argv(work), capture_output=True, text=True, timeout=120, check=False,
                               env=dict(os.environ, DS_STRACE_OUT="/dev/null", DS_STRACE_ARGS=""))
        assert again.returncode == 0, "%s: the next pull failed: %s" % (where, again.stderr)
        assert outside_misc(work / "replica") == new, "%s: the replica is not the recovered master" % where
        assert outside_misc(work / "master") == recovered, "%s: the master did not recover the same" % where
        assert storage.Storage(work / "master").snapshot_code() == "shutdown", where
        return labels

    points = kill_points(counts, LIGHT)
    figures = run_kill_points(points, one, tmp_path)
    assert figures["kills"] >= len(points) * 0.9, figures
    report(request, "serve_crash_points_direct", dict(calls=dict(sorted(counts.items())), **figures))
