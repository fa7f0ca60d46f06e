"""What a standby key can make `ds-replica serve` do on the master (issue 20):
no request holds the master in snapshot mode longer than the serve's own
reads, no answer is written while it is held, a standby that stops reading
is dropped, a delta inventory is parsed within bounds, symbolic links in the
storage are never followed, and the disk the serve uses is bounded and
cleaned after a SIGKILL."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from dirstorage_replica import protocol, serve
from dirstorage_replica.clone import clone
from dirstorage_replica.errors import Refused
from dirstorage_replica.storage import Storage, transaction_name
from testbed.fakes.simulated_storage import SimulatedStorage, create_storage
from testbed.fakes.toolkit import ToolkitServer

DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


@pytest.fixture
def master(tmp_path):
    home = tmp_path / "master"
    create_storage(str(home), "bushy")
    tm = SimulatedStorage(str(home))
    tm.open()
    for _unused in range(6):  # some big objects: more than a pipe holds
        tm.commit({tm.new_oid(): os.urandom(300_000)})
    tm.flush()
    toolkit = ToolkitServer(tm)
    toolkit.write_snapshot_conf(str(home), extra_lines=["nodirect"])
    yield tm, toolkit, home
    toolkit.stop()
    if tm.is_open:
        tm.close()


def _staging(home):
    return [p for p in (home / "misc").iterdir() if p.name.startswith(".clone-")]


def _identity(home):
    return Storage(str(home)).identity


def _pull(home, version=1, options=None):
    return protocol.Request("request", version, _identity(home), b"\0" * 8, EMPTY_MD5, options or {}).encode()


def _serve_no_reader(home, *args, request=b"replica clone 1\n\n"):
    """A standby that sends its request and never reads the answer."""
    proc = subprocess.Popen([DS_REPLICA, "serve", *args, str(home)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(request)
    proc.stdin.close()
    return proc


def _wait(what, condition, seconds=20):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# ------------------------------------------------------------- item 1

def test_a_standby_that_never_reads_holds_nothing_and_is_dropped(master, tmp_path):
    tm, toolkit, home = master
    proc = _serve_no_reader(home, "--write-timeout", "3")
    _wait("the serve never left snapshot mode", lambda: toolkit.calls["leaveSnapshot"] >= 1 and _staging(home))
    # a second standby gets its copy meanwhile (no 30 s wait, no exit 75)
    t0 = time.monotonic()
    result = clone(str(home), str(tmp_path / "second"))
    assert time.monotonic() - t0 < 20 and result["snapshot_seconds"] < 5
    copy = Storage(str(tmp_path / "second"))
    assert copy.last_tid() == tm.last_tid
    # the stalled one is dropped at its write deadline, and its staged tree goes
    proc.wait(timeout=30)
    err = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == 75  # a transport failure (DSError.retryable)
    assert err.strip().splitlines() == ["ds-replica serve: the standby read nothing of the answer for 3s; dropped "
                                        "it; check the standby and the network"]
    assert _staging(home) == []
    assert tm.snapshot_code is None


def test_no_request_option_streams_a_copy_from_snapshot_mode(master):
    tm, toolkit, home = master
    proc = subprocess.run([DS_REPLICA, "serve", str(home)], input=b"replica clone 1\nstage: 0\n\n",
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().splitlines() == ["ds-replica serve: unknown request option 'stage' for replica "
                                                 "clone 1"]
    assert toolkit.calls["enterSnapshot"] == 0


def test_a_copy_that_cannot_be_staged_is_refused_not_streamed(master, monkeypatch):
    tm, toolkit, home = master

    def no_links(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(serve.os, "link", no_links)
    out = io.BytesIO()
    with pytest.raises(Refused, match=r"cannot stage the copy with hard links .* never sent from snapshot mode"):
        serve.serve(str(home), io.BytesIO(b"replica clone 1\n\n"), out)
    assert out.getvalue() == b""
    assert tm.snapshot_code is None and _staging(home) == []


class SnapshotSpy(io.BytesIO):
    """stdout that notes every write made while the master is in snapshot mode."""

    def __init__(self, tm):
        super().__init__()
        self.tm = tm
        self.held_writes = 0

    def write(self, data):
        if self.tm.snapshot_code is not None:
            self.held_writes += 1
        return super().write(data)


def _delta(home, entries, options=None):
    return protocol.delta_request(_identity(home), entries, options).encode()


def _unknown_window(home):
    """A chain window that meets no transaction of the master: the answer is `retry`."""
    name = transaction_name(bytes.fromhex("7FFFFFFFFFFFFFF0"))
    return _delta(home, [(name, 100, "0" * 32 + "+" + "0" * 15 + "1")],
                  {"chain": "0" * 16, "chain-complete": "no"})


@pytest.mark.parametrize("what", ["pull 0", "pull 1", "pull gzip", "follow", "clone", "delta", "delta retry",
                                  "verify"])
def test_no_answer_is_written_in_snapshot_mode(master, what):
    tm, toolkit, home = master
    request = {
        "pull 0": lambda: _pull(home, 0),
        "pull 1": lambda: _pull(home, 1),
        "pull gzip": lambda: _pull(home, 1, {"compress": "gzip"}),
        "follow": lambda: _pull(home, 2, {"interval": "0.1", "heartbeat": "1"}),
        "clone": lambda: b"replica clone 1\n\n",
        "delta": lambda: _delta(home, [("x.oid", 8, None)]),
        "delta retry": lambda: _unknown_window(home),
        "verify": lambda: protocol.Request("verify", 1, _identity(home), b"\0" * 8, EMPTY_MD5).encode(),
    }[what]()
    out = SnapshotSpy(tm)
    serve.serve(str(home), io.BytesIO(request), out)
    assert out.getvalue()
    assert out.held_writes == 0
    assert tm.snapshot_code is None


# ------------------------------------------------------------- item 2

def test_a_malformed_inventory_line_is_one_line(master):
    tm, toolkit, home = master
    body = zlib.compress(b"tZZ 10 aa+bb\n")
    request = ("replica delta 1\nchain: 0000000000000000\nchain-complete: no\nidentity: %s\ninventory-bytes: %d\n\n"
               % (_identity(home), len(body))).encode() + body
    proc = subprocess.run([DS_REPLICA, "serve", str(home)], input=request, capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        "ds-replica serve: malformed request: inventory line 'tZZ 10 aa+bb' does not name a storage file"]


def _bomb_of_names(count):
    return b"".join(b"o%016X.c 8 -\n" % i for i in range(1, count + 1))


HOSTILE = {
    # 128 MiB of one line without an end (a 128 KiB upload)
    "one long line": lambda: b"x" * (128 << 20),
    # millions of well-formed names of objects the master never had
    "made-up names": lambda: _bomb_of_names(1_500_000),
    # one name, then many long digests of transactions (the chain window's form)
    "long digests": lambda: b"".join(b"t%06X.%010X 60 %s+%s\n" % (i >> 40, i & 0xFFFFFFFFFF, b"0" * 32, b"A" * 4096)
                                     for i in range(1, 8000)),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_inventory_keeps_the_serve_small(master, kind):
    tm, toolkit, home = master
    body = zlib.compress(HOSTILE[kind](), 9)
    request = ("replica delta 1\nchain: 0000000000000000\nchain-complete: no\nidentity: %s\ninventory-bytes: %d\n\n"
               % (_identity(home), len(body))).encode() + body
    # a wrapper that reports the serve's peak memory (its only child)
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], stdin=sys.stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "sys.stderr.buffer.write(p.stderr)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, DS_REPLICA, "serve", str(home)], input=request,
                          capture_output=True, timeout=300, check=False)
    peak_kib = int(proc.stdout.decode().split()[-1])
    assert peak_kib < 150 * 1024, "serve peaked at %d MiB" % (peak_kib >> 10)
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ds-replica serve: "), lines
    assert "malformed request" in lines[0] or "more than" in lines[0]


# ------------------------------------------------------------- item 10

def _symlinked_x_oid(home, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET-OF-THE-MASTER-ACCOUNT")
    x_oid = home / "A" / "x" / "oid"
    assert x_oid.is_file()
    x_oid.unlink()
    x_oid.symlink_to(secret)


@pytest.mark.parametrize("what", ["clone", "pull", "delta"])
def test_a_symlink_in_the_storage_is_refused(master, tmp_path, what):
    tm, toolkit, home = master
    tm.close()  # the simulated storage would rewrite x.oid
    _symlinked_x_oid(home, tmp_path)
    request = {"clone": lambda: b"replica clone 1\n\n", "pull": lambda: _pull(home, 1),
               "delta": lambda: _delta(home, [("x.oid", 8, None)])}[what]()
    out = io.BytesIO()
    with pytest.raises(Refused, match="x/oid is a symbolic link; a storage holds none"):
        serve.serve(str(home), io.BytesIO(request), out)
    assert b"SECRET" not in out.getvalue()
    assert _staging(home) == []


# ------------------------------------------------------------- item 12

def test_the_spool_past_the_descriptor_budget_is_bounded(master):
    tm, toolkit, home = master
    st = Storage(str(home))
    inc = serve.Increment(fd_budget=0, spool_limit=1 << 20)
    with pytest.raises(Refused, match="more than 1 MiB of spool in \\$TMPDIR"):
        serve.collect(st, b"\0" * 8, inc)
    assert inc.spooled <= 1 << 20
    inc.close()
    # within the bound, the spool still works
    inc = serve.Increment(fd_budget=0, spool_limit=8 << 20)
    serve.collect(st, b"\0" * 8, inc)
    assert inc.spooled >= 6 * 300_000
    inc.close()


def test_a_staged_tree_left_by_a_killed_serve_is_removed_by_the_next_one(master):
    tm, toolkit, home = master
    proc = _serve_no_reader(home)
    _wait("the serve never staged the copy", lambda: toolkit.calls["leaveSnapshot"] >= 1 and _staging(home))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert len(_staging(home)) == 1  # SIGKILL: nothing could clean up
    # the next serve (a pull here, not only a clone) removes it
    out = io.BytesIO()
    serve.serve(str(home), io.BytesIO(_pull(home, 1, {"dry-run": "1"})), out)
    assert out.getvalue().startswith(b"replica answer 1 ")
    assert _staging(home) == []
