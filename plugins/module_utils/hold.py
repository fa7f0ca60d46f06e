# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Taking a replica for a change: the pull's own lock and the `Hold` of its
snapshot turn, misc/lock and misc/sublock (a hot standby's storage process
stopped meanwhile). Used by the pull, follow, promote and the re-seed."""

from __future__ import annotations

from .durable import FileLock
from .errors import Busy, DSError
from .snapshot import PEER_WAIT, take_turn

# the pull's own lock, beside misc/lock: a hot standby's storage process holds misc/lock
PULL_LOCK = ".ds-replica-pull.lock"


def in_use(st, lock):
    """The refusal when misc/lock is held by someone else."""
    pid = lock.holder()
    return Busy("replica %s is in use (misc/lock is held%s): a storage process or another pull has it"
                % (st.home, " by pid %d" % pid if pid else ""),
                "stop the storage that uses the replica, or wait for the other pull to end")


def lock_pull(st):
    """The pull's own lock (misc/PULL_LOCK): two pulls into one replica never
    overlap, even while a hot standby's storage process holds misc/lock."""
    lock = FileLock(st.sub("misc", PULL_LOCK))
    if not lock.acquire():
        pid = lock.holder()
        raise Busy("replica %s is in use by another pull%s" % (st.home, " (pid %d)" % pid if pid else ""),
                   "wait for the other pull to end")
    return lock


def _turn_refused(st):
    def refuse(pid, waited):
        return Busy("replica %s is being served to another standby: ds-replica pid %s has held its snapshot "
                    "for %.0fs" % (st.home, pid or "unknown", waited),
                    "retry later (a serve holds it only while it reads the increment)")
    return refuse


class Hold(object):
    """What a pull holds of its replica once it takes it: the snapshot turn
    (a serve to a cascaded standby waits for it), misc/lock and misc/sublock;
    for a hot standby, its storage process is stopped meanwhile."""

    def __init__(self, st, hot=None, log=None):
        self.st = st
        self.hot = hot
        self.log = log or (lambda msg: None)
        self.turn = self.lock = self.sub = None

    @property
    def taken(self):
        return self.lock is not None

    def take(self):
        """Cold: lock now (refused if held).  Hot: stop the storage process,
        wait for misc/lock, lock."""
        st = self.st
        self.turn = take_turn(st, PEER_WAIT, self.log, _turn_refused(st))
        lock = st.lock()
        if self.hot is not None:
            self.hot.stop_and_lock(lock, st.home)
        elif not lock.acquire():
            raise in_use(st, lock)
        self.lock = lock
        sub = st.sublock()
        if not sub.acquire():
            raise Busy("replica %s is in use (misc/sublock is held)" % st.home, "wait and try again")
        self.sub = sub

    def release(self, failure=None):
        """Release the locks, start a stopped storage process, give up the
        turn.  A failed start is its own error (naming `failure`, if any)."""
        for lock in (self.sub, self.lock):
            if lock is not None:
                lock.release()
        self.sub = self.lock = None
        try:
            if self.hot is not None:
                self.hot.start()
        except DSError as e:
            if failure is None:
                raise
            raise DSError("%s; the pull had failed before: %s" % (e.message, failure), e.hint) from failure
        finally:
            if self.turn is not None:
                self.turn.release()
                self.turn = None
