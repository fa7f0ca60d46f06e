# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where each standby stands, as its master's serve saw it (so that
the master is not packed past what a standby still needs), and
the horizon: the oldest transaction a standby still needs.

One small JSON file per standby, `misc/standbys/NAME.json` of the master,
replaced atomically (no fsync: a record lost to a power cut is written again
by the next pull, increment or heartbeat):

    {"name": ..., "kind": "pull"|"follow"|"clone", "tid": "16 hex",
     "sent_tid": "16 hex", "seen": unix time}

`tid` is the newest transaction the standby is known to hold: the
reference of its request (a pull, a follow increment), or what a clone
sent it; `sent_tid` what it was sent (it holds it once applied).  A
request of version 0 (the original replica.py) or without a name is
recorded under the ssh client's address (SSH_CLIENT), else "local".

Records are bounded (MAX_RECORDS): past that a new standby is not recorded
(one line says so) until a stale record is removed.  A record that cannot
be written never fails the serve: one warning, and the serve goes on.
"""

from __future__ import annotations

import json
import os
import time

from .durable import write_atomic
from .protocol import request_standby_name, valid_standby_name
from .storage import ZERO_TID, Storage, hex_tid, tid_from_hex, tid_to_epoch

FOLDER = ("misc", "standbys")
SUFFIX = ".json"
MAX_RECORDS = 256
MAX_RECORD_BYTES = 4096
BEAT_SECONDS = 5.0  # a follow's record is rewritten at most this often
DAY = 86400.0


def client_name(environ):
    """The name of a standby that gave none: its ssh client address, else "local"."""
    words = (environ.get("SSH_CLIENT") or "").split()
    name = words[0].replace(":", "-").replace("%", "-") if words else ""
    return name if valid_standby_name(name) else "local"


def requester(req, environ):
    """The standby a request comes from (its name, or its ssh address)."""
    return request_standby_name(req) or client_name(environ)


def folder(home):
    return os.path.join(home, *FOLDER)


def _names(path):
    try:
        return [e[:-len(SUFFIX)] for e in os.listdir(path) if e.endswith(SUFFIX)]
    except FileNotFoundError:
        return []


class Recorder(object):
    """Writes one standby's record for a serve; `beat` at most every
    BEAT_SECONDS (a follow's increments and heartbeats), `record` now."""

    def __init__(self, home, name, kind, warn=None, clock=time.time):
        self.path = os.path.join(folder(home), name + SUFFIX)
        self.name = name
        self.kind = kind
        self.warn = warn or (lambda msg: None)
        self.clock = clock
        self.written = None  # when the record was last written
        self.state = None  # (tid, sent_tid) of the newest call
        self.dirty = False
        self.failed = False

    def record(self, tid, sent_tid=None):
        self.state = (tid, sent_tid or tid)
        self.dirty = True
        self.flush()

    def beat(self, tid=None, sent_tid=None):
        """The standby is there (and, given `tid`, holds it); written if due."""
        if tid is not None:
            self.state, self.dirty = (tid, sent_tid or tid), True
        if self.written is None or self.clock() - self.written >= BEAT_SECONDS:
            self.dirty = True
            self.flush()

    def flush(self):
        """Write the record if anything changed since it was last written."""
        if not self.dirty or self.state is None or self.failed:
            return
        self.dirty = False
        now = self.clock()
        data = {"name": self.name, "kind": self.kind, "tid": hex_tid(self.state[0]),
                "sent_tid": hex_tid(self.state[1]), "seen": round(now, 3)}
        try:
            if self.written is None and not self._room():
                return
            write_atomic(self.path, json.dumps(data, sort_keys=True).encode("ascii"), sync=False)
            self.written = now
        except OSError as e:
            self.failed = True
            self.warn("cannot record where standby %s stands in %s (%s)"
                      % (self.name, os.path.dirname(self.path), e.strerror or e))

    def _room(self):
        """Whether this standby may have a record (it has one, or there are
        fewer than MAX_RECORDS); the folder is made if missing."""
        here = os.path.dirname(self.path)
        os.makedirs(here, mode=0o755, exist_ok=True)
        names = _names(here)
        if self.name in names or len(names) < MAX_RECORDS:
            return True
        self.failed = True
        self.warn("not recording standby %s: %s holds %d standby records already; remove the stale ones"
                  % (self.name, here, len(names)))
        return False


def read_records(home):
    """Every standby record of a master, oldest position first (a record that
    cannot be read or makes no sense is skipped)."""
    records = []
    here = folder(home)
    for name in _names(here):
        record = _read_record(os.path.join(here, name + SUFFIX), name)
        if record is not None:
            records.append(record)
    records.sort(key=lambda r: (r["tid"], r["name"]))
    return records


def _read_record(path, name):
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_RECORD_BYTES + 1)[:MAX_RECORD_BYTES].decode("ascii"))
        tid = tid_from_hex(data["tid"])
        sent = tid_from_hex(data.get("sent_tid", data["tid"]))
        seen = float(data["seen"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None
    return {"name": name, "kind": str(data.get("kind", "")), "tid": hex_tid(tid), "sent_tid": hex_tid(sent),
            "seen": seen, "tid_time": _epoch(tid)}


def _epoch(tid):
    return None if tid == ZERO_TID else round(tid_to_epoch(tid), 3)


def horizon(home, max_age_days=None, now=None):
    """The oldest transaction held by a standby seen within `max_age_days`
    (None: every standby), and every standby with its position, when it was
    last seen and whether that is longer ago than `max_age_days` (`silent`)."""
    now = time.time() if now is None else now
    standbys = []
    for record in read_records(home):
        age = max(0.0, now - record["seen"])
        silent = max_age_days is not None and age > max_age_days * DAY
        standbys.append(dict(record, seen_age_seconds=round(age, 3), silent=silent))
    live = [s for s in standbys if not s["silent"]]
    oldest = live[0] if live else None
    held = [s for s in standbys if s["silent"] and (oldest is None or s["tid"] < oldest["tid"])]
    return {
        "horizon": None if oldest is None else {"tid": oldest["tid"], "time": oldest["tid_time"],
                                                "standby": oldest["name"]},
        "max_age_days": max_age_days,
        "standbys": standbys,
        "silent_behind": [s["name"] for s in held],
    }


def standby_horizon(path, max_age_days=None, now=None):
    """Where the standbys of the master at `path` stand (positions.py): the
    horizon (the oldest transaction a standby heard from within
    `max_age_days` holds: tid, its Unix time and age, the standby), every
    recorded standby, and the silent ones (not heard from within
    `max_age_days`) whose position is older than the horizon."""
    st = Storage(path)
    now = time.time() if now is None else now
    report = horizon(st.home, max_age_days, now)
    if report["horizon"] is not None and report["horizon"]["time"] is not None:
        report["horizon"]["age_seconds"] = round(max(0.0, now - report["horizon"]["time"]), 3)
    report["path"] = st.home
    return report
