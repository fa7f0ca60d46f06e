# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replica side: pull what is new from the master and apply it atomically.

Commit point: the rename of misc/.replica.incoming to journal/replica.tar.
Before it the replica is unchanged; after it, recovery finishes the job.
"""

from __future__ import annotations

import contextlib
import os
import time

from . import journal
from .errors import Corrupt, LocalDiskError, Refused
from .fleet_marks import refuse_if_promoted
from .hold import Hold, lock_pull
from .increment import (
    INCOMING,
    WireCounter,
    answer_reader,
    checked_result,
    commit_increment,
    pull_result,
    receive_increment,
    transfer_error,
)
from .options import PullOptions
from .packmirror import ask_pack_drops, mirror_pack
from .protocol import (
    Request,
    Session,
    ask_with_fallback,
    pull_request_options,
    request_version,
    require_fields,
    standby_name_option,
)
from .storage import ZERO_TID, Storage, hex_tid, tid_to_datetime, tid_to_epoch
from .transport import open_channel, refuse_same_folder


def pull(master, replica_dir, opts=None, log=None, progress=None, hot=None):
    """One replication event.  Returns a result dict; raises DSError.
    `hot` (a hot.HotStandby): the replica is served by a storage process,
    stopped only for the commit and apply."""
    opts = opts or PullOptions()
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    with locked_replica(master, replica_dir, opts.check, log, hot) as (st, incoming, hold):
        before = st.last_tid()
        options = pull_request_options(opts.check, opts.compress, opts.snapshot_timeout, opts.snapshot_interval)
        version = request_version(opts.protocol, options)
        options.update(standby_name_option(opts.standby_name))  # version 0 sends no options
        req = reference_request(st, before, version, options)
        log("replica %s at %s (%s); asking for what is new" % (st.home, hex_tid(before), _commit_time_text(before)))

        def ask(req):
            return _exchange(master, st, req, opts, log, incoming, before, progress)

        result = ask_with_fallback(ask, req, log)
        packed = result.pop("master_packed", None)
        if not opts.check:
            take_and_apply(st, hold, incoming, result, req, log)
            result["pack"] = pack_as_master(master, st, hold, packed, opts, log)
    result["downtime_seconds"] = round(hot.downtime, 3) if hot is not None else 0.0
    return make_report(result, st, before, opts.check, t0)


@contextlib.contextmanager
def locked_replica(master, replica_dir, check, log, hot=None):
    """The replica under the pull's own lock, taken (cold: misc/lock now; hot:
    only when its journal needs recovery first) and recovered (check mode only
    says what recovery would do).  Yields (Storage, path of the incoming spool,
    Hold); on the way out the spool is removed, the locks released and a
    stopped storage process started again."""
    refuse_same_folder(master, replica_dir)
    st = Storage(replica_dir)
    refuse_if_promoted(st.home)  # a promoted storage is a master now: a pull would overwrite its own writes
    st.require_full("replica")
    own = lock_pull(st)
    hold = Hold(st, hot, log)
    incoming = st.sub("misc", INCOMING)
    failure = None
    try:
        _take_first(st, hold, check, log)
        yield st, incoming, hold
    except BaseException as e:
        failure = e
        raise
    finally:
        _remove(incoming)
        try:
            hold.release(failure)
        finally:
            own.release()


def take_and_apply(st, hold, incoming, result, req, log):
    """Apply a received increment: a hot standby's replica is taken now (its
    process stopped) if anything is new, and must not have moved since `req`."""
    if result["transactions"] and not hold.taken:
        hold.take()
        _check_unchanged(st, req, log)
    apply_increment(st, incoming, result, log, hold.taken)


def pack_as_master(master, st, hold, packed, opts, log):
    """When the master's x.packed (from its answer) moved past the replica's,
    pack the replica as the master was (packmirror.py): one exchange of
    names per pack.  Returns the counts, or None."""
    if packed is None or packed <= st.packed_tid() or packed > st.last_tid():
        return None
    if not hold.taken:
        hold.take()  # a hot standby's service is stopped for it, once per pack
    log("the master was packed to %s; asking what its pack set aside" % hex_tid(packed))
    packed, drops = ask_pack_drops(open_channel(master, opts, log), st, standby_name_option(opts.standby_name))
    if packed <= st.packed_tid() or packed > st.last_tid():
        return None
    return mirror_pack(st, packed, drops, log)


def _take_first(st, hold, check, log):
    """A cold pull takes the replica before it asks; a hot one only when the
    replica's journal needs recovery first (then it stays stopped)."""
    if hold.hot is None or (not check and st.journal_entries()):
        hold.take()
    _recover(st, check, log)


