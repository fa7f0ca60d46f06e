# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The in-place re-seed, both sides: it costs what diverged.

DirectoryStorage never rewrites a transaction or revision file: a
transaction only adds `t…` and `o<OID>.<TID>` files and rewrites `o<OID>.c`,
`x.serial` and `x.oid`.  So PATH is brought to the master by rewinding what
its diverged transactions wrote and applying the master's increment:

1. The standby sends its chain window (delta.WINDOW newest transactions,
   each with its MD5 and the oids it wrote) in a `replica delta 1` request
   with the option `reseed: in-place`.
2. The master (delta.answer_in_place, in snapshot mode) finds the anchor (the
   newest transaction both hold byte for byte, on its own chain, not below
   its pack point), and answers its increment since the anchor (as a pull),
   plus, for every object only the diverged transactions wrote, its current
   `o….c` (read after snapshot mode: none of them changed since the anchor,
   and one that did meanwhile makes the master gather all again in
   snapshot mode); the header counts the objects it has none of (`absent`).
   No anchor: the header says `method: tree` and why.
3. The standby checks the answer, keeps aside durably what it will lose
   (keep_aside.py), passes the pull's commit point (journal/replica.tar) and
   applies it, then removes the diverged files from A/.  A crash anywhere:
   the next run (or `verify`) finishes it (keep_aside.finish_pending).
