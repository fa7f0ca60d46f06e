# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operator views of a storage: `status` facts and `verify` checks.

Exit codes of the CLI verbs follow the Nagios convention: 0 OK, 1 WARNING,
2 CRITICAL (3 UNKNOWN for bad usage).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from . import journal
from .storage import (
    EMPTY_MD5,
    ZERO_TID,
    Corrupt,
    DSError,
    Storage,
    classify,
    hex_tid,
    parse_current,
    parse_revision,
    read_file,
    tid_to_datetime,
    tid_to_epoch,
    transaction_digest,
)

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


def _iso(tid):
    when = tid_to_datetime(tid)
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def storage_info(path):
    """Facts about a storage folder (never changes anything)."""
    st = Storage(path)
    last, packed = st.last_tid(), st.packed_tid()
    lock_held, lock_pid = st.lock().probe()
    sub_held, sub_pid = st.sublock().probe()
    entries = st.journal_entries()
    done = [e for e in entries if e.endswith("_done")]
    prev = st.sub("misc", "replica.previous")
    last_rep = os.path.getmtime(prev) if os.path.exists(prev) else None
    b_files = sum(len(files) for _d, _s, files in os.walk(st.b_dir)) if os.path.isdir(st.b_dir) else 0
    return {
        "path": st.home,
        "identity": st.identity,
        "classname": st.classname,
        "format": st.format,
        "version": st.version,
        "last_tid": hex_tid(last),
        "last_time": _iso(last),
        "packed_tid": hex_tid(packed),
        "packed_time": _iso(packed),
        "snapshot": st.snapshot_code() is not None,
        "snapshot_code": st.snapshot_code(),
        "lock": {"held": lock_held, "pid": lock_pid},
        "sublock": {"held": sub_held, "pid": sub_pid},
        "journal_backlog": len(done),
        "journal_pending_replica": journal.REPLICA_TAR in entries,
        "spill_files": b_files,
        "last_replication": (datetime.datetime.fromtimestamp(last_rep, datetime.timezone.utc)
                             .strftime("%Y-%m-%dT%H:%M:%SZ") if last_rep else None),
        "last_replication_age_seconds": round(time.time() - last_rep, 1) if last_rep else None,
        "age_seconds": round(time.time() - tid_to_epoch(last), 1) if last != ZERO_TID else None,
    }


def self_check(st):
    """A storage against its own checksums: the chain down to the pack, every
    revision those transactions wrote, and every current-revision file."""
    problems = []
    checked_txns = checked_files = 0
    packed = st.packed_tid()
    try:
        for txn in st.chain(stop=packed if packed != ZERO_TID else ZERO_TID):
            checked_txns += 1
            for oid in txn.oids:
                name = "o%s.%s" % (hex_tid(oid), hex_tid(txn.tid))
                try:
                    parse_revision(st.read(name), expect_oid=oid, expect_tid=txn.tid, what=st.relpath(name))
                    checked_files += 1
                except FileNotFoundError:
                    problems.append("%s is missing (written by transaction %s)" % (st.relpath(name),
                                                                                   hex_tid(txn.tid)))
                except Corrupt as e:
                    problems.append(str(e))
    except Corrupt as e:
        problems.append(str(e))
    for rel, name in st.iter_files("A"):
        if name is None or not name.endswith(".c"):
            continue
        kind, oid, _unused = classify(name)
        try:
            tid = parse_current(read_file(os.path.join(st.a_dir, *rel.split("/"))), what="A/" + rel)
            target = "o%s.%s" % (hex_tid(oid), hex_tid(tid))
            parse_revision(st.read(target), expect_oid=oid, expect_tid=tid, what=st.relpath(target))
            checked_files += 1
        except FileNotFoundError:
            problems.append("A/%s points to revision %s, which is missing" % (rel, hex_tid(tid)))
        except Corrupt as e:
            problems.append(str(e))
    return problems, checked_txns, checked_files


