# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The master side of `ds-replica follow` (request version 2, protocol.py):
wait for the storage's newest transaction to change, then have one
increment sent; heartbeats while nothing is new; stop when the standby
closes the connection.

While nothing changes the master is left alone: no snapshot mode, and no
read but `newest()` (Storage.newest_tid: a listing of journal/, where a
live engine keeps its newest commits until a batch is flushed, and
x.serial) every `interval` seconds.  The gathering itself (snapshot mode,
which flushes the journal, and the archive) is serve.py's, passed in as
`send`.
"""

from __future__ import annotations

import os
import select
import time

from .errors import Refused
from .protocol import HEARTBEAT, NEXT, write_frame
from .storage import hex_tid

INTERVAL_BOUNDS = (0.05, 60.0)
HEARTBEAT_BOUNDS = (1.0, 60.0)


def follow_waits(options):
    """(interval, heartbeat) seconds asked by a version 2 request, within bounds."""
    try:
        interval = float(options.get("interval", "1"))
        heartbeat = float(options.get("heartbeat", "10"))
    except ValueError:
        raise Refused("malformed request option interval or heartbeat")
    return _bound(interval, INTERVAL_BOUNDS), _bound(heartbeat, HEARTBEAT_BOUNDS)


def _bound(value, bounds):
    return min(max(value, bounds[0]), bounds[1])


class Input(object):
    """The standby's side of the connection: `wait(seconds)` returns what it
    wrote meanwhile (b"" if nothing), or None once it closed it."""

    def __init__(self, stream):
        self.stream = stream
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # a stream without a descriptor (tests): read it, never wait

    def wait(self, seconds):
        if self.fd is None:
            data = self.stream.read(4096)
            return data if data else None
        ready, _w, _x = select.select([self.fd], [], [], seconds)
        if not ready:
            return b""
        data = os.read(self.fd, 4096)
        return data if data else None


# At most this share of the time in snapshot mode, however slow a snapshot is. Not lower: the real
# engine's snapshot time is mostly its journal flush on entering, which grows with the transactions
# waiting, so spacing snapshots out barely lowers the share but adds to the lag (at 40 tx/s: 9.7 %
# of the time asked every 0.25 s, 8.2 % at 0.5 s, 5.9 % at 4 s; a 5 % cap made the lag p99 4.5 s).
SNAPSHOT_SHARE = 0.10


def follow_loop(stdin, stdout, newest, send, known, interval, heartbeat, clock=time.monotonic, beat=None,
                about=None, held=None):
    """Until the standby goes: when `newest()` differs from `known` and the
    standby has asked for it (it has, for the first one), `send(known)`
    gathers and sends an increment and returns the tid it reaches, at most
    once per `interval` seconds (the master's time in snapshot mode stays a
    small share however fast it writes); after `heartbeat` seconds without a
    frame, a heartbeat.  A send that could not reach what `newest()` said
    (a stopped storage whose journal waits for the engine's recovery) is not
    repeated until `newest()` moves again.  `beat()` is called after each
    heartbeat (the standby is still there); `about()` gives more fields of
    a heartbeat (the master's x.packed).  `held()` says how long the last
    send held the master in snapshot mode: the next one waits until that is
    at most SNAPSHOT_SHARE of the time since the last began (a loaded master,
    whose snapshots take longer, is asked less often).  Returns the last tid
    sent."""
    source = Input(stdin)
    wanted = True
    said = b""
    unreachable = None
    last = ready = clock()
    while True:
        tid = newest()
        due = wanted and tid != known and tid != unreachable
        if due and clock() >= ready:
            began = clock()
            known = send(known)
            ready = began + max(interval, (held() if held else 0.0) / SNAPSHOT_SHARE)
            unreachable = tid if known < tid else None
            wanted = due = False
            last = clock()
        elif clock() - last >= heartbeat:
            write_frame(stdout, HEARTBEAT, dict(about() if about else {}, master_tid=hex_tid(tid), waiting=not wanted))
            stdout.flush()
            last = clock()
            if beat is not None:
                beat()
        data = source.wait(max(0.0, ready - clock()) if due else interval)
        if data is None:
            return known
        said = (said + data)[-64:]
        if NEXT in said:
            wanted, said = True, b""
