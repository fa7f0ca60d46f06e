# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a re-seed keeps aside, in one place: `PATH.before-reseed-<UTC time>`.

The in-place re-seed (reseed_inplace.py) keeps only what it would lose: the
diverged transactions' `t…` and `o<OID>.<TID>` files and the `o….c`,
`x.serial`, `x.oid` it replaces or removes, laid out as a storage of the
same format (`config/` and `A/`), hard-linked (the files are write-once, or
replaced by rename: a link keeps the old bytes).  The folder is built under
a hidden name (`.NAME.reseed-PID`), made durable, then renamed: it is whole
or absent.  Until the re-seed has removed the diverged files from PATH its
`misc/reseed-pending` says so; the next re-seed (or `verify`) finishes the
removal (`finish_pending`), or drops the keep-aside when the commit point
was never passed (PATH still holds all of it).

The tree re-seed (reseed.py) keeps the whole old tree: a marker
(`misc/reseed-keep-aside`, naming the aside path) is written into it before
the swap, and the tree is renamed to that name after it
(`finish_keep_aside`), by the next run if a crash came between.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil

from . import journal
from .delta import walk
from .durable import Durability, fsync_path, pid_alive, read_file, sync_tree, write_atomic
from .errors import Corrupt, DSError
from .storage import Storage, current_name, hex_tid, parse_transaction, revision_name, tid_to_datetime, transaction_name

ASIDE_SUFFIX = ".before-reseed-"  # PATH.before-reseed-<UTC time>
# misc/ file of an old tree the tree re-seed keeps aside (what only the old master held)
KEEP_ASIDE = "reseed-keep-aside"
PENDING = "reseed-pending"  # misc/ file of an in-place keep-aside whose re-seed has not finished
BUILDING = "reseed"  # .NAME.reseed-PID: a keep-aside being built


# ------------------------------------------------------------ both methods

def aside_path(dest):
    """A new PATH.before-reseed-<UTC time> (never an existing one)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path, n = "%s%s%s" % (dest, ASIDE_SUFFIX, stamp), 1
    while os.path.lexists(path):
        n += 1
        path = "%s%s%s-%d" % (dest, ASIDE_SUFFIX, stamp, n)
    return path


def kept_asides(dest):
    return sorted(glob.glob(glob.escape(dest) + ASIDE_SUFFIX + "*"))


def transaction_facts(data):
    """{tid, time, user, description, oids} of a transaction file's bytes."""
    txn = parse_transaction(data, check_md5=False)
    when = tid_to_datetime(txn.tid)
    return {"tid": hex_tid(txn.tid), "time": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None,
            "user": txn.user.decode("utf-8", "replace"), "description": txn.description.decode("utf-8", "replace"),
            "oids": [hex_tid(o) for o in txn.oids]}


def kept_aside_line(result):
    """One line on the transactions a re-seed kept aside (what the CLI, the
    module and the playbooks print), or None when it kept nothing aside."""
    if not result.get("kept_aside"):
        return None
    return "%d transaction(s) the master does not hold, kept in %s: %s" % (
        len(result["diverged_transactions"]), result["kept_aside"],
        "; ".join("%s %s user=%r description=%r" % (t["tid"], t["time"], t["user"], t["description"])
                  for t in result["diverged_transactions"]))


def list_kept(folder):
    """What a keep-aside folder holds: {path, pending, transactions: [{tid,
    time, user, description, oids}]} (oldest first)."""
    try:
        st = Storage(folder)
    except DSError:
        raise DSError("%s is not a folder a re-seed kept aside (no config/ of a storage)" % folder,
                      "give a PATH.before-reseed-<UTC time> folder")
    txns = []
    for rel, name, _size in walk(st.a_dir, st.format):
        if name.startswith("t"):
            path = os.path.join(st.a_dir, *rel.split("/"))
            try:
                txns.append(transaction_facts(read_file(path)))
            except Corrupt as e:
                raise Corrupt("%s: %s" % (path, e.message), "inspect it by hand")
    txns.sort(key=lambda t: t["tid"])
    return {"path": st.home, "pending": os.path.exists(st.sub("misc", PENDING)),
            "whole_tree": os.path.isdir(st.sub("B")) or os.path.isdir(st.sub("journal")), "transactions": txns}


# ------------------------------------------------------------ tree method

