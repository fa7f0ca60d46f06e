"""The standby side of `ds-replica follow` (plugins/module_utils/follow.py),
its pure parts: which failures are retried, the pauses, stopping, the label."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from dirstorage_replica import follow
from dirstorage_replica.errors import Busy, Corrupt, DSError, LocalDiskError, Refused, TransportError


@pytest.mark.parametrize("error,retried", [
    (TransportError("the connection to the master broke off (x)"), True),
    (Busy("master m cannot enter snapshot mode: busy"), True),
    (LocalDiskError("cannot store the increment in x (No space left on device)"), True),
    (Refused("master refused: replica identity a does not match master identity b"), False),
    (Refused("master refused: storage has been packed since the last replica"), False),
    (Corrupt("the increment is not whole transactions"), False),
    (DSError("replica r has been promoted"), False),
])
def test_only_what_waiting_can_cure_is_retried(error, retried):
    assert follow.retryable(error) is retried


def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_success():
    backoff = follow.Backoff(30)
    assert [backoff.next() for _unused in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next() == 1


def test_stop_waits_for_the_end_of_a_shielded_block():
    stop = follow.StopSwitch()
    done = []
    with pytest.raises(follow.Stopped):
        with stop.shielded():
            stop.ask()  # the signal arrives while an increment is applied
            done.append("applied")
    assert done == ["applied"]
    with pytest.raises(follow.Stopped):
        stop.ask()  # outside: at once


def test_stop_cuts_a_pause_short():
    stop = follow.StopSwitch()
    stop.asked = True
    with pytest.raises(follow.Stopped):
        stop.sleep(3600)
    shielded = follow.StopSwitch()
    with pytest.raises(follow.Stopped):
        with shielded.shielded():
            shielded.ask()
            t0 = time.monotonic()
            shielded.sleep(3600)  # shielded: the flag ends it, then the block
    assert time.monotonic() - t0 < 1


SIGNALLED_FOLLOWER = """
import os, signal, sys
from dirstorage_replica import follow
stop = follow.StopSwitch()
signal.signal(signal.SIGTERM, lambda *_: stop.ask())
os.write(1, b"R")
try:
    while True:
        stop.sleep(0)
except follow.Stopped:
    sys.exit(0)
"""


def test_sigterm_during_a_pause_always_stops_the_follower():
    """The follower's handler calls ask() whatever the main thread is doing, within a pause included;
    with a threading.Event behind the pause, about half of these stops hung for good (the handler
    waited for the lock that the interrupted Event.wait held)."""
    rng = random.Random(7)
    hung = []
    for attempt in range(20):
        proc = subprocess.Popen([sys.executable, "-c", SIGNALLED_FOLLOWER], stdout=subprocess.PIPE)
        assert proc.stdout.read(1) == b"R"
        time.sleep(rng.uniform(0.005, 0.03))
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=5) == 0
        except subprocess.TimeoutExpired:
            hung.append(attempt)
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert hung == []


@pytest.mark.parametrize("path,label", [("/var/lib/node/dirstorage_main.prom", "main"),
                                        ("/tmp/other.prom", "replica"), (None, "replica")])
def test_metrics_label_is_the_cron_wrappers(path, label):
    assert follow.metrics_label(path, "/srv/replica/") == label


def test_an_old_master_is_explained():
    error = Refused("master refused: unsupported request version request 2: this master speaks versions 0 and 1")
    explained = follow._explained(error)
    assert "does not speak request version 2, which following needs" in str(explained)
    assert "cron" in explained.hint
    other = Refused("master refused: replica identity a does not match master identity b")
    assert follow._explained(other) is other


def test_a_metrics_file_that_cannot_be_written_is_said_once_and_not_fatal(tmp_path):
    (tmp_path / "replica" / "misc").mkdir(parents=True)
    said = []
    recorder = follow.Recorder(str(tmp_path / "replica"), str(tmp_path / "missing" / "dirstorage_main.prom"),
                               warn=said.append)
    for _unused in range(3):
        recorder.success(0.0, {"lag_seconds": 0.5})
        recorder.failure(0.0)
    assert len(said) == 1 and "cannot write the metrics file" in said[0] and "following goes on" in said[0]
    (tmp_path / "missing").mkdir()
    recorder.success(0.0, {"lag_seconds": 0.5})
    assert (tmp_path / "missing" / "dirstorage_main.prom").exists()


def _result(transactions, nbytes, **more):
    return dict({"transactions": transactions, "files": transactions, "bytes": nbytes, "wire_bytes": nbytes,
                 "snapshot_seconds": 0.1}, **more)


def test_spooled_increments_are_applied_as_one_result(tmp_path):
    (tmp_path / "misc").mkdir()
    spool = follow.Spool(str(tmp_path))
    spool.reset(b"\0" * 8)
    for n, tip in ((2, b"\1" * 8), (0, b"\2" * 8), (3, b"\3" * 8)):
        path = spool.next_path()
        open(path, "wb").close()
        spool.add(path, _result(n, 100 * n, master_tid="t%d" % n), tip, 10.0 + n, 20.0 + n)
    assert spool.tip == b"\3" * 8  # the empty increment was dropped, its file too
    assert sorted(os.listdir(tmp_path / "misc")) == [follow.SPOOL_PREFIX + "%d.%d" % (os.getpid(), n) for n in (1, 3)]
    result, started, t0 = spool.merged()
    assert (result["transactions"], result["files"], result["bytes"], result["wire_bytes"]) == (5, 5, 500, 500)
    assert (result["snapshot_seconds"], result["increments"], result["master_tid"]) == (0.2, 2, "t3")
    assert (started, t0) == (12.0, 22.0)  # the first increment's
    spool.reset(b"\4" * 8)
    assert os.listdir(tmp_path / "misc") == [] and spool.items == [] and spool.tip == b"\4" * 8


def test_the_spool_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(follow, "SPOOL_LIMITS", (3, 1000))
    spool = follow.Spool(str(tmp_path))
    spool.reset(b"\0" * 8)
    for nbytes in (10, 10):
        spool.add(spool.next_path(), _result(1, nbytes), b"\1" * 8, 0.0, 0.0)
    assert not spool.full()
    spool.add(spool.next_path(), _result(1, 10), b"\1" * 8, 0.0, 0.0)
    assert spool.full()  # by count
    spool.reset(b"\1" * 8)
    spool.add(spool.next_path(), _result(1, 1000), b"\1" * 8, 0.0, 0.0)
    assert spool.full()  # by bytes


def test_a_killed_followers_spool_files_are_removed_not_a_running_ones(tmp_path):
    (tmp_path / "misc").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = [follow.SPOOL_PREFIX + "%d.1" % pid for pid in (dead.pid, os.getpid())] + [follow.SPOOL_PREFIX + "x"]
    for name in names + ["lock"]:
        (tmp_path / "misc" / name).write_bytes(b"")
    follow.Spool(str(tmp_path)).remove_leftovers()
    assert sorted(os.listdir(tmp_path / "misc")) == sorted([names[1], "lock"])
