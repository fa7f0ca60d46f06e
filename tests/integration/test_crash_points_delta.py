"""`clone --delta` killed at every step that changes the disk, as
tests/integration/test_crash_points.py does for `clone --force`: an old
master that committed two transactions the new master never saw is re-seeded
from the new master.

By a new tree (issue 11; the new master packed past the anchor): after each
kill, the destination is the old storage or the new copy, never anything
else; the old storage, whole, is somewhere a person finds it (in place, or
kept aside as `standby.before-reseed-*`, or in a hidden folder the next run
renames to that name).  The next `clone --delta` exits 0, leaves the new
copy, exactly one kept-aside old storage, and no hidden folder.

In place (issue 19): after each kill, the standby reads as the old storage
or the new one (a pending journal/replica.tar applied, as any tool opening it
does; the diverged files, which nothing reaches, possibly not yet removed),
and past the commit point the keep-aside folder is whole.  The next run
exits 0 and leaves what a clean run leaves.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from dirstorage_replica import journal, storage
from testbed.harness.reliability import report
from tests.integration.test_crash_points import (
    DS_REPLICA,
    LOCAL_SSH,
    SAMPLED,
    STRACE,
    inject,
    kill_points,
    parse_counts,
    run_kill_points,
)
from tests.integration.test_failover_engine import commit, outside_misc
from tests.support import power_ops
from tests.support.crash_calls import fresh_copy

pytestmark = pytest.mark.slow
# calls many and alike (the kept files' links, the members' writes): with
# SOAK=1 (make soak runs these tests from tests/soak/test_crash_points_delta_soak.py)
# every call of every kind, but a spread of 60 of the kinds that come by the
# hundred; in `make test`, kill_points' spread of a few calls of each kind
MANY = ("close", "write", "link", "linkat", "unlinkat")
DELTA_SAMPLED = {call: 60 for call in MANY}


def count_calls(argv, tmp_path):
    """test_crash_points.count_calls, following threads (-f): the kept
    files are linked in a thread while the master compares.  (-f also
    follows the master's serve, started through local_ssh.py: a kill there
    is a master lost in the middle of the answer, a crash point as well.)"""
    out = tmp_path / "strace-counts.txt"
    proc = subprocess.run([STRACE, "-f", "-c", "-U", "name,calls", "-o", str(out), *argv],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return parse_counts(out)


def killed_in_serve(log):
    """True if the `strace -f` log shows a SIGKILL and every process or thread killed
    is on the master's side: the process that exec'd the ssh stand-in (local_ssh.py,
    which execs `ds-replica serve`), or one of its own."""
    parent, serve, killed = {}, set(), set()
    for line in Path(log).read_text(errors="replace").splitlines():
        m = re.match(r"^(\d+)\s+(.*)$", line)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        child = re.search(r"= (\d+)$", rest)
        if child and re.match(r"^(<\.\.\. )?(clone3?|fork|vfork)\b", rest):
            parent[int(child.group(1))] = pid
        elif _master_side_exec(rest):
            serve.add(pid)
        elif rest.startswith("+++ killed by SIGKILL"):
            killed.add(pid)

    def of_serve(pid):
        while pid is not None and pid not in serve:
            pid = parent.get(pid)
        return pid is not None

    return bool(killed) and all(of_serve(pid) for pid in killed)


def _master_side_exec(call):
    """An execve of the ssh stand-in (python local_ssh.py ...) or of `ds-replica serve`: its
    second argument (strace -s 512 shows it whole)."""
    m = re.match(r'^execve\("[^"]*", \["[^"]*", "([^"]*)"', call)
    return m is not None and (m.group(1) == "serve" or m.group(1).endswith("/local_ssh.py"))


def _hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _kept_aside(parent):
    return sorted(parent.glob("standby.before-reseed-*"))


def failover(pristine, packed):
    shutil.copytree(pristine / "master", pristine / "standby", symlinks=True)
    commit(pristine / "master", b"after failover")  # the promoted standby wrote on
    commit(pristine / "standby", b"late 1", b"late 2")  # the old master, unseen by the new one
    if packed:
        power_ops._pack_past(pristine / "master")  # and packed: no in-place re-seed


def test_clone_delta_killed_at_every_disk_change(unpack_fixture, tmp_path, request):
    pristine = unpack_fixture("bushy")
    failover(pristine, packed=True)
    old = outside_misc(pristine / "standby")

    def argv(parent):
        return [DS_REPLICA, "clone", "--delta", "-q", "-e", LOCAL_SSH, "--remote-command", DS_REPLICA,
                "local:%s" % (parent / "master"), str(parent / "standby")]

    def prepare(parent):
        if parent.exists():
            shutil.rmtree(parent)
        parent.mkdir()
        for name in ("master", "standby"):
            shutil.copytree(pristine / name, parent / name, symlinks=True)

    ref = tmp_path / "reference"
    prepare(ref)
    counts = count_calls(argv(ref), tmp_path)
    new = outside_misc(ref / "standby")
    assert new != old and _hidden(ref) == []
    assert [outside_misc(p) for p in _kept_aside(ref)] == [old]

    def one(call, when, work):
        prepare(work)
        where = "killed at %s #%d" % (call, when)
        log = tmp_path / ("%s.strace" % work.name)
        proc = subprocess.run([STRACE, "-f", "-s", "512", "-o", str(log), "-e", inject(call, when),
                               *argv(work)],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0:
            labels = ["finished before the kill point"]
        elif proc.returncode == -signal.SIGKILL:
            assert not killed_in_serve(log), "%s: the re-seed died, yet only the serve was killed" % where
            labels = ["kills"]
        else:  # -f follows the master's serve too: killed there, the re-seed fails cleanly
            assert killed_in_serve(log), "%s: the re-seed failed, yet no process of the serve was killed" % where
            assert "ds-replica: " in proc.stderr and proc.stderr.count("\n") == 1, "%s: %s" % (where, proc.stderr)
            labels = ["master killed"]
        now = outside_misc(work / "standby")
        assert now in (old, new), "%s: the destination is neither the old storage nor the new copy" % where
        labels.append("old storage" if now == old else "new copy")
        trees = [outside_misc(p) for p in _kept_aside(work) + [work / h for h in _hidden(work)]]
        assert now == old or old in trees, "%s: the old storage is nowhere whole" % where
        again = subprocess.run(argv(work), capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, "%s: the next clone --delta failed: %s" % (where, again.stderr)
        assert outside_misc(work / "standby") == new, "%s: the next run did not give the new copy" % where
        assert _hidden(work) == [], "%s: left behind: %s" % (where, _hidden(work))
        assert [outside_misc(p) for p in _kept_aside(work)] == [old], "%s: not one whole old storage aside" % where
        return labels

    points = kill_points(counts, DELTA_SAMPLED)
    figures = run_kill_points(points, one, tmp_path)
    # strace counts the Nth call per thread: a point past one thread's calls finishes unkilled (more of
    # them since the in-place attempt's own serve, which asks and ends, adds to the counts: 0.62 measured)
    assert figures["kills"] + figures["master killed"] >= len(points) * 0.55, figures
    assert figures["kills"] >= len(points) * 0.5, figures
    assert figures["old storage"] and figures["new copy"], figures
    report(request, "clone_delta_crash_points", dict(calls=dict(sorted(counts.items())), **figures))


def _opened(home, tmp_path):
    """What a tool opening the storage reads: recovery applies a pending increment (on a copy)."""
    if not power_ops._pending(home):
        return outside_misc(home)
    opened = tmp_path / ("opened-%s" % home.parent.name)
    fresh_copy(home, opened)
    st = storage.Storage(opened)
    with st.lock(), st.sublock():
        journal.recover(st)
    state = outside_misc(opened)
    shutil.rmtree(opened)
    return state


def test_in_place_reseed_killed_at_every_disk_change(unpack_fixture, tmp_path, request):
    pristine = unpack_fixture("bushy")
    failover(pristine, packed=False)
    old = outside_misc(pristine / "standby")

    def argv(parent):
        return [DS_REPLICA, "clone", "--delta", "-q", "--json", "-e", LOCAL_SSH, "--remote-command", DS_REPLICA,
                "local:%s" % (parent / "master"), str(parent / "standby")]

    def prepare(parent):
        if parent.exists():
            shutil.rmtree(parent)
        parent.mkdir()
        for name in ("master", "standby"):
            shutil.copytree(pristine / name, parent / name, symlinks=True)

    ref = tmp_path / "reference"
    prepare(ref)
    counts = count_calls(argv(ref), tmp_path)
    new = outside_misc(ref / "standby")
    assert [outside_misc(p) for p in _kept_aside(ref)] != [old] and len(_kept_aside(ref)) == 1
    aside = outside_misc(_kept_aside(ref)[0])
    states = {"before": {"s": old}, "after": {"s": new}}
    assert any(p.startswith("A/t") for p in aside) and _hidden(ref) == []

    def one(call, when, work):
        prepare(work)
        where = "killed at %s #%d" % (call, when)
        proc = subprocess.run([STRACE, "-f", "-o", "/dev/null", "-e", inject(call, when), *argv(work)],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0:
            labels = ["finished before the kill point"]
        elif proc.returncode == -signal.SIGKILL:
            labels = ["kills"]
        else:  # -f follows the master's serve too: killed there, the re-seed fails cleanly
            assert "ds-replica: " in proc.stderr and proc.stderr.count("\n") == 1, "%s: %s" % (where, proc.stderr)
            labels = ["master killed"]
        now = _opened(work / "standby", tmp_path / call)
        if any(power_ops._atomic_temp(path) for path in now):  # a small file's write cut before its rename
            now = {path: v for path, v in now.items() if not power_ops._atomic_temp(path)}
            labels.append("a temporary file left")
        if now not in (old, new) and power_ops._after_with_orphans(now, states, "s"):
            labels.append("diverged files not yet removed")
            now = new
        assert now in (old, new), "%s: the standby reads neither as the old storage nor as the new one" % where
        labels.append("old storage" if now == old else "new storage")
        kept = [outside_misc(p) for p in _kept_aside(work)]
        assert all(k == aside for k in kept), "%s: a keep-aside folder is not whole" % where
        assert now == old or kept, "%s: past the commit point, the diverged transactions are kept nowhere" % where
        again = subprocess.run(argv(work), capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, "%s: the next clone --delta failed: %s" % (where, again.stderr)
        assert outside_misc(work / "standby") == new, "%s: the next run did not give the new storage" % where
        assert _hidden(work) == [], "%s: left behind: %s" % (where, _hidden(work))
        assert [outside_misc(p) for p in _kept_aside(work)] == [aside], "%s: not one whole keep-aside" % where
        assert not list(work.glob("standby.before-reseed-*/misc/reseed-pending")), where
        return labels

    points = kill_points(counts, dict(SAMPLED, close=6, write=8))
    figures = run_kill_points(points, one, tmp_path)
    assert figures["kills"] >= len(points) * 0.5, figures
    assert figures["old storage"] and figures["new storage"], figures
    report(request, "in_place_reseed_crash_points", dict(calls=dict(sorted(counts.items())), **figures))
