"""`ds-replica serve` leaves snapshot mode on every way out: SIGTERM, SIGHUP
and a reader that goes away, while it is staging a first copy in snapshot
mode; and a staged first copy is sent after snapshot mode is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.fakes.simulated_storage import SimulatedStorage, create_storage
from testbed.fakes.toolkit import ToolkitServer

DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))


@pytest.fixture
def master(tmp_path):
    home = tmp_path / "master"
    create_storage(str(home), "bushy")
    tm = SimulatedStorage(str(home))
    tm.open()
    for _unused in range(6):  # some big objects: more than a pipe holds
        tm.commit({tm.new_oid(): os.urandom(300_000)})
    toolkit = ToolkitServer(tm)
    toolkit.write_snapshot_conf(str(home), extra_lines=["nodirect"])
    yield tm, toolkit, home
    toolkit.stop()
    tm.close()


# a serve whose staging of a first copy takes argv[1] seconds longer, in
# snapshot mode (the only step of a clone that happens there)
SLOW_STAGING = ("import sys, time\n"
                "from dirstorage_replica import serve\n"
                "stage = serve.stage_clone\n"
                "def slow(*a, **k):\n"
                "    folder = stage(*a, **k)\n"
                "    time.sleep(float(sys.argv[1]))\n"
                "    return folder\n"
                "serve.stage_clone = slow\n"
                "from dirstorage_replica.cli import main\n"
                "sys.exit(main(['serve'] + sys.argv[2:]))\n")


def _staging(home):
    return [p for p in (home / "misc").iterdir() if p.name.startswith(".clone-")]


def _serve_stuck_in_snapshot(tm, home, seconds=60):
    """A clone request whose serve is still staging (in snapshot mode)."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_STAGING, str(seconds), str(home)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"replica clone 1\n\n")
    proc.stdin.close()
    deadline = time.monotonic() + 20
    while not (tm.snapshot_code or "").startswith("user/ds-replica-") or not _staging(home):
        assert time.monotonic() < deadline, "serve never entered snapshot mode"
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_leaves_snapshot_mode(master, sig):
    tm, toolkit, home = master
    proc = _serve_stuck_in_snapshot(tm, home)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    err = proc.stderr.read()
    proc.stdout.close()
    assert proc.returncode != 0
    assert b"terminated by signal" in err
    assert tm.snapshot_code is None  # left, as the first thing after the sublock was released
    assert toolkit.calls["leaveSnapshot"] == 1
    assert _staging(home) == []  # and what was staged is gone


def test_reader_gone_leaves_snapshot_mode(master):
    tm, toolkit, home = master
    proc = _serve_stuck_in_snapshot(tm, home, seconds=1)
    proc.stdout.close()  # the ssh channel is gone
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert tm.snapshot_code is None
    assert toolkit.calls["leaveSnapshot"] == 1
    assert _staging(home) == []


def test_staged_clone_leaves_snapshot_before_sending(master):
    """By default a first copy is hard-linked into misc/.clone-CODE in snapshot
    mode and sent afterwards: a reader that does not read holds nothing."""
    tm, toolkit, home = master
    proc = subprocess.Popen([DS_REPLICA, "serve", str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(b"replica clone 1\n\n")
    proc.stdin.close()
    deadline = time.monotonic() + 20
    while toolkit.calls["leaveSnapshot"] < 1:
        assert time.monotonic() < deadline, "serve never left snapshot mode"
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None  # still sending, blocked on the pipe...
    assert tm.snapshot_code is None  # ...with the master out of snapshot mode
    assert len(_staging(home)) == 1
    tm.commit({1: b"written while the copy is being sent"})  # the storage is fully live
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert _staging(home) == []  # cleaned up on the way out


def test_stale_staging_of_a_dead_serve_is_removed(master, tmp_path):
    import socket

    from dirstorage_replica import storage
    from dirstorage_replica.clone import clone
    tm, toolkit, home = master
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = home / "misc" / (".clone-ds-replica-%s-%d" % (socket.gethostname(), dead.pid))
    (stale / "A").mkdir(parents=True)
    result = clone(str(home), str(tmp_path / "copy"))
    assert result["snapshot_seconds"] < 5
    assert _staging(home) == []
    assert tm.snapshot_code is None
    copy = storage.Storage(str(tmp_path / "copy"))
    for oid in range(1, tm.last_oid + 1):
        assert copy.load(oid.to_bytes(8, "big")) == tm.load(oid)


def test_staging_is_removed_after_the_serve_has_answered(master, tmp_path):
    """The serve on the master does not make the standby wait while it unlinks
    the staged tree: a detached child removes it after the answer is complete."""
    from dirstorage_replica import storage
    tm, toolkit, home = master
    # the serve, with removing a staging folder made slow (3 s): the answer and
    # the exit status must not wait for it, and the folder must still be there
    # when they come
    serve = ("import shutil, sys, time\n"
             "from dirstorage_replica.cli import main\n"
             "rmtree = shutil.rmtree\n"
             "def slow(path, *a, **k):\n"
             "    if '/.clone-' in str(path):\n"
             "        time.sleep(3)\n"
             "    rmtree(path, *a, **k)\n"
             "shutil.rmtree = slow\n"
             "sys.exit(main(['serve', sys.argv[1]]))\n")
    proc = subprocess.run([sys.executable, "-c", serve, str(home)], input=b"replica clone 1\n\n",
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"replica answer 1 ") and proc.stdout.endswith(b"\0" * 1024)
    assert len(_staging(home)) == 1, "the serve waited for the staged copy to be removed"
    deadline = time.monotonic() + 30
    while _staging(home):
        assert time.monotonic() < deadline, "the staged copy was never removed"
        time.sleep(0.05)
    assert tm.snapshot_code is None
    # and the copy a standby makes through it reads as the master
    from dirstorage_replica.clone import clone
    local_ssh = "%s %s" % (sys.executable,
                           Path(__file__).resolve().parents[2] / "testbed" / "ssh_standins" / "local_ssh.py")
    from dirstorage_replica.options import PullOptions
    clone("local:%s" % home, str(tmp_path / "copy"), PullOptions(ssh_command=local_ssh, remote_command=DS_REPLICA))
    copy = storage.Storage(str(tmp_path / "copy"))
    for oid in range(1, tm.last_oid + 1):
        assert copy.load(oid.to_bytes(8, "big")) == tm.load(oid)
    deadline = time.monotonic() + 30
    while _staging(home):
        assert time.monotonic() < deadline, "the staged copy was never removed"
        time.sleep(0.05)
