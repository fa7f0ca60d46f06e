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
- `StopSwitch`: SIGTERM/SIGINT (through the command line's handler) stop
  the follower at once, except while an increment is being applied, which
  is finished first; the replica is always left at a transaction boundary.
- `Recorder`: the metrics file (metrics.py) after each increment and each
  heartbeat, and misc/ds-replica-follow.json (what `storage_info` shows).
- `apply_hook`: a context manager factory run around each increment (a hot
  standby stops its read-only service in it); with one, increments are
  applied at most once per `min_apply_interval` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

from .metrics import after_failure, after_success, read_metrics, write_metrics
from .options import PullOptions
from .protocol import FOLLOW_VERSION, HEARTBEAT, ChunkReader, Session, follow_request_options
from .replica import (
    LocalDiskError,
    WireCounter,
    answer_reader,
    apply_increment,
    checked_result,
    locked_replica,
    make_report,
    receive_increment,
    reference_request,
    transfer_error,
)
from .storage import (
    ZERO_TID,
    Busy,
    DSError,
    Refused,
    TransportError,
    hex_tid,
    pid_alive,
    tid_from_hex,
    tid_to_epoch,
    write_atomic,
)
from .transport import open_channel

STATE_FILE = "ds-replica-follow.json"  # in the replica's misc/
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
    `shielded()`, as soon as the shielded block ends."""

    def __init__(self):
        self.asked = False
        self.event = threading.Event()
        self._shield = 0

    def ask(self):
        self.asked = True
        self.event.set()
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
        self.event.wait(max(0.0, seconds))
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


def follower_state(replica_dir):
    """What the follower last recorded in the replica's misc/ (None if none),
    and whether its process still runs."""
    try:
        with open(os.path.join(replica_dir, "misc", STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    state["running"] = state.get("state") != "stopped" and isinstance(pid, int) and pid > 0 and pid_alive(pid)
    return state


def metrics_label(path, replica_dir):
    """The storage label: NAME of a metrics file dirstorage_NAME.prom, else the replica folder's name."""
    base = os.path.basename(path or "")
    if base.startswith("dirstorage_") and base.endswith(".prom"):
        return base[len("dirstorage_"):-len(".prom")]
    return os.path.basename(os.path.normpath(replica_dir))


class Follower(object):
    """Keeps `replica_dir` following `master` until stopped or refused."""

    def __init__(self, master, replica_dir, opts=None, settings=None, log=None, warn=None, stop=None,
                 apply_hook=None, on_increment=None):
        self.master = master
        self.replica_dir = replica_dir
        self.opts = opts or PullOptions()
        self.settings = settings or FollowSettings()
        self.log = log or (lambda msg: None)
        self.warn = warn or self.log
        self.stop = stop or StopSwitch()
        self.apply_hook = apply_hook
        self.on_increment = on_increment or (lambda result: None)
        self.recorder = Recorder(replica_dir, self.settings.metrics, self.settings.metrics_name, self.warn)
        self.last_apply = None  # monotonic time of the last increment applied
        self.known = None

    def run(self):
        """Follow until stopped (returns) or refused (raises DSError)."""
        backoff = Backoff(self.settings.max_backoff)
        try:
            self._retrying(backoff)
        except Stopped:
            self.recorder.state("stopped", tid=self._known_hex())
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
        self._pause_before_apply()
        # recovery may apply a pending increment: a hot standby's service is stopped for it too
        with self._hooked(), locked_replica(self.master, self.replica_dir, False, self.log) as (st, _incoming, _hold):
            self.known = st.last_tid()
            req = reference_request(st, self.known, FOLLOW_VERSION, self._request_options())
        if self.apply_hook:
            self.last_apply = time.monotonic()  # that was one stop of the service: the next waits its turn
        chan = _Watched(open_channel(self.master, self.opts, self.log))
        dog = chan.dog = Watchdog(chan.chan, self._silence_limit())
        try:
            with Session(chan, req) as session:
                session.start()
                self.recorder.state("following", tid=self._known_hex(), master=self.master)
                self._frames(session, chan, dog, backoff)
        except (OSError, EOFError, DSError) as e:
            raise self._connection_error(e, dog.fired)
        finally:
            dog.close()

    def _hooked(self):
        """The apply hook's context (a hot standby's service stopped), if any."""
        return self.apply_hook() if self.apply_hook else contextlib.nullcontext()

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
        return follow_request_options(s.interval, s.heartbeat, o.compress, o.snapshot_timeout, o.snapshot_interval)

    def _silence_limit(self):
        return 3 * self.settings.heartbeat + self.opts.timeout

    def _frames(self, session, chan, dog, backoff):
        while True:
            dog.touch()
            dog.armed = True
            frame = session.next_frame()
            if frame["frame"] == HEARTBEAT:
                dog.armed = False
                self._heartbeat(frame)
                continue
            result = self._take(session, chan, frame)
            dog.armed = False
            backoff.reset()
            self.on_increment(result)
            self._pause_before_apply()
            session.ask_next()

    def _heartbeat(self, frame):
        master_tid = tid_from_hex(frame["master_tid"])  # checked by protocol.parse_frame
        if master_tid == self.known:  # up to date as of now: a success for "stale" alerts
            self.recorder.success(time.time(), {"lag_seconds": 0.0})
        self.recorder.state("following", tid=self._known_hex(), master=self.master)

    def _take(self, session, chan, info):
        """Receive, check and apply one increment, as a pull does."""
        chan.dog.armed = False
        self._pause_before_apply()  # the first increment of a connection comes unasked
        chan.dog.touch()
        chan.dog.armed = True
        t0 = time.monotonic()
        started = time.time()
        shield = self.stop.shielded() if self.apply_hook else contextlib.nullcontext()
        taken = locked_replica(self.master, self.replica_dir, False, self.log)
        with shield, self._hooked(), taken as (st, incoming, _hold):
            if st.last_tid() != self.known:
                raise Busy("replica %s moved from %s to %s while following: another pull or a storage wrote to it"
                           % (st.home, hex_tid(self.known), hex_tid(st.last_tid())),
                           "let one process update the replica; the follower starts again from where it is")
            wire = chan.wire
            read = answer_reader(ChunkReader(chan.read).read, info, self.opts.bwlimit)
            try:
                checker, count = receive_increment(session, read, st, incoming, info)
            except (OSError, EOFError) as e:
                raise transfer_error(e, incoming)
            result = checked_result(checker, count, self.known, info, chan.wire - wire, self.log)
            chan.dog.armed = False  # received: applying a large increment may take longer than any silence
            with self.stop.shielded():
                apply_increment(st, incoming, result, self.log)
            result = make_report(result, st, self.known, False, t0)
        return self._applied(started, result)

    def _applied(self, started, result):
        self.last_apply = time.monotonic()
        self.known = bytes.fromhex(result["after_tid"])
        now = time.time()
        result["applied_at"] = round(now, 6)
        result["apply_lag_seconds"] = round(now - tid_to_epoch(self.known), 3) if self.known != ZERO_TID else 0.0
        self.recorder.success(started, result)
        self.recorder.state("following", tid=result["after_tid"], master=self.master,
                            last_increment=result["applied_at"], lag_seconds=result["apply_lag_seconds"])
        self.log("applied %d transactions up to %s (%.3fs after its commit)"
                 % (result["transactions"], result["after_tid"], result["apply_lag_seconds"]))
        return result

    def _pause_before_apply(self):
        """With a hot standby's apply hook: at most one apply per min_apply_interval."""
        if self.apply_hook and self.last_apply is not None:
            self.stop.sleep(self.last_apply + self.settings.min_apply_interval - time.monotonic())


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
