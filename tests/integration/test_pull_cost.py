"""A pull costs what changed, not what exists (issue 25), counted in system
calls: timings on a shared machine are noise, counts are not.

Two storages, one ten times the other (bench/generate.py's generator, no
fsync), get the very same increment: K transactions of the same objects with
the same tids and the same bytes.  The same pull runs against each, the
standby under `strace -c` (the pull process alone) and the master's serve
under its own `strace -f -c` (testbed/ssh_standins/local_ssh.py stands in for ssh, so
the serve is a process of its own to trace).  Every file or descriptor call,
on either side, must be made as many times against the big storage as against
the small one: nothing may read, stat or list anything whose number grows
with the storage rather than with the increment.

Slack: none for any call that names a path or lists a folder.  The two
increments write the same names into folders that exist in both storages
(the objects are old ones; the new tids are the same), so even mkdir makes
the same calls.  Only read and write on the ssh pipes may differ by a few
calls (PIPE_SLACK): how the answer's bytes are cut into reads depends on
timing, not on the storage (the same pull twice gave 937 and 940 reads).

And what an increment costs, per file (the deep paths of a big storage make
every lookup dear): the master opens each file of the increment once (it read
each transaction file twice before issue 25), and the standby looks up no
folder it does not need to make (it checked every file's folder with a mkdir
and two stats before).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dirstorage_replica import storage as ds
from testbed.harness.reliability import DS_REPLICA
from tests.support.crash_calls import STRACE

ROOT = Path(__file__).resolve().parent.parent.parent
LOCAL_SSH_PY = ROOT / "testbed" / "ssh_standins" / "local_ssh.py"
SMALL, BIG = 2000, 20000  # object revisions in the two storages
K = 20  # transactions in the increment
OIDS = range(1, 9)  # old objects (in both storages): each transaction writes a revision of each
INCREMENT_EPOCH = 1700000000.0  # 2023-11-14: after both storages' history (bench/generate.py starts in 2020)
TRACED = "trace=%file,%desc"  # every call that names a path or uses a descriptor
PIPE_SLACK = {"read": 16, "write": 16}  # pipe reads and writes: cut by timing (see above)

pytestmark = pytest.mark.slow


def _generator():
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_fixed_increment(gen, home):
    """K transactions writing OIDS, with fixed tids and bytes, as the storage
    leaves A/ (write-once files new, mutable ones replaced by rename).
    Returns the HOME-relative paths it wrote."""
    st = ds.Storage(home)
    w = gen.Writer(home, st.format)
    w.record = True
    last = st.last_tid()
    prev = {o: st.current(o.to_bytes(8, "big")) for o in OIDS}
    for i in range(K):
        tid = ds.tid_from_epoch(INCREMENT_EPOCH + 2 * i)
        for o in OIDS:
            oid = o.to_bytes(8, "big")
            w.write_once(ds.revision_name(oid, tid), ds.build_revision(oid, tid, prev[o], b"\x80\x03" + bytes(300 + o)))
            prev[o] = tid
        w.write_once(ds.transaction_name(tid),
                     ds.build_transaction(tid, last, [o.to_bytes(8, "big") for o in OIDS], description=b"inc %d" % i))
        last = tid
    for o in OIDS:
        w.replace(ds.current_name(o.to_bytes(8, "big")), prev[o])
    w.replace("x.serial", last)
    return w.written


def make_pair(gen, where, n):
    """where/replica: a storage of n revisions; where/master: the same plus
    the increment.  Returns (master, replica, paths of the increment)."""
    replica, master = where / "replica", where / "master"
    gen.make_base(str(replica), n)
    gen.link_copy(str(replica), str(master))
    return master, replica, add_fixed_increment(gen, str(master))


def parse_trace(path):
    """`strace -C -U name,calls` output -> ({syscall: calls}, [trace lines])."""
    counts, lines = {}, []
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^\s*(\w+)\s+(\d+)\s*$", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
        else:
            lines.append(line)
    return counts, lines


def counted_pull(master, replica, out):
    """One pull; returns ((standby counts, lines), (master counts, lines))."""
    standby_txt, master_txt = out / "standby.txt", out / "master.txt"
    traced_ssh = "%s -f -C -U name,calls -e %s -o %s %s %s" % (STRACE, TRACED, master_txt, sys.executable,
                                                               LOCAL_SSH_PY)
    argv = [STRACE, "-C", "-U", "name,calls", "-e", TRACED, "-o", str(standby_txt),
            DS_REPLICA, "-q", "--json", "-e", traced_ssh, "--remote-command", DS_REPLICA,
            "local:%s" % master, str(replica)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"transactions": %d' % K in proc.stdout, proc.stdout
    return parse_trace(standby_txt), parse_trace(master_txt)


def opened(lines, home):
    """{HOME-relative path: times opened} from trace lines."""
    seen = {}
    for line in lines:
        m = re.search(r'openat\(AT_FDCWD, "%s/([^"]+)"' % re.escape(str(home)), line)
        if m:
            seen[m.group(1)] = seen.get(m.group(1), 0) + 1
    return seen


def grown(small, big):
    """The calls made more often against the big storage: {call: (small, big)}."""
    return {call: (small.get(call, 0), n) for call, n in big.items()
            if call != "total" and n > small.get(call, 0) + PIPE_SLACK.get(call, 0)}


def test_pull_syscalls_do_not_grow_with_the_storage(tmp_path):
    probe = subprocess.run([STRACE, "-o", "/dev/null", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.fail("strace cannot trace here (%s): run `make deps` as root to install it, and allow ptrace"
                    % probe.stderr.strip(), pytrace=False)
    gen = _generator()
    counts, traces = {}, {}
    for n in (SMALL, BIG):
        where = tmp_path / ("n%d" % n)
        master, replica, members = make_pair(gen, where, n)
        (standby, standby_lines), (serve, serve_lines) = counted_pull(master, replica, where)
        counts[n] = standby, serve
        traces[n] = master, replica, members, standby_lines, serve_lines
        assert ds.Storage(str(replica)).last_tid() == ds.tid_from_epoch(INCREMENT_EPOCH + 2 * (K - 1))
    (standby_small, master_small), (standby_big, master_big) = counts[SMALL], counts[BIG]
    files = sum(len(f) for _d, _s, f in os.walk(tmp_path / ("n%d" % BIG) / "replica" / "A"))
    assert files > 25000, files  # the big storage is big
    assert standby_small.get("openat") and master_small.get("openat")  # both sides were traced
    assert grown(standby_small, standby_big) == {}, "the standby's calls grew with the storage"
    assert grown(master_small, master_big) == {}, "the master's calls grew with the storage"

    master, replica, members, standby_lines, serve_lines = traces[BIG]
    assert len(members) == K * (len(OIDS) + 1) + len(OIDS) + 1  # revisions, transactions, o....c, x.serial
    reads = opened(serve_lines, master)
    assert {rel: reads.get(rel, 0) for rel in members if not rel.startswith("A/x/")} == \
        {rel: 1 for rel in members if not rel.startswith("A/x/")}, "the master opens each file of the increment once"
    # folders: made where missing (os.makedirs finds the first existing one with a stat), never tried where present
    calls = [line for line in standby_lines if re.search(r'(stat|mkdir)\(("|AT_FDCWD, ")%s[/"]'
                                                         % re.escape(str(replica / "A")), line)]
    made = [line for line in calls if "mkdir(" in line and line.endswith("= 0")]
    found = [line for line in calls if "stat(" in line and line.endswith("= 0")]
    assert [line for line in calls if "EEXIST" in line] == [], "the standby tries to make folders that exist"
    assert len(found) <= len(made), "the standby looks up folders of A/ it does not need to make"
