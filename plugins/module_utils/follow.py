# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The standby side of `ds-replica follow`: one connection to the master
kept open (request version 2, protocol.py; the master's side is watch.py),
each increment checked and applied by the pull's own steps (replica.py).

- A failure that waiting can cure (the connection, the master restarting,
  snapshot mode busy, the replica's disk full or in use) is logged in one
  line and retried after a pause that doubles up to `max_backoff`; any other
  DSError (identity, divergence, a pack past the replica, a promoted
  replica...) ends `run()` with that error.
- Each increment is received and checked into a `Spool` (files beside the
  pull's own spool in the replica's misc/) without taking the replica, then
  applied with the pull's `Hold`: a cold replica is locked, a hot standby's
  read-only service (`hot`, a hot.HotStandby) is stopped only for the apply
  and started again.  A hot standby's increments are applied at most once
  per `min_apply_interval` seconds, all those spooled meanwhile in one stop;
  while the spool is full (SPOOL_LIMITS) no more is asked for.  What is
  spooled but not applied when a connection ends is dropped (the next
  connection asks for it again from the replica's newest transaction).
- `StopSwitch`: SIGTERM/SIGINT (through the command line's handler) stop
  the follower at once, except while increments are being applied, which is
  finished first (a stopped service started again); the replica is always
  left at a transaction boundary.
- `Recorder`: the metrics file (metrics.py) after each apply and each
  heartbeat, and misc/ds-replica-follow.json (what `storage_info` shows).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import time

from .durable import pid_alive, write_atomic
from .errors import Busy, DSError, LocalDiskError, Refused, TransportError
from .follow_state import STATE_FILE
from .increment import INCOMING, WireCounter, answer_reader, checked_result, receive_increment, transfer_error
from .metrics import after_failure, after_success, read_metrics, up_to_date, write_metrics
from .options import PullOptions
from .packmirror import master_packed
from .protocol import FOLLOW_VERSION, HEARTBEAT, ChunkReader, Session, follow_request_options, standby_name_option
from .replica import apply_increment, locked_replica, make_report, pack_as_master, reference_request
from .storage import ZERO_TID, hex_tid, tid_from_hex, tid_to_epoch
from .transport import open_channel

SPOOL_PREFIX = INCOMING + ".follow."  # misc/.replica.incoming.follow.<n>: increments received, not yet applied
SPOOL_LIMITS = (64, 256 << 20)  # (increments, bytes) spooled before the follower stops asking for more
SUMMED = ("transactions", "files", "bytes", "wire_bytes", "snapshot_seconds")  # over the increments of one apply
OLD_MASTER = "unsupported request version request %d" % FOLLOW_VERSION


class FollowSettings(object):
    """What `ds-replica follow` can be told besides the connection options."""

    def __init__(self, interval=1.0, heartbeat=10.0, metrics=None, metrics_name=None, min_apply_interval=60.0,
                 max_backoff=30.0):
        self.interval = interval
        self.heartbeat = heartbeat
        self.metrics = metrics
        self.metrics_name = metrics_name
        self.min_apply_interval = min_apply_interval
        self.max_backoff = max_backoff


class Stopped(BaseException):
    """The follower was asked to stop (not an error: exit 0)."""


class StopSwitch(object):
    """`ask()` (from a signal handler) raises Stopped at once, or, inside
    `shielded()`, as soon as the shielded block ends.

    `ask()` only sets a flag: a signal handler runs between two bytecodes of
    the main thread, which may be inside a lock (threading.Event's own, in
    `Event.wait`), and taking that lock again from the handler hangs the
    follower for good."""

    SLEEP_SLICE = 0.1  # seconds: how late a shielded sleep sees a stop

    def __init__(self):
        self.asked = False
        self._shield = 0

    def ask(self):
        self.asked = True
        if not self._shield:
            raise Stopped()

    def check(self):
        if self.asked and not self._shield:
            raise Stopped()

    @contextlib.contextmanager
    def shielded(self):
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        self.check()

    def sleep(self, seconds):
        """Pause; a stop cuts it short (at once: the handler raises, out of time.sleep)."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.asked:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, self.SLEEP_SLICE))
        self.check()


def retryable(error):
    """Whether waiting may cure `error` (the replica's own full disk included)."""
    return error.retryable or isinstance(error, LocalDiskError)


class Backoff(object):
    """Pauses of 1, 2, 4... seconds, capped; `reset()` after a success."""

    def __init__(self, cap):
        self.cap = cap
        self.failures = 0

    def next(self):
        delay = min(self.cap, 2.0 ** self.failures)
        self.failures += 1
        return delay

    def reset(self):
        self.failures = 0


class Watchdog(object):
    """Aborts the channel when the master has been silent for `limit`
    seconds while armed (a lost connection that no error reports)."""

    def __init__(self, chan, limit):
        self.chan = chan
        self.limit = limit
        self.armed = False
        self.fired = False
        self.last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ds-replica-follow-watchdog", daemon=True)
        self._thread.start()

    def touch(self):
        self.last = time.monotonic()

    def _watch(self):
        while not self._done.wait(1.0):
            if self.armed and time.monotonic() - self.last > self.limit:
                self.fired = True
                self.chan.abort()
                return

    def close(self):
        self._done.set()


class _Watched(WireCounter):
    """The channel as the follower reads it: counted, and each read touches the watchdog."""

    def __init__(self, chan):
        super().__init__(chan)
        self.dog = None

    def read(self, n):
        data = super().read(n)
        self.dog.touch()
        return data

    def readline(self, limit):
        data = super().readline(limit)
        self.dog.touch()
        return data


class Recorder(object):
    """The metrics file and the state file, after each event."""

    def __init__(self, replica_dir, metrics=None, name=None, warn=None):
        self.state_path = os.path.join(replica_dir, "misc", STATE_FILE)
        self.metrics = metrics
        self.name = name or metrics_label(metrics, replica_dir)
        self.warn = warn or (lambda msg: None)
        self.metrics_error = None

    def state(self, state, **fields):
        fields.update(state=state, pid=os.getpid(), updated=round(time.time(), 3))
        try:
            write_atomic(self.state_path, (json.dumps(fields, sort_keys=True) + "\n").encode(), sync=False)
        except OSError:
            pass  # the metrics say the same; the replica's misc/ may be read-only for a moment

    def success(self, started, result):
        self._write(lambda previous: after_success(previous, started, time.time(), result))

    def failure(self, started):
        self._write(lambda previous: after_failure(previous, started))

    def up_to_date(self):
        self._write(lambda previous: up_to_date(previous, time.time()))

    def _write(self, values_from):
        """Write the metrics file; a failure is said once (until it works again), never fatal."""
        if not self.metrics:
            return
        try:
            write_metrics(self.metrics, self.name, values_from(read_metrics(self.metrics)))
        except OSError as e:
            text = "cannot write the metrics file %s (%s); following goes on" % (self.metrics, e.strerror or e)
            if text != self.metrics_error:
                self.warn(text)
            self.metrics_error = text
        else:
            self.metrics_error = None


def metrics_label(path, replica_dir):
    """The storage label: NAME of a metrics file dirstorage_NAME.prom, else the replica folder's name."""
    base = os.path.basename(path or "")
    if base.startswith("dirstorage_") and base.endswith(".prom"):
        return base[len("dirstorage_"):-len(".prom")]
    return os.path.basename(os.path.normpath(replica_dir))


class Spool(object):
    """Increments received and checked but not yet applied, oldest first:
    each a file misc/SPOOL_PREFIX<pid>.<n> and its result.  `tip` is the
    transaction the next increment must chain onto."""

    def __init__(self, replica_dir):
        self.prefix = os.path.join(replica_dir, "misc", SPOOL_PREFIX)
        self.items = []
        self.tip = None
        self._serial = 0

    def reset(self, tip):
        """Empty (its files removed), chained onto `tip`."""
        for item in self.items:
            _unlink(item[0])
        self.items = []
        self.tip = tip

    def remove_leftovers(self):
        """Remove the spool files of followers that no longer run (killed)."""
        for path in glob.glob(glob.escape(self.prefix) + "*"):
            pid = path[len(self.prefix):].split(".", 1)[0]
            if not (pid.isdigit() and pid_alive(int(pid))):
                _unlink(path)

    def next_path(self):
        self._serial += 1
        return "%s%d.%d" % (self.prefix, os.getpid(), self._serial)

    def add(self, path, result, tip, started, t0):
        """Keep a received increment that reaches `tip` (one without transactions is dropped)."""
        if not result["transactions"]:
            _unlink(path)
            return
        self.items.append((path, result, started, t0))
        self.tip = tip

    def full(self):
        count, size = SPOOL_LIMITS
        return len(self.items) >= count or sum(item[1]["bytes"] for item in self.items) >= size

    def merged(self):
        """(result of all the spooled increments as one, time.time() and
        monotonic time the first began)."""
        result = dict(self.items[-1][1])
        for key in SUMMED:
            result[key] = sum(item[1].get(key) or 0 for item in self.items)
        result["increments"] = len(self.items)
        return result, self.items[0][2], self.items[0][3]


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Follower(object):
    """Keeps `replica_dir` following `master` until stopped or refused.
    `hot`: a hot.HotStandby whose read-only service is stopped only to apply."""

    def __init__(self, master, replica_dir, opts=None, settings=None, log=None, warn=None, stop=None,
                 hot=None, on_increment=None):
        self.master = master
        self.replica_dir = replica_dir
        self.opts = opts or PullOptions()
        self.settings = settings or FollowSettings()
        self.log = log or (lambda msg: None)
        self.warn = warn or self.log
        self.stop = stop or StopSwitch()
        self.hot = hot
        self.on_increment = on_increment or (lambda result: None)
        self.recorder = Recorder(replica_dir, self.settings.metrics, self.settings.metrics_name, self.warn)
        self.spool = Spool(replica_dir)
        self.last_apply = None  # monotonic time of the last stop of a hot standby's service
        self.known = None  # the replica's newest transaction (applied)
        self.st = None
        self.master_packed = None  # the master's x.packed, as its last frame said

    def run(self):
        """Follow until stopped (returns) or refused (raises DSError)."""
        backoff = Backoff(self.settings.max_backoff)
        try:
            self._retrying(backoff)
        except Stopped:
            self.recorder.state("stopped", tid=self._known_hex(), **self._hot_fields())
            raise

    def _retrying(self, backoff):
        while True:
            started = time.time()
            try:
                self._connection(backoff)
            except DSError as e:
                if not retryable(e):
                    self.recorder.state("stopped", error=str(e), tid=self._known_hex())
                    raise _explained(e)
                delay = backoff.next()
                self.warn("%s; retrying in %gs" % (e, delay))
                self.recorder.failure(started)
                self.recorder.state("retrying", error=str(e), tid=self._known_hex(), retry_in=delay)
                self.stop.sleep(delay)

    def _known_hex(self):
        return hex_tid(self.known) if self.known is not None else None

    def _connection(self, backoff):
        """One connection: the reference, then frames until it fails."""
        # as a hot pull: the reference is read while the service serves (only a recovery stops it)
        with locked_replica(self.master, self.replica_dir, False, self.log, self.hot) as (st, _incoming, hold):
            self.st, self.known = st, st.last_tid()
            self.spool.remove_leftovers()
            req = reference_request(st, self.known, FOLLOW_VERSION, self._request_options())
            if hold.taken and self.hot is not None:
                self.last_apply = time.monotonic()  # that was one stop of the service: the next waits its turn
        self.spool.reset(self.known)
        chan = _Watched(open_channel(self.master, self.opts, self.log))
        dog = chan.dog = Watchdog(chan.chan, self._silence_limit())
        try:
            with Session(chan, req) as session:
                session.start()
                self.recorder.state("following", tid=self._known_hex(), master=self.master, **self._hot_fields())
                self._frames(session, chan, dog, backoff)
        except (OSError, EOFError, DSError) as e:
            raise self._connection_error(e, dog.fired)
        finally:
            dog.close()
            self.spool.reset(self.known)  # not applied: asked for again by the next connection

    def _connection_error(self, error, silent):
        """The error that ended a connection, as the follower reports it."""
        if silent:
            return TransportError("the master sent nothing for %ds, not even a heartbeat" % self._silence_limit(),
                                  "check the network and the master; the replica is unchanged")
        if isinstance(error, DSError):
            return error
        return TransportError("the connection to the master broke off (%s)" % (getattr(error, "strerror", None)
                                                                               or error),
                              "check the network and the master; the replica is unchanged")

    def _request_options(self):
        s, o = self.settings, self.opts
        options = follow_request_options(s.interval, self._heartbeat_seconds(), o.compress, o.snapshot_timeout,
                                         o.snapshot_interval)
        return dict(options, **standby_name_option(o.standby_name))

    def _heartbeat_seconds(self):
        """A hot standby's spooled increments are applied at the first frame
        after their turn: heartbeats at least every quarter of the turn."""
        if self.hot is None:
            return self.settings.heartbeat
        return min(self.settings.heartbeat, max(1.0, self.settings.min_apply_interval / 4.0))

    def _silence_limit(self):
        return 3 * self.settings.heartbeat + self.opts.timeout

    def _frames(self, session, chan, dog, backoff):
        asked = True  # the first increment of a connection comes unasked
        while True:
            dog.touch()
            dog.armed = True
            frame = session.next_frame()
            dog.armed = False
            if frame["frame"] == HEARTBEAT:
                self._heartbeat(frame)
            else:
                self._receive(session, chan, frame)
                backoff.reset()
                asked = False
            if self.spool.full():
                self.stop.sleep(self._turn_in())  # no more is asked for until the spool is applied
            if self.spool.items and self._turn_in() <= 0:
                self._apply_spooled()
            elif self._pack_due():
                self._pack_now()
            if not asked:
                session.ask_next()
                asked = True

    def _heartbeat(self, frame):
        self._saw_packed(frame)
        master_tid = tid_from_hex(frame["master_tid"])  # checked by protocol.parse_frame
        if master_tid == self.known:  # up to date as of now: a success for "stale" alerts
            self.recorder.up_to_date()
        self.recorder.state("following", tid=self._known_hex(), master=self.master, **self._hot_fields())

    def _hot_fields(self):
        """A hot standby's figures in the state file: the service's downtime at the last apply, and what waits."""
        if self.hot is None:
            return {}
        return {"downtime_seconds": round(self.hot.downtime, 3), "spooled_increments": len(self.spool.items)}

    def _receive(self, session, chan, info):
        """Receive and check one increment into the spool, as a pull does,
        without taking the replica (a hot standby's service still serves)."""
        started, t0 = time.time(), time.monotonic()
        path = self.spool.next_path()
        wire = chan.wire
        read = answer_reader(ChunkReader(chan.read).read, info, self.opts.bwlimit)
        try:
            try:
                checker, count = receive_increment(session, read, self.st, path, info)
            except (OSError, EOFError) as e:
                raise transfer_error(e, path)
            result = checked_result(checker, count, self.spool.tip, info, chan.wire - wire, self.log)
        except BaseException:
            _unlink(path)
            raise
        self._saw_packed(info)
        self.spool.add(path, result, checker.names["x.serial"], started, t0)
        if self.hot is not None:  # what waits for its turn
            self.recorder.state("following", tid=self._known_hex(), master=self.master, **self._hot_fields())

    def _saw_packed(self, info):
        """The master's x.packed, as its frames say (packmirror.py)."""
        packed = master_packed(info)
        if packed is not None:
            self.master_packed = packed

    def _pack_due(self):
        """Nothing waits to be applied, and the master was packed past the replica."""
        return (not self.spool.items and self.master_packed is not None and self.st is not None
                and self.master_packed > self.st.packed_tid() and self._turn_in() <= 0)

    def _pack_now(self):
        """Pack the replica as its master was, between increments."""
        with self.stop.shielded():
            with locked_replica(self.master, self.replica_dir, False, self.log, self.hot) as (st, _incoming, hold):
                if self.hot is not None:
                    self.last_apply = time.monotonic()
                pack_as_master(self.master, st, hold, self.master_packed, self.opts, self.log)

    def _turn_in(self):
        """Seconds until a hot standby's service may be stopped again (<= 0: now)."""
        if self.hot is None or self.last_apply is None:
            return 0.0
        return self.last_apply + self.settings.min_apply_interval - time.monotonic()

    def _apply_spooled(self):
        """Apply every spooled increment in one take of the replica (a hot
        standby's service stopped once); a stop waits for the end of it."""
        with self.stop.shielded():
            result, started, t0 = self.spool.merged()
            taken = locked_replica(self.master, self.replica_dir, False, self.log, self.hot)
            with taken as (st, _incoming, hold):
                if not hold.taken:
                    hold.take()  # a hot standby's service stops here (or stopped already for a recovery)
                if self.hot is not None:
                    self.last_apply = time.monotonic()
                if st.last_tid() != self.known:
                    raise Busy("replica %s moved from %s to %s while following: another pull or a storage wrote "
                               "to it" % (st.home, hex_tid(self.known), hex_tid(st.last_tid())),
                               "let one process update the replica; the follower starts again from where it is")
                for path, one, _started, _t0 in self.spool.items:
                    apply_increment(st, path, one, self.log)
                result.pop("master_packed", None)
                result["pack"] = pack_as_master(self.master, st, hold, self.master_packed, self.opts, self.log)
                result = make_report(result, st, self.known, False, t0)
            result["downtime_seconds"] = round(self.hot.downtime, 3) if self.hot is not None else 0.0
            self.spool.reset(bytes.fromhex(result["after_tid"]))
            self.on_increment(self._record_applied(started, result))

    def _record_applied(self, started, result):
        """After an apply: note the replica's new newest transaction, add
        when it was applied and how long after its commit on the master, and
        record it everywhere the follower reports: the metrics file, the
        state file (misc/ds-replica-follow.json) and the log.  Returns
        `result`, completed."""
        self.known = bytes.fromhex(result["after_tid"])
        now = time.time()
        result["applied_at"] = round(now, 6)
        result["apply_lag_seconds"] = round(now - tid_to_epoch(self.known), 3) if self.known != ZERO_TID else 0.0
        self.recorder.success(started, result)
        self.recorder.state("following", tid=result["after_tid"], master=self.master,
                            last_increment=result["applied_at"], lag_seconds=result["apply_lag_seconds"],
                            **self._hot_fields())
        self.log("applied %d transactions up to %s (%.3fs after its commit)%s"
                 % (result["transactions"], result["after_tid"], result["apply_lag_seconds"],
                    "; service down %.3fs" % result["downtime_seconds"] if self.hot is not None else ""))
        return result


def _explained(error):
    """A master too old to follow says so in its own words; say what to do."""
    if isinstance(error, Refused) and OLD_MASTER in str(error):
        return Refused("the master does not speak request version %d, which following needs (%s)"
                       % (FOLLOW_VERSION, error.message),
                       "upgrade ds-replica on the master, or schedule pulls with cron instead")
    return error


def follow(master, replica_dir, opts=None, settings=None, **kwargs):
    """Follow `master` into `replica_dir` until stopped (see Follower)."""
    Follower(master, replica_dir, opts, settings, **kwargs).run()
