# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`ds-replica promote REPLICA`: make a standby the master.

The standby is first brought to a clean state (an increment left pending by
an interrupted pull is applied, the storage marked as a stopped snapshot) and
checked as `verify` checks it; a storage
that fails is never promoted.  Then `config/promoted` (fleet_marks.py) records
the time and the newest transaction: from then on every pull into it
refuses, and it can be served to the other standbys at once.
"""

from __future__ import annotations

from . import journal
from .errors import Corrupt
from .fleet_marks import mark_promoted, promoted
from .hold import Hold, lock_pull
from .info import self_check
from .storage import Storage, hex_tid


def promote(path, check=False, log=None):
    """Promote the storage at `path`; returns a result dict."""
    log = log or (lambda msg: None)
    st = Storage(path)
    st.require_full("storage")
    already = promoted(st.home)
    if already is not None:
        return dict(already, changed=False, path=st.home, promoted=True)
    own = lock_pull(st)  # no pull may run meanwhile
    hold = Hold(st, log=log)
    try:
        hold.take()
        if not check:
            journal.recover(st)
            if st.snapshot_code() is None:  # stopped and whole: a snapshot, as a pull that finds nothing new leaves it
                st.write_snapshot_marker("shutdown")
        problems, txns, files = self_check(st)
        if problems:
            raise Corrupt("%s fails its check, refusing to promote it: %s%s"
                          % (st.home, problems[0], " (and %d more)" % (len(problems) - 1) if problems[1:] else ""),
                          "promote another standby, or repair this one with 'ds-replica clone --delta'")
        log("%d transactions and %d files checked" % (txns, files))
        result = {"changed": True, "path": st.home, "promoted": not check, "checked_transactions": txns,
                  "checked_files": files, "tid": hex_tid(st.last_tid()), "promoted_at": None}
        if not check:
            result.update(mark_promoted(st.home, st.last_tid()))
        return result
    finally:
        try:
            hold.release()
        finally:
            own.release()