def verify(path, master=None, opts=None, log=None):
    """Check a storage against its own checksums and, given a master, against
    the master's transaction history up to the replica's newest transaction."""
    st = Storage(path)
    problems, txns, files = self_check(st)
    result = {"path": st.home, "last_tid": hex_tid(st.last_tid()), "checked_transactions": txns,
              "checked_files": files, "master_checked_transactions": 0}
    if master:
        mine = {}
        since = st.packed_tid()
        tid = st.last_tid()
        while tid != ZERO_TID and tid > since:
            try:
                data = st.transaction_data(tid)
            except FileNotFoundError:
                break
            mine[hex_tid(tid)] = transaction_digest(data)
            tid = data[24:32]
        theirs = _master_digests(master, st, since, opts, log)
        result["master_tid"] = theirs["master_tid"]
        their_chain = dict((t, m) for t, m in theirs["chain"])
        for t in sorted(set(their_chain) - set(mine)):
            problems.append("master transaction %s is missing from the replica's history" % t)
        for t, m in sorted(mine.items()):
            if t not in their_chain:
                if t > theirs["packed_tid"]:
                    problems.append("transaction %s is not on the master" % t)
            elif their_chain[t] != m:
                problems.append("transaction %s differs from the master's" % t)
            else:
                result["master_checked_transactions"] += 1
    result["problems"] = problems
    result["ok"] = not problems
    return result


def _master_digests(master, st, since, opts, log):
    from .options import PullOptions
    from .replica import ANSWER_PREFIX, master_failure, open_channel
    from .serve import Request
    opts = opts or PullOptions()
    req = Request("verify", 1, st.identity, st.last_tid(), EMPTY_MD5.hex(), {"since": hex_tid(since)})
    chan = open_channel(master, opts, log or (lambda m: None))
    try:
        chan.send(req.encode())
        chan.close_input()
        first = chan.readline(1 << 26)
    except BaseException:
        chan.abort()
        raise
    status, err = chan.finish()
    if status != 0 or not first.startswith(ANSWER_PREFIX):
        raise master_failure(status or 1, err)
    return json.loads(first[len(ANSWER_PREFIX):].decode("ascii"))


# ------------------------------------------------------------------ CLI

def _stdout(text):
    sys.stdout.write(text + "\n")


def _print(result, as_json, lines):
    if as_json:
        _stdout(json.dumps(result, sort_keys=True, indent=2))
    else:
        for line in lines:
            _stdout(line)


def master_lag(path, master, opts=None, log=None):
    """Ask the master what a pull would bring (a dry run, no snapshot mode,
    no lock on the replica): transactions waiting and the lag in seconds."""
    from .options import PullOptions
    from .replica import ANSWER_PREFIX, master_failure, open_channel
    from .serve import Request
    st = Storage(path)
    before = st.last_tid()
    req = Request("request", 1, st.identity, before, st.transaction_md5(before), {"dry-run": "1"})
    chan = open_channel(master, opts or PullOptions(), log or (lambda m: None))
    try:
        chan.send(req.encode())
        chan.close_input()
        first = chan.readline(65536)
    except BaseException:
        chan.abort()
        raise
    status, err = chan.finish()
    if status != 0 or not first.startswith(ANSWER_PREFIX):
        raise master_failure(status or 1, err)
    answer = json.loads(first[len(ANSWER_PREFIX):].decode("ascii"))
    newest = bytes.fromhex(answer["master_newest_tid"])
    lag = 0.0
    if newest > before and before != ZERO_TID:
        lag = round(tid_to_epoch(newest) - tid_to_epoch(before), 3)
    return {"master_tid": answer["master_newest_tid"], "master_time": _iso(newest), "lag_seconds": lag,
            "waiting_transactions": answer["transactions"],
            "waiting_bytes": answer["bytes"] if answer["transactions"] else 0}


