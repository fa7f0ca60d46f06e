"""The master side of `ds-replica follow` (plugins/module_utils/watch.py):
what is sent, and when, as the storage's newest transaction moves."""

from __future__ import annotations

import io
import os

import pytest

from dirstorage_replica import protocol, watch
from dirstorage_replica.errors import Refused

A, B, C = (bytes.fromhex("040D44D78EBB22%02X" % n) for n in (1, 2, 3))


class Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_loop(newests, said, interval=0.01, heartbeat=0.03, known=A, tick=None):
    """Run follow_loop with x.serial reading `newests[i]` at turn i and the
    standby writing `said[i]` (bytes, or None: it closes) during the wait of
    turn i.  Returns ([(turn, since, tid sent)], frames)."""
    r, w = os.pipe()
    stdin, standby = os.fdopen(r, "rb"), os.fdopen(w, "wb", buffering=0)
    clock = Clock()
    turn = [-1]
    sent = []
    out = io.BytesIO()

    def newest():
        turn[0] += 1
        step = said[turn[0]] if turn[0] < len(said) else None
        if step is None:
            standby.close()
        elif step:
            standby.write(step)
        clock.now += interval if tick is None else tick
        return newests[turn[0]]

    def send(since):
        sent.append((turn[0], since, newests[turn[0]]))
        return newests[turn[0]]

    try:
        watch.follow_loop(stdin, out, newest, send, known, interval, heartbeat, clock=clock)
    finally:
        stdin.close()
        if not standby.closed:
            standby.close()
    frames = [protocol.parse_frame(line) for line in io.BytesIO(out.getvalue())]
    return sent, frames


def test_nothing_new_sends_only_heartbeats():
    sent, frames = run_loop([A] * 8, [b""] * 7 + [None])
    assert sent == []
    assert frames and all(f["frame"] == "heartbeat" and f["master_tid"] == A.hex().upper() for f in frames)
    assert 1 <= len(frames) <= 3  # one per 3 turns of 8 idle ones


def test_each_new_transaction_is_sent_once_the_standby_asks():
    # B arrives: sent unasked (the first); C arrives before the standby asks: held until "next"
    sent, frames = run_loop([B, B, C, C, C, C], [b"", b"", b"", protocol.NEXT, b"", None])
    assert sent == [(0, A, B), (4, B, C)]


def test_a_next_split_across_reads_still_counts():
    sent, _frames = run_loop([B, C, C, C, C], [b"", b"ne", b"xt\n", b"", None])
    assert sent == [(0, A, B), (3, B, C)]


def test_a_busy_master_is_gathered_at_most_once_per_interval():
    # a new transaction at every turn, the standby always ready: still one increment per interval
    tids = [bytes.fromhex("040D44D78EBB%04X" % n) for n in range(1, 42)]
    sent, _frames = run_loop(tids, [protocol.NEXT] * 40 + [None], interval=0.01, tick=0.001)
    turns = [t for t, _since, _tid in sent]
    assert len(sent) >= 3 and all(b - a >= 10 for a, b in zip(turns, turns[1:], strict=False)), turns


def test_the_standby_closing_ends_the_loop_at_once():
    sent, frames = run_loop([A, B], [None])
    assert sent == [] and frames == []


@pytest.mark.parametrize("options,expected", [
    ({}, (1.0, 10.0)),
    ({"interval": "0.001", "heartbeat": "1000"}, (0.05, 60.0)),
    ({"interval": "0.2", "heartbeat": "5"}, (0.2, 5.0)),
])
def test_follow_waits_are_bounded(options, expected):
    assert watch.follow_waits(options) == expected


def test_follow_waits_must_be_numbers():
    with pytest.raises(Refused, match="malformed request option interval or heartbeat"):
        watch.follow_waits({"interval": "soon"})


def test_a_send_that_cannot_reach_the_newest_is_not_repeated_until_it_moves():
    # newest() says C (a commit waiting in a stopped storage's journal) but the gathering only
    # reaches B: no snapshot mode at every interval for it; when newest() moves on, one more try
    r, w = os.pipe()
    stdin, standby = os.fdopen(r, "rb"), os.fdopen(w, "wb", buffering=0)
    clock = Clock()
    newests = [C] * 6 + [bytes.fromhex("040D44D78EBB22%02X" % 4)] * 3
    turn, sent = [-1], []

    def newest():
        turn[0] += 1
        clock.now += 1.0
        if turn[0] >= len(newests) - 1:
            standby.close()
        else:
            standby.write(protocol.NEXT)
        return newests[turn[0]]

    def send(since):
        sent.append(turn[0])
        return B

    try:
        watch.follow_loop(stdin, io.BytesIO(), newest, send, A, 0.5, 60.0, clock=clock)
    finally:
        stdin.close()
    assert sent == [0, 6]


def test_a_slow_snapshot_spaces_the_next_so_the_master_is_held_at_most_a_tenth_of_the_time():
    # every send holds the master 0.2 s (a loaded master): with an interval of 0.5 s it would be held
    # 40 % of the time; the next send waits until the share is 10 %: 2 s after the last began
    r, w = os.pipe()
    stdin, standby = os.fdopen(r, "rb"), os.fdopen(w, "wb", buffering=0)
    clock = Clock()
    turn, starts = [-1], []

    def newest():
        turn[0] += 1
        clock.now += 0.25
        if turn[0] >= 60:
            standby.close()
        else:
            standby.write(protocol.NEXT)
        return bytes.fromhex("040D44D78EBB%04X" % (turn[0] + 10))  # a new transaction at every look

    def send(since):
        starts.append(clock.now)
        clock.now += 0.2
        return bytes.fromhex("040D44D78EBB%04X" % (turn[0] + 10))

    try:
        watch.follow_loop(stdin, io.BytesIO(), newest, send, A, 0.5, 60.0, clock=clock, held=lambda: 0.2)
    finally:
        stdin.close()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert watch.SNAPSHOT_SHARE == 0.10
    assert len(starts) >= 3 and all(g >= 2.0 for g in gaps), gaps
    assert 0.2 * len(starts) <= 0.10 * (starts[-1] - starts[0]) + 0.2, starts