"""

from __future__ import annotations

import hashlib
import os
import types

from . import journal
from .delta import IN_PLACE, WINDOW, WINDOW_DIGEST_CHARS
from .errors import Corrupt, DSError
from .fleet_marks import set_upstream
from .increment import (
    INCOMING,
    WireCounter,
    answer_reader,
    commit_increment,
    receive_increment,
    transfer_error,
    validate_increment,
)
from .keep_aside import forget_promotion, keep_aside_in_place, kept_names, remove_kept, transaction_facts
from .protocol import Session, delta_request
from .storage import ZERO_TID, classify, hex_tid, parse_transaction, revision_name, tid_from_hex, transaction_name
from .transport import open_channel

# ---------------------------------------------------------------- standby


def chain_window(st):
    """The newest WINDOW transactions of st's chain (fewer where they wrote
    so many objects that their digests pass WINDOW_DIGEST_CHARS): the
    request entries (name, size, "MD5+OIDS") and {tid: Transaction}."""
    entries, txns = [], {}
    tid = st.last_tid()
    chars = 0
    while len(entries) < WINDOW and tid != ZERO_TID:
        try:
            data = st.transaction_data(tid)
            txn = parse_transaction(data, expect_tid=tid)
        except (OSError, Corrupt):
            break  # a broken chain: the window ends here
        dig = hashlib.md5(data).hexdigest() + "+" + "".join(hex_tid(o) for o in txn.oids)
        chars += len(dig)
        if chars > WINDOW_DIGEST_CHARS:
            break  # transactions that wrote many objects: the window ends where the master's bound would
        entries.append((transaction_name(tid), len(data), dig))
        txns[tid] = txn
        if txn.prev >= tid:
            break
        tid = txn.prev
    return entries, txns


def reseed_in_place(master, st, opts, log, progress=None):
    """Re-seed `st` (locked, its journal recovered) from `master` in place.
    Returns (result, None), or (None, why) when the master says to use the
    tree method."""
    entries, mine = chain_window(st)
    before = st.last_tid()
    req = delta_request(st.identity, entries, {IN_PLACE: "in-place"})
    incoming = st.sub("misc", INCOMING)
    chan = WireCounter(open_channel(master, opts, log))
    try:
        try:
            with Session(chan, req) as session:
                info = _start(session)
                if info.get("method") != "in-place":
                    return None, info.get("reason") or "the master does not re-seed in place (an earlier version)"
                if info.get("format") != st.format:
                    raise Corrupt("the master's format is %s, the storage to re-seed is %s"
                                  % (info.get("format"), st.format), "re-seed it with 'ds-replica clone --force'")
                read = answer_reader(chan.read, info, opts.bwlimit)
                checker, count = receive_increment(session, read, st, incoming, info, progress)
                session.finish_ok()
        except (OSError, EOFError) as e:
            raise transfer_error(e, incoming)
        plan = check_answer(st, checker.names, info, mine)
        result = _apply(master, st, incoming, plan, log)
    finally:
        if os.path.exists(incoming):
            os.unlink(incoming)
    result.update(method="in-place", before_tid=hex_tid(before), files=count[0], bytes=count[1],
                  wire_bytes=chan.wire, answer_bytes=chan.wire, request_bytes=len(req.body), kept_files=None,
                  snapshot_seconds=info.get("snapshot_seconds"), master_tid=info.get("master_tid"))
    log("re-seeded in place from anchor %s: %d transaction(s) applied, %d diverged, %d files removed"
        % (result["anchor_tid"], result["transactions"], len(result["diverged_transactions"]),
           result["removed_files"]))
    return result, None


def _start(session):
    """The answer header; {} from a master of an earlier version, which
    refuses the `reseed` option (its answer to the tree method's request
    is asked for next)."""
    try:
        return session.start()
    except DSError as e:
        if "unknown request option '%s'" % IN_PLACE in str(e):
            return {}
        raise


def check_answer(st, names, info, mine):
    """Check an in-place answer against what the standby holds; returns the
    plan: anchor, diverged transactions (oldest first), the increment's
    transactions."""
    try:
        anchor = tid_from_hex(info.get("anchor", ""))
    except (ValueError, TypeError):
        raise Corrupt("the master's in-place answer names no valid anchor")
    if anchor not in mine:
        raise Corrupt("the master's anchor %s is not in the standby's chain window" % hex_tid(anchor))
    diverged = [mine[t] for t in sorted(mine) if t > anchor]
    touched = {oid for txn in diverged for oid in txn.oids}
    names = dict(names)
    if "x.oid" not in names:
        raise Corrupt("the master's in-place answer lacks x.oid")
    written = set()
    for name, parsed in names.items():
        if name.startswith("t"):
            written.update(parsed.oids)
    rewinds = _rewinds(st, names, written, touched, anchor)
    order = validate_increment(types.SimpleNamespace(names=names), anchor)
    absent = touched - written - set(rewinds)
    if info.get("absent") != len(absent):
        raise Corrupt("the master's in-place answer counts %r objects it does not hold, the standby %d"
                      % (info.get("absent"), len(absent)))
    return {"anchor": anchor, "diverged": diverged, "order": order}


def _rewinds(st, names, written, touched, anchor):
    """The o….c files of objects no increment transaction wrote (taken out of
    `names`): each of an object a diverged transaction wrote, naming a
    revision at or below the anchor that the standby holds."""
    rewinds = {}
    for name in [n for n in names if n.endswith(".c")]:
        oid = classify(name)[1]
        if oid in written:
            continue
        tid = names.pop(name)
        if oid not in touched:
            raise Corrupt("the master sent the current-revision file of object %s, which neither its increment "
                          "nor a diverged transaction wrote" % hex_tid(oid))
        if tid > anchor or not os.path.exists(st.path(revision_name(oid, tid))):
            raise Corrupt("the master's current-revision file of object %s names revision %s, which the standby "
                          "does not hold below the anchor" % (hex_tid(oid), hex_tid(tid)))
        rewinds[oid] = tid
    return rewinds


def _apply(master, st, incoming, plan, log):
    """Keep aside what the diverged transactions wrote, pass the commit
    point, apply, remove the diverged files."""
    diverged = plan["diverged"]
    if not diverged and not plan["order"]:
        return _already_the_masters(master, st, plan)
    aside = None
    if diverged:
        pending = {"path": st.home, "anchor": hex_tid(plan["anchor"])}
        aside = keep_aside_in_place(st, kept_names(st, diverged), pending)
        log("kept %d diverged transaction(s) aside in %s" % (len(diverged), aside))
    facts = [transaction_facts(st.transaction_data(t.tid)) for t in diverged]
    journal.stage_upstream(st, master)  # config/upstream changes with the files, at the commit point
    commit_increment(st, incoming)
    journal.apply_archive(st)
    removed = remove_kept(st, aside) if aside else forget_promotion(st)
    return {"changed": True, "path": st.home, "after_tid": hex_tid(st.last_tid()),
            "anchor_tid": hex_tid(plan["anchor"]), "transactions": len(plan["order"]),
            "diverged_transactions": facts, "kept_aside": aside, "removed_files": removed}


def _already_the_masters(master, st, plan):
    """Nothing diverged and nothing to apply: the storage is left as it is
    (no commit point, no apply), except for the marks of a re-seed (no
    config/promoted, the new upstream); changed only if one of them was."""
    promoted = os.path.exists(st.sub("config", "promoted"))
    forget_promotion(st)
    changed = set_upstream(st.home, master) or promoted
    return {"changed": changed, "path": st.home, "after_tid": hex_tid(st.last_tid()),
            "anchor_tid": hex_tid(plan["anchor"]), "transactions": 0, "diverged_transactions": [],
            "kept_aside": None, "removed_files": 0}
