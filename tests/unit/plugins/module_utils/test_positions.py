"""Standby positions on the master (positions.py, issue 24): the records a
serve writes, their bounds, and the horizon read from them."""

from __future__ import annotations

import json
import os

import pytest

from dirstorage_replica import positions
from dirstorage_replica.errors import Refused
from dirstorage_replica.protocol import Request
from dirstorage_replica.storage import hex_tid, tid_from_epoch

T0 = 1_700_000_000.0
DAY = 86400.0


class Clock(object):
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def tid_at(epoch):
    return tid_from_epoch(epoch)


def record_of(home, name):
    return json.loads((home / "misc" / "standbys" / (name + ".json")).read_text())


def test_a_record_says_what_the_standby_holds_and_when_it_was_seen(tmp_path):
    clock = Clock()
    rec = positions.Recorder(str(tmp_path), "st1", "pull", clock=clock)
    rec.record(tid_at(T0 - 60), tid_at(T0 - 1))
    assert record_of(tmp_path, "st1") == {"name": "st1", "kind": "pull", "tid": hex_tid(tid_at(T0 - 60)),
                                          "sent_tid": hex_tid(tid_at(T0 - 1)), "seen": T0}
    assert os.listdir(tmp_path / "misc" / "standbys") == ["st1.json"]  # no temporary file left


def test_a_follow_record_is_rewritten_at_most_every_few_seconds_and_at_the_end(tmp_path):
    clock = Clock()
    rec = positions.Recorder(str(tmp_path), "st1", "follow", clock=clock)
    rec.record(tid_at(T0 - 100))
    for step in range(1, 4):  # three increments within a second: not written
        clock.now = T0 + step * 0.2
        rec.beat(tid_at(T0 - 100 + step), tid_at(T0 - 99 + step))
    assert record_of(tmp_path, "st1")["seen"] == T0
    clock.now = T0 + positions.BEAT_SECONDS
    rec.beat()  # a heartbeat once due: the newest state, seen now
    assert record_of(tmp_path, "st1")["tid"] == hex_tid(tid_at(T0 - 97))
    assert record_of(tmp_path, "st1")["seen"] == T0 + positions.BEAT_SECONDS
    clock.now += 1
    rec.beat(tid_at(T0 - 50))
    rec.flush()  # the serve ends: what was pending is written
    assert record_of(tmp_path, "st1")["tid"] == hex_tid(tid_at(T0 - 50))


def test_records_are_bounded(tmp_path):
    warned = []
    for i in range(positions.MAX_RECORDS):
        positions.Recorder(str(tmp_path), "s%d" % i, "pull").record(tid_at(T0))
    extra = positions.Recorder(str(tmp_path), "one-too-many", "pull", warn=warned.append)
    extra.record(tid_at(T0))
    assert len(os.listdir(tmp_path / "misc" / "standbys")) == positions.MAX_RECORDS
    assert warned == ["not recording standby one-too-many: %s holds %d standby records already; remove the stale "
                      "ones" % (tmp_path / "misc" / "standbys", positions.MAX_RECORDS)]
    known = positions.Recorder(str(tmp_path), "s7", "pull")  # a known standby is still recorded
    known.record(tid_at(T0 + 5))
    assert record_of(tmp_path, "s7")["tid"] == hex_tid(tid_at(T0 + 5))


def test_a_record_that_cannot_be_written_is_one_warning_and_no_failure(tmp_path):
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "standbys").write_text("a file in the way")
    warned = []
    rec = positions.Recorder(str(tmp_path), "st1", "follow", warn=warned.append)
    rec.record(tid_at(T0))
    rec.beat(tid_at(T0 + 1))
    rec.flush()
    assert len(warned) == 1 and warned[0].startswith("cannot record where standby st1 stands in ")


@pytest.mark.parametrize("environ,name", [
    ({"SSH_CLIENT": "10.1.2.3 50000 22"}, "10.1.2.3"),
    ({"SSH_CLIENT": "fe80::1%eth0 50000 22"}, "fe80--1-eth0"),
    ({"SSH_CLIENT": "../../etc 1 22"}, "local"),
    ({}, "local"),
])
def test_a_standby_without_a_name_is_recorded_under_its_ssh_address(environ, name):
    v0 = Request("request", 0, "x", tid_at(T0), "m", {"standby-name": "ignored-in-v0"})
    assert positions.requester(v0, environ) == name


def test_a_named_request_is_recorded_under_its_name_and_a_bad_name_is_refused():
    named = Request("request", 1, "x", tid_at(T0), "m", {"standby-name": "st1"})
    assert positions.requester(named, {"SSH_CLIENT": "10.1.2.3 1 22"}) == "st1"
    with pytest.raises(Refused):
        positions.requester(Request("request", 1, "x", tid_at(T0), "m", {"standby-name": "../x"}), {})


def write(home, name, tid_epoch, seen):
    positions.Recorder(str(home), name, "pull", clock=Clock(seen)).record(tid_at(tid_epoch))


def test_the_horizon_is_the_oldest_position_of_the_standbys_seen_lately(tmp_path):
    write(tmp_path, "fast", T0 - 60, T0 - 10)
    write(tmp_path, "slow", T0 - 3 * DAY, T0 - 3600)
    write(tmp_path, "gone", T0 - 40 * DAY, T0 - 30 * DAY)
    (tmp_path / "misc" / "standbys" / "junk.json").write_text("{not json")
    seen = positions.horizon(str(tmp_path), max_age_days=7, now=T0)
    assert seen["horizon"]["standby"] == "slow" and seen["horizon"]["tid"] == hex_tid(tid_at(T0 - 3 * DAY))
    assert abs(seen["horizon"]["time"] - (T0 - 3 * DAY)) < 1
    assert [(s["name"], s["silent"]) for s in seen["standbys"]] == [("gone", True), ("slow", False),
                                                                    ("fast", False)]
    assert seen["silent_behind"] == ["gone"]
    everyone = positions.horizon(str(tmp_path), now=T0)
    assert everyone["horizon"]["standby"] == "gone" and everyone["silent_behind"] == []
    assert positions.horizon(str(tmp_path / "nothing"), 7, now=T0)["horizon"] is None
