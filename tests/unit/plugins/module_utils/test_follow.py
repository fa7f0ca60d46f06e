"""The standby side of `ds-replica follow` (plugins/module_utils/follow.py),
its pure parts: which failures are retried, the pauses, stopping, the label."""

from __future__ import annotations

import pytest

from dirstorage_replica import follow
from dirstorage_replica.replica import LocalDiskError
from dirstorage_replica.storage import Busy, Corrupt, DSError, Refused, TransportError


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
    stop.event.set()
    with pytest.raises(follow.Stopped):
        stop.sleep(3600)


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