def _check_unchanged(st, req, log):
    """After a hot standby's storage process stopped: its newest transaction
    must still be the one the increment was asked for."""
    _recover(st, False, log)
    now = st.last_tid()
    if now != req.tid or st.transaction_md5(now) != req.md5:
        raise Refused("replica %s has diverged: it was written while it served (newest transaction %s, %s when "
                      "the pull began)" % (st.home, hex_tid(now), hex_tid(req.tid)),
                      "a standby's storage process must open it read-only; the increment was not applied; "
                      "make a new copy with 'ds-replica clone'")


def _recover(st, check, log):
    """Finish what an interrupted pull left (check mode only says so)."""
    if check:
        # check mode changes nothing, not even a recovery: only say so
        journal.check_journal(st)
        report = {"replica_tar": False, "rolled_forward": 0, "rolled_back": 0, "recombined": 0}
        if st.journal_entries():
            log("the replica's journal needs recovery; the next real pull will do it first")
    else:
        report = journal.recover(st)
    if report["replica_tar"]:
        log("applied an increment left pending by an interrupted pull")
    elif report["rolled_forward"] or report["rolled_back"] or report["recombined"]:
        log("recovered the replica's journal")


def reference_request(st, before, version, options):
    """The request naming the replica's newest transaction `before`."""
    try:
        md5 = st.transaction_md5(before)
    except FileNotFoundError:
        raise Corrupt("replica %s: its newest transaction %s has no file" % (st.home, hex_tid(before)),
                      "verify the replica; make a new copy with 'ds-replica clone'")
    return Request("request", version, st.identity, before, md5, options)


def apply_increment(st, incoming, result, log, taken=True):
    """Pass the commit point and apply the increment (or, with nothing new,
    leave a replica taken cold marked as a snapshot)."""
    if result["transactions"]:
        commit_increment(st, incoming)
        log("commit point passed; applying %d files" % result["files"])
        try:
            journal.apply_archive(st)
        except OSError as e:
            raise LocalDiskError("cannot apply the increment to %s (%s%s)" % (
                st.home, e.strerror or e, ": %s" % e.filename if e.filename else ""),
                "it stays pending in journal/replica.tar: fix the cause (free space?) and pull again, "
                "which finishes it first")
    elif taken and st.snapshot_code() is None:
        st.write_snapshot_marker("shutdown")


def make_report(result, st, before, check, t0):
    after = before if check else st.last_tid()
    result.setdefault("wire_bytes", 0)
    result.update(before_tid=hex_tid(before), after_tid=hex_tid(after),
                  changed=bool(result["transactions"] or result.get("pack")) and not check)
    newest = result.pop("master_newest", None) or (after if not check else None)
    if newest is not None and newest != ZERO_TID and after != ZERO_TID:
        result["lag_seconds"] = round(max(0.0, tid_to_epoch(newest) - tid_to_epoch(after)), 3)
    else:
        result["lag_seconds"] = 0.0
    result["elapsed_seconds"] = round(time.monotonic() - t0, 3)
    return result


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _commit_time_text(tid):
    """When transaction `tid` was committed, for the log (UTC, to the
    second), or "empty" for the zero tid (a storage with no transaction)."""
    when = tid_to_datetime(tid)
    return "empty" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _exchange(master, st, req, opts, log, incoming, before, progress):
    """Ask the master once; receive its increment into `incoming`."""
    chan = WireCounter(open_channel(master, opts, log))
    try:
        with Session(chan, req) as session:
            info = session.start()
            if info.get("dry_run"):
                session.finish_ok()
                require_fields(info, ("transactions", "files", "bytes"))
                return pull_result(info, info["transactions"], info["files"], info["bytes"])
            read = answer_reader(chan.read, info, opts.bwlimit)
            checker, count = receive_increment(session, read, st, incoming, info, progress)
            session.finish_ok()
    except (OSError, EOFError) as e:
        raise transfer_error(e, incoming)
    return checked_result(checker, count, before, info, chan.wire, log)