def cmd_status(argv):
    from .cli import _add_ssh_options, _options
    p = argparse.ArgumentParser(prog="ds-replica status",
                                description="Summarise a storage (and, given its master, how far behind it is). "
                                            "Exit 0 OK, 1 WARNING, 2 CRITICAL (Nagios).")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--master", metavar="[USER@]HOST:PATH",
                   help="the replica's master: report the lag and what is waiting (asks the master; no lock taken)")
    p.add_argument("--warn-age", type=float, metavar="S",
                   help="WARNING when the replica lags its master (or, without --master, when the newest "
                        "transaction is older) by more than S seconds")
    p.add_argument("--crit-age", type=float, metavar="S", help="CRITICAL likewise")
    _add_ssh_options(p)
    p.add_argument("directory")
    args = p.parse_args(argv)
    try:
        info = storage_info(args.directory)
        if args.master:
            info["master"] = master_lag(args.directory, args.master, _options(args))
    except DSError as e:
        _stdout("CRITICAL: %s" % e)
        return CRITICAL
    code, state = OK, "OK"
    age = info["master"]["lag_seconds"] if args.master else info["age_seconds"]
    if age is not None and args.crit_age is not None and age > args.crit_age:
        code, state = CRITICAL, "CRITICAL"
    elif age is not None and args.warn_age is not None and age > args.warn_age:
        code, state = WARNING, "WARNING"
    if info["journal_pending_replica"] and code == OK:
        code, state = WARNING, "WARNING"
    holders = []
    for name in ("lock", "sublock"):
        if info[name]["held"]:
            holders.append("misc/%s held%s" % (name, " by pid %s" % info[name]["pid"] if info[name]["pid"] else ""))
    lines = [
        "%s: %s storage %s (%s, %s)" % (state, info["classname"], info["path"], info["format"], info["identity"]),
        "newest transaction: %s (%s)%s" % (info["last_tid"], info["last_time"] or "empty",
                                           ", %.0fs ago" % info["age_seconds"] if info["age_seconds"] is not None
                                           else ""),
        "packed up to: %s" % (info["packed_tid"] if info["packed_time"] else "never"),
        "snapshot: %s" % (info["snapshot_code"] or "no"),
        "locks: %s" % (", ".join(holders) or "free"),
        "journal backlog: %d transaction(s)%s" % (info["journal_backlog"],
                                                  ", replica increment pending" if info["journal_pending_replica"]
                                                  else ""),
        "last replication: %s" % (info["last_replication"] or "never"),
    ]
    if args.master:
        lag = info["master"]
        lines.append("master: newest transaction %s (%s); lag %.1fs, %d transaction(s), %d bytes waiting"
                     % (lag["master_tid"], lag["master_time"], lag["lag_seconds"], lag["waiting_transactions"],
                        lag["waiting_bytes"]))
    _print(dict(info, state=state), args.json, lines)
    return code


def cmd_verify(argv):
    p = argparse.ArgumentParser(prog="ds-replica verify",
                                description="Check a storage against its own checksums, and a replica against its "
                                            "master. Exit 0 OK, 2 CRITICAL.")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    from .cli import _add_ssh_options, _options
    _add_ssh_options(p)
    p.add_argument("directory")
    p.add_argument("master", nargs="?", help="[user@]host:path of the master, or a local path")
    args = p.parse_args(argv)
    try:
        result = verify(args.directory, args.master, _options(args))
    except DSError as e:
        _stdout("CRITICAL: %s" % e)
        return CRITICAL
    state = "OK" if result["ok"] else "CRITICAL"
    lines = ["%s: %s: %d transactions and %d files checked%s" % (
        state, result["path"], result["checked_transactions"], result["checked_files"],
        ", %d transactions match the master" % result["master_checked_transactions"] if args.master else "")]
    lines += ["  " + pr for pr in result["problems"][:50]]
    _print(dict(result, state=state), args.json, lines)
    return OK if result["ok"] else CRITICAL