def keep_aside_target(tree):
    """The name a stale tree must be kept aside as (the tree re-seed wrote it
    into the old tree before swapping it out), or None."""
    try:
        with open(os.path.join(tree, "misc", KEEP_ASIDE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def mark_tree(dest, aside):
    """Say in the old tree's misc/ where it goes once swapped out."""
    os.makedirs(os.path.join(dest, "misc"), exist_ok=True)
    write_atomic(os.path.join(dest, "misc", KEEP_ASIDE), aside.encode("utf-8"))


def finish_keep_aside(tree, log):
    """Rename an old tree that the tree re-seed swapped out to its aside
    name; False when `tree` is not one."""
    target = keep_aside_target(tree)
    if target is None:
        return False
    if not os.path.lexists(target):
        os.rename(tree, target)
        fsync_path(os.path.dirname(target), directory=True)
        forget_keep_aside(target)
        log("kept the old storage aside as %s" % target)
    return True


def forget_keep_aside(tree):
    """Remove the keep-aside marker of a tree now at its aside name, durably
    (a crash before that leaves it there: the next re-seed calls this)."""
    misc = os.path.join(tree, "misc")
    os.unlink(os.path.join(misc, KEEP_ASIDE))
    fsync_path(misc, directory=True)


def forget_markers_kept_aside(dest):
    """The keep-aside marker a crash left in an old tree already renamed to
    its aside name."""
    for tree in kept_asides(dest):
        target = keep_aside_target(tree)
        if target is not None and os.path.basename(target) == os.path.basename(tree):
            forget_keep_aside(tree)


# ------------------------------------------------------------ in-place method

def _link(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        raise DSError("cannot keep %s aside as %s (%s)" % (src, dst, e.strerror),
                      "PATH and its parent folder must be on one filesystem; nothing was changed")


def keep_aside_in_place(st, names, pending):
    """Link `names` (logical names in st's A/; missing ones skipped) and
    st's config/ into a new PATH.before-reseed-<UTC time>, durably, with
    misc/reseed-pending holding `pending` (a dict).  Returns its path."""
    parent, base = os.path.split(st.home)
    building = os.path.join(parent, ".%s.%s-%d" % (base, BUILDING, os.getpid()))
    shutil.rmtree(building, ignore_errors=True)
    os.makedirs(os.path.join(building, "misc"))
    os.makedirs(os.path.join(building, "A"))
    for name in ("settings", "identity", "promoted"):
        src = st.sub("config", name)
        if os.path.exists(src):
            os.makedirs(os.path.join(building, "config"), exist_ok=True)
            shutil.copyfile(src, os.path.join(building, "config", name))
    for name in sorted(names):
        src = st.path(name)
        if os.path.exists(src):
            _link(src, os.path.join(building, "A", *st.relpath(name).split("/")[1:]))
    write_atomic(os.path.join(building, "misc", PENDING),
                 (json.dumps(pending, sort_keys=True) + "\n").encode("ascii"))
    for name in ("settings", "identity", "promoted"):
        path = os.path.join(building, "config", name)
        if os.path.exists(path):
            fsync_path(path)
    sync_tree(building)
    aside = aside_path(st.home)
    os.rename(building, aside)
    fsync_path(parent, directory=True)
    return aside


def remove_stale_building(dest):
    """Keep-asides a dead re-seed was building: PATH still holds all of them."""
    parent, base = os.path.split(dest)
    prefix = ".%s.%s-" % (base, BUILDING)
    for entry in sorted(os.listdir(parent)):
        pid = entry[len(prefix):]
        if entry.startswith(prefix) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def pending_keep_asides(dest):
    return [p for p in kept_asides(dest) if os.path.exists(os.path.join(p, "misc", PENDING))]


def finish_pending(st, log):
    """Finish what an interrupted in-place re-seed of `st` left (caller holds
    its locks and has recovered its journal): past the commit point (st's
    x.serial is no longer the kept one), remove from A/ every file that is
    still the very file kept aside; before it, drop the keep-aside (A/ still
    holds all of it).  Returns the keep-asides it finished."""
    finished = []
    for aside in pending_keep_asides(st.home):
        if _same_file(Storage(aside).path("x.serial"), st.path("x.serial")):
            shutil.rmtree(aside)
            fsync_path(os.path.dirname(aside), directory=True)
            log("dropped %s: the re-seed that made it never passed its commit point" % aside)
            continue
        remove_kept(st, aside)
        finished.append(aside)
        log("finished the re-seed that kept %s aside" % aside)
    return finished


def finish_pending_unlocked(home, log):
    """`verify`'s part: finish an interrupted in-place re-seed of `home` when
    its locks are free (else say so); returns (finished, problem or None)."""
    if not pending_keep_asides(home):
        return [], None
    st = Storage(home)
    lock, sub = st.lock(), st.sublock()
    if not lock.acquire():
        return [], "an interrupted re-seed is to be finished, but %s is in use (misc/lock)" % home
    try:
        if not sub.acquire():
            return [], "an interrupted re-seed is to be finished, but %s is in use (misc/sublock)" % home
        try:
            journal.recover(st)
            return finish_pending(st, log), None
        finally:
            sub.release()
    finally:
        lock.release()


def remove_kept(st, aside):
    """Remove from st's A/ the files the keep-aside `aside` holds (the same
    inode: never a file the master's increment wrote under the same name),
    the promotion mark, then the keep-aside's pending mark.  Returns the
    number removed."""
    kept = Storage(aside)
    removed = 0
    for rel, name, _size in list(walk(kept.a_dir, kept.format)):
        target = st.path(name)
        if _same_file(os.path.join(kept.a_dir, *rel.split("/")), target):
            os.unlink(target)
            removed += 1
        _remove_empty_folders(os.path.dirname(target), st.a_dir)  # also those a cut run left
    forget_promotion(st)
    Durability(st.home, True).commit()
    os.unlink(kept.sub("misc", PENDING))
    fsync_path(kept.sub("misc"), directory=True)
    return removed


def forget_promotion(st):
    """A re-seeded storage is a standby: no config/promoted (it is kept
    aside with the diverged transactions).  Returns 0 (files removed)."""
    promoted = st.sub("config", "promoted")
    if os.path.exists(promoted):
        os.unlink(promoted)
        fsync_path(st.sub("config"), directory=True)
    return 0


def _same_file(a, b):
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except FileNotFoundError:
        return False


def _remove_empty_folders(folder, root):
    while folder != root and folder.startswith(root) and not os.path.isdir(folder):
        folder = os.path.dirname(folder)  # removed already, by a run that was cut
    while folder != root and folder.startswith(root) and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def kept_names(st, txns):
    """The logical names an in-place re-seed keeps aside for the diverged
    transactions `txns` (Transaction objects): theirs, their revisions, the
    o….c of every object they wrote, x.serial and x.oid."""
    names = {"x.serial", "x.oid"}
    for txn in txns:
        names.add(transaction_name(txn.tid))
        for oid in txn.oids:
            names.add(revision_name(oid, txn.tid))
            names.add(current_name(oid))
    return names
