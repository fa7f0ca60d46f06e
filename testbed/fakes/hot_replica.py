# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hot standby's storage process, as far as a pull sees it.

`start` opens a replica read-only as a read-only ZEO server's storage does:
it holds misc/lock and misc/sublock, and answers reads in a loop (the newest
transaction, and every object that transaction wrote), appending one line
per answer to LOG: ``<unix time> <newest tid>``.  SIGTERM makes it release
the locks and exit.  `start` returns once the process holds the locks and
answers (as `systemctl start` does), so it is usable as a --start-command:

    python -m testbed.fakes.hot_replica start HOME LOG PIDFILE [PORT]
    kill $(cat PIDFILE)                # the --stop-command

With PORT, the process also answers the Zope toolkit's XML-RPC
(testbed/fakes/toolkit.py) on 127.0.0.1:PORT, with the credentials of
HOME/config/toolkit.access (``user:password``): a hot standby that serves a
cascaded standby through the ``http`` snapshot method.  It enters and leaves
snapshot mode as the real engine does for a storage opened read-only (its
enter_snapshot has no read-only guard): misc/snapshot ``user/<code>``
written and misc/sublock let go, then taken back and the marker removed.

`write HOME` commits one transaction into a storage that nobody runs (as a
storage process that was not read-only would have): a replica written
while it served.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from dirstorage_replica import errors, storage
from testbed.fakes.signal_stop import stop_on
from testbed.fakes.toolkit import ToolkitServer

ANSWER_PAUSE = 0.01  # seconds between two answers


def answer(st):
    """One read: the newest transaction and the objects it wrote; its tid."""
    tid = st.last_tid()
    if tid != storage.ZERO_TID:
        for oid in st.transaction(tid).oids:
            st.load(oid)
    return storage.hex_tid(tid)


class ReadOnlySnapshots(object):
    """The toolkit's snapshot calls (enterSnapshot, leaveSnapshot) on the storage this process holds."""

    def __init__(self, st, sub):
        self.st, self.sub = st, sub
        self.snapshot_code = None
        self.mutex = threading.Lock()

    def enter_snapshot(self, code):
        with self.mutex:
            if self.snapshot_code is not None:
                raise errors.DSError("Can not enter snapshot mode: snapshot already in use by %r"
                                     % self.snapshot_code)
            self.snapshot_code = "user/" + code
            self.st.write_snapshot_marker(self.snapshot_code)
            self.sub.release()

    def leave_snapshot(self, code):
        with self.mutex:
            if self.snapshot_code != "user/" + code:
                raise errors.DSError("bad code %r != %r" % ("user/" + code, self.snapshot_code))
            if not self.sub.acquire():
                raise errors.DSError("%s/misc/sublock is held by another process: staying in snapshot mode"
                                     % self.st.home)
            self.st.remove_snapshot_marker()
            self.snapshot_code = None

    def pack_at(self, when):
        raise errors.DSError("a storage opened read-only does not pack")


def toolkit_for(st, sub, port):
    """The toolkit of this process on 127.0.0.1:`port`, or None without a port."""
    if port is None:
        return None
    with open(os.path.join(st.home, "config", "toolkit.access")) as f:
        user, password = f.read().strip().split(":", 1)
    return ToolkitServer(ReadOnlySnapshots(st, sub), username=user, password=password, port=port)


def serve(home, log_path, pidfile, ready, port=None):
    """Hold the replica and answer until SIGTERM; write READY (or why not) to fd `ready`."""
    st = storage.Storage(home)
    lock, sub = st.lock(), st.sublock()
    if not lock.acquire() or not sub.acquire():
        os.write(ready, b"BUSY")
        return 1
    stop = stop_on(signal.SIGTERM)
    toolkit = None
    try:
        toolkit = toolkit_for(st, sub, port)
        with open(pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
        with open(log_path, "a") as log:
            log.write("%.6f %s\n" % (time.time(), answer(st)))
            log.flush()
            os.write(ready, b"READY")
            while not stop.wait(ANSWER_PAUSE):
                log.write("%.6f %s\n" % (time.time(), answer(st)))
                log.flush()
    finally:
        if toolkit is not None:
            toolkit.stop()
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        sub.release()
        lock.release()
    return 0


def start(home, log_path, pidfile, port=None):
    """Fork the serving process; return 0 once it answers, 1 if it cannot."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        code = 1
        try:
            code = serve(home, log_path, pidfile, w, None if port is None else int(port))
        finally:
            os._exit(code)
    os.close(w)
    said = os.read(r, 16)
    os.close(r)
    if said != b"READY":
        sys.stderr.write("cannot serve %s: %s\n" % (home, said.decode() or "the process died"))
        return 1
    return 0


def answers(log_path):
    """The log's answers: [(unix time, newest tid)]."""
    with open(log_path) as f:
        return [(float(t), tid) for t, tid in (line.split() for line in f if line.strip())]


def longest_silence(log_path, since=0.0):
    """(seconds, start time) of the longest gap between two answers (those after `since`, a unix time)."""
    times = [t for t, _tid in answers(log_path) if t >= since]
    gaps = [(b - a, a) for a, b in zip(times, times[1:], strict=False)]
    return max(gaps) if gaps else (0.0, None)


def write(home):
    """Commit one transaction into `home` (not running) and close it cleanly."""
    from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage

    with SimulatedStorage(home) as st:
        st.commit({st.new_oid(): PICKLE_HEAD + b"written on the standby."})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"] and len(sys.argv) == 3:
        sys.exit(write(sys.argv[2]))
    if sys.argv[1:2] != ["start"] or len(sys.argv) not in (5, 6):
        sys.exit("usage: python -m testbed.fakes.hot_replica start HOME LOG PIDFILE [PORT] | write HOME")
    sys.exit(start(*sys.argv[2:]))
