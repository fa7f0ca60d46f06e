# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Re-seed (`ds-replica clone --delta MASTER PATH`, the `reseed` module): make
a storage that already holds the master's identity (a diverged standby, an
old master, a clone interrupted half-way) a standby of the master again,
transferring only what is missing or different.

`reseed` picks the method, named in the result as `method`:

- `in-place` (reseed_inplace.py): PATH is rewound to the anchor
  (the newest transaction both hold, from its chain window) and the
  master's increment applied through the journal; only the diverged
  transactions' files are kept aside.  Its cost follows the divergence.
- `tree` (below, the first method, still the fallback), when the in-place method cannot be used: no
  storage at PATH or a partial clone to resume, no anchor in the chain
  window, the master packed past the anchor (`method_reason` says which).
  A new tree is built in a hidden partial folder `.NAME.clone-PID` with
  clone.py's steps: the standby sends its inventory (delta.py), every file
  the master did not send and still holds is hard-linked from where the
  standby has it (PATH itself, or the partial folder of a dead clone: a
  clone resumes), and the copy is swapped into place atomically.  When PATH
  holds transactions the master does not, the whole old tree is kept aside
  as `PATH.before-reseed-<UTC time>` (keep_aside.py).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time

from . import journal, ustar
from .delta import WINDOW, digest, is_revision, needs_digest, prefix_digest, walk
from .durable import fsync_path, read_file, remove_atomic_leftovers
from .errors import Busy, Corrupt, DSError
from .fleet_marks import set_upstream
from .keep_aside import (
    KEEP_ASIDE,
    aside_path,
    finish_keep_aside,
    finish_pending,
    forget_markers_kept_aside,
    mark_tree,
    remove_stale_building,
    transaction_facts,
)
from .options import PullOptions
from .partial import (
    PART_SUFFIX,
    claim_destination,
    complete_copy,
    destination,
    put_in_place,
    release,
    remove_stale_partials,
    stale_folders,
    write_members,
)
from .protocol import DROP_MEMBER, Session, decode_drop, delta_request, standby_name_option
from .reseed_inplace import reseed_in_place
from .storage import (
    ZERO_TID,
    Storage,
    check_member,
    classify,
    hex_tid,
    logical_name,
    logical_path,
    parse_current,
    parse_transaction,
    revision_name,
    transaction_digest,
    transaction_name,
)
from .transport import Throttle, open_channel

TREE_ASKED = "the tree method was asked for (--tree)"


def reseed(master, dest, opts=None, log=None, progress=None, in_place=True):
    """Re-seed `dest` from `master`, in place when it can (and `in_place`);
    returns the result dict (`method`: in-place or tree)."""
    opts = opts or PullOptions()
    log = log or (lambda msg: None)
    t0 = time.monotonic()
    dest, parent, base = destination(master, dest, log)
    why = _tree_needed(dest, parent, base) if in_place else TREE_ASKED
    if why is None:
        result, why = _in_place(master, dest, opts, log, progress)
        if result is not None:
            result["elapsed_seconds"] = round(time.monotonic() - t0, 3)
            return result
    log("re-seeding by a new tree: %s" % why)
    result = _reseed_tree(master, dest, parent, base, opts, log, progress)
    result.update(method="tree", method_reason=why, elapsed_seconds=round(time.monotonic() - t0, 3))
    return result


def _tree_needed(dest, parent, base):
    """Why the in-place method cannot even be asked for, or None."""
    if not os.path.exists(os.path.join(dest, "config", "settings")):
        return "%s holds no storage" % dest
    if any(stale_folders(parent, base, "clone")):
        return "a partial clone to resume"
    return None


def _in_place(master, dest, opts, log, progress):
    """The in-place re-seed under PATH's locks, once its journal and an
    interrupted re-seed are finished: (result, None) or (None, why not)."""
    st = Storage(dest)
    lock = st.lock()
    if not lock.acquire():
        raise Busy("%s is in use (misc/lock is held)" % dest, "stop what uses it first")
    try:
        sub = st.sublock()
        if not sub.acquire():
            raise Busy("%s is in use (misc/sublock is held)" % dest, "wait and try again")
        try:
            journal.recover(st)
            remove_stale_building(dest)
            finish_pending(st, log)
            return reseed_in_place(master, st, opts, log, progress)
        finally:
            sub.release()
    finally:
        lock.release()


class Source(object):
    """A tree the new copy may take files from: {name: (path, size)}, once
    scanned."""

    def __init__(self, home, trusted):
        self.home = home
        self.trusted = trusted  # PATH itself; a dead clone's files are checked first
        self.files = {}
        self.prefixes = {}  # name: (path, size) of the beginning of a large file a killed clone received
        try:
            st = Storage(home)
        except DSError:
            self.identity = None
            return
        self.identity = st.identity
        self.format = st.format
        self.a_dir = st.a_dir

    def scan(self, found=None):
        """Walk A/ into `files`, telling `found(name, path, relpath)` of each
        file as it comes."""
        if not os.path.isdir(self.a_dir):
            return
        strays = [] if not self.trusted else None
        for rel, name, size in walk(self.a_dir, self.format, strays):
            path = os.path.join(self.a_dir, *rel.split("/"))
            self.files[name] = (path, size)
            if found is not None:
                found(name, path, rel)
        for rel, size in strays or ():
            name = logical_name(self.format, rel[:-len(PART_SUFFIX)]) if rel.endswith(PART_SUFFIX) else None
            if name is not None and not journal.is_mutable(name) and size > 0:
                self.prefixes[name] = (os.path.join(self.a_dir, *rel.split("/")), size)


def _sources(dest, parent, base):
    """PATH (when it holds a storage) and the partial folders of dead clones
    of the same storage, best first (not scanned yet)."""
    found = [Source(dest, True)] if os.path.exists(os.path.join(dest, "config", "settings")) else []
    identity = found[0].identity if found else None
    for partial in stale_folders(parent, base, "clone"):
        source = Source(partial, False)
        if source.identity and identity in (None, source.identity):
            identity = source.identity
            found.append(source)
    if identity is None:
        raise DSError("%s holds no storage to re-seed, and no interrupted clone of one" % dest,
                      "make a first copy with 'ds-replica clone'")
    return identity, found


def _usable(path, name, trusted):
    """A file from a dead clone may be cut short or unflushed: its own
    checksums decide."""
    if trusted:
        return True
    try:
        check_member(name, read_file(path), path)
    except (OSError, Corrupt):
        return False
    return True


def _inventory(sources, linker, log):
    """Scan the sources, best first, handing each file the new copy takes
    to `linker` as it is found (PATH's while its tree is walked).  Returns
    {name: (path, size)} and the names taken from PATH (trusted: no digest
    needed)."""
    chosen, trusted = {}, set()
    fmt = sources[0].format
    for source in sources:
        if source.trusted:
            def take(name, path, rel, files=source.files):
                chosen[name] = files[name]
                trusted.add(name)
                linker.add(path, rel)
            source.scan(take)
            continue
        source.scan()
        log("resuming from %s (%d files)" % (source.home, len(source.files)))
        for name, (path, size) in source.files.items():
            if name not in chosen and _usable(path, name, False):
                chosen[name] = (path, size)
                linker.add(path, logical_path(fmt, name))
    linker.done_adding(chosen, trusted)
    return chosen, trusted


def _entries(chosen, window, digested, trusted=frozenset()):
    """The request's entries (name, size, digest): the chain window's given
    digests, a computed one for the names in `digested` that need one
    (delta.needs_digest) and for the object revisions of a dead clone (their
    header: a clone writes revisions before their transaction files, so
    their transaction cannot vouch for them), none for the others."""
    entries = []
    for name, (path, size) in chosen.items():
        if name in window:
            entries.append((name, size, window[name]))
        elif name in digested and (needs_digest(name) or (is_revision(name) and name not in trusted)):
            entries.append((name, size, digest(path, name)))
        else:
            entries.append((name, size, None))
    return entries


def _prefixes(sources, chosen):
    """{name: (path, size, digest)} of the beginnings of large files that
    killed clones received (partial.PrefixKeeper), for files no source holds
    whole: the master sends the rest of each."""
    found = {}
    for source in sources:
        for name, (path, size) in source.prefixes.items():
            if name not in chosen and name not in found:
                digest_ = prefix_digest(path, size)
                if digest_ is not None:
                    found[name] = (path, size, digest_)
    return found


def _chain_window(home, chosen, trusted):
    """The newest delta.WINDOW transactions of PATH's chain, {name: "MD5+OIDS"}
    (only those it holds as chosen), and the request options that say so."""
    st = Storage(home)
    window, tid, complete = {}, st.last_tid(), False
    while len(window) < WINDOW:
        if tid == ZERO_TID:
            complete = True
            break
        name = transaction_name(tid)
        if name not in trusted:
            break
        try:
            data = read_file(chosen[name][0])
            txn = parse_transaction(data, expect_tid=tid)
        except (OSError, Corrupt):
            break  # a broken chain: the window ends here (below it, nothing is trusted)
        window[name] = hashlib.md5(data).hexdigest() + "+" + "".join(hex_tid(o) for o in txn.oids)
        if txn.prev >= tid:
            break
        tid = txn.prev
    options = {"chain": hex_tid(st.packed_tid()), "chain-complete": "yes" if complete else "no"}
    return window, options


def _reseed_tree(master, dest, parent, base, opts, log, progress):
    """The tree method; returns the result dict."""
    for partial in stale_folders(parent, base, "clone"):
        finish_keep_aside(partial, log)
    forget_markers_kept_aside(dest)
    old_lock = _prepare_destination(dest)
    partial = None
    try:
        before = _recovered_tid(dest, log)
        identity, sources = _sources(dest, parent, base)
        partial = os.path.join(parent, ".%s.clone-%d" % (base, os.getpid()))
        os.mkdir(partial, 0o755)
        linker = _Linker(partial, sources[0].format)
        try:
            chosen, trusted = _inventory(sources, linker, log)
            result, drop, received = _delta_rounds(master, partial, identity, sources, chosen, trusted, opts, log,
                                                   progress, linker)
        finally:
            linker.stop()
        result["kept_files"] = len(chosen.keys() - drop - received)
        after = complete_copy(partial)
        set_upstream(partial, master)
        lost = _diverged(sources, partial, drop | received, result.get("anchor_tid"))
        partial, aside = _switch(partial, dest, lost, log)
        remove_stale_partials(parent, base, log)
        result.update(changed=True, path=dest, before_tid=hex_tid(before), after_tid=hex_tid(after),
                      removed_files=len(drop), diverged_transactions=lost, kept_aside=aside)
        return result
    finally:
        release(partial, old_lock)


def _delta_rounds(master, partial, identity, sources, chosen, trusted, opts, log, progress, linker):
    """Ask the master for what differs: with PATH's chain window first (the
    files PATH holds below it go by name and size); again with every digest
    when the master finds no anchor in that window; again without the files
    kept on trust that fail their own check (the linker reads them), so that
    the master sends them.  Returns (counts, names dropped, names received)."""
    if sources[0].trusted:
        window, options = _chain_window(sources[0].home, chosen, trusted)
        entries = _entries(chosen, window, chosen.keys() - trusted)
    else:
        options, entries = None, _entries(chosen, {}, chosen.keys())
    prefixes = _prefixes(sources, chosen)
    entries += [(name, size, digest_) for name, (_path, size, digest_) in prefixes.items()]
    drop, received, result = set(), set(), None
    while True:
        req = delta_request(identity, entries, dict(options or {}, **standby_name_option(opts.standby_name)))
        answer, round_drop, round_received = _receive(master, partial, req, opts, log, progress, linker, prefixes)
        drop |= round_drop
        received |= round_received
        if answer.get("retry"):
            if options is None:  # every digest was sent: a genuine master never asks again
                raise Corrupt("the master answered 'retry' to a request that carried every digest",
                              "check ds-replica on the master; nothing was put in place")
            log("the master found no transaction it holds in the chain window; asking again with every digest")
            options, entries = None, _entries(chosen, {}, chosen.keys(), trusted)
            entries += [(name, size, digest_) for name, (_path, size, digest_) in prefixes.items()]
            continue
        result = _add_counts(result, answer)
        bad = linker.suspect - drop - received
        if not bad:
            return result, drop, received
        log("%d file(s) kept on trust fail their own check: asking for them" % len(bad))
        linker.suspect -= bad
        entries = [e for e in entries if e[0] not in bad]


def _add_counts(total, answer):
    if total is None:
        return answer
    for key in ("files", "bytes", "transactions", "request_bytes", "answer_bytes"):
        total[key] = total.get(key, 0) + answer.get(key, 0)
    return total


def _prepare_destination(dest):
    """Lock PATH when it holds a storage (it must not be in use) and forget
    a keep-aside marker a crash before the swap left in it (or the temporary
    file of one cut short).  Returns the lock, or None."""
    if os.path.exists(dest) and not os.path.exists(os.path.join(dest, "config", "settings")) and os.listdir(dest):
        raise DSError("%s exists and holds no storage: refusing to re-seed it" % dest,
                      "give the path of a storage, or an empty or new folder to resume a clone into")
    lock = claim_destination(dest, True)
    if lock is not None:
        stale = os.path.join(dest, "misc", KEEP_ASIDE)
        if os.path.exists(stale):
            os.unlink(stale)
        remove_atomic_leftovers(stale)
    return lock


def _recovered_tid(dest, log):
    """Finish an interrupted pull or a crashed master's journal in PATH (as
    the storage does when it opens), and an interrupted in-place re-seed, so
    that every committed transaction is in A/; returns its newest
    transaction."""
    if not os.path.exists(os.path.join(dest, "config", "settings")):
        return ZERO_TID
    st = Storage(dest)
    sub = st.sublock()
    if not sub.acquire():
        raise DSError("%s is in use (misc/sublock is held)" % dest, "wait and try again")
    try:
        journal.recover(st)
        finish_pending(st, log)
    finally:
        sub.release()
    return st.last_tid()


def _receive(master, partial, req, opts, log, progress, linker, prefixes):
    """Send the inventory; while the master compares, `linker` links what
    the standby holds into `partial`; then the master's drop list and files
    replace what they name (the rest of a file whose beginning a killed clone
    received joined to that beginning).  Returns (counts, names to drop,
    names received)."""
    chan = open_channel(master, opts, log, prepare=600.0)
    wire = []
    try:
        with Session(chan, req) as session:
            info = session.start()
            linker.wait()
            log("linked %d files (%.1fs from the start of the scan), checked those kept on trust (%.1fs): %d fail"
                % (len(linker.linked), linker.link_seconds, linker.check_seconds, len(linker.suspect)))
            read = Throttle(chan.read, opts.bwlimit).read if opts.bwlimit else chan.read
            members = ustar.iter_members(read, sink=lambda data: wire.append(len(data)))
            first = next(members, None)
            if first is None or first.name != DROP_MEMBER:
                raise Corrupt("the master's delta answer does not start with its drop list")
            if info.get("retry"):
                for _member in members:
                    pass
                session.finish_ok()
                return info, set(), set()
            drop = decode_drop(first.data)
            linker.unlink(drop)
            joined = _joined(members, tails_offered(info, prefixes, linker.fmt))
            checker, counts = write_members(joined, partial, progress, before_write=linker.take_back)
            session.finish_ok()
    except OSError as e:
        raise DSError("the delta transfer broke off (%s)" % (getattr(e, "strerror", None) or e),
                      "run the same 'ds-replica clone --delta' again: it goes on from what was written")
    fmt = Storage(partial).format
    if fmt != linker.fmt:
        raise Corrupt("the master's format is %s, the storage to re-seed is %s" % (fmt, linker.fmt),
                      "re-seed it with a plain 'ds-replica clone --force'")
    received = {logical_name(fmt, m[2:]) for m in checker.seen if m.startswith("A/")}
    log("received %(files)d files, %(bytes)d bytes" % counts)
    counts.update(master_tid=info.get("master_tid"), snapshot_seconds=info.get("snapshot_seconds"),
                  anchor_tid=info.get("anchor"),
                  request_bytes=len(req.body), answer_bytes=sum(wire))
    return counts, drop, received


def tails_offered(info, prefixes, fmt):
    """{member name: (path, size)} of the members the master sent from an
    offset: only files whose beginning this standby offered, from exactly
    where that beginning ends (anything else is refused)."""
    tails = info.get("tails") or {}
    if not isinstance(tails, dict):
        raise Corrupt("the master's delta answer has a malformed tails field")
    found = {}
    for member_name, offset in tails.items():
        name = logical_name(fmt, member_name[2:]) if isinstance(member_name, str) and member_name[:2] == "A/" else None
        if name not in prefixes or offset != prefixes[name][1]:
            raise Corrupt("the master's delta answer sends %r from an offset this standby did not offer"
                          % (member_name,))
        found[member_name] = prefixes[name]
    return found


def _joined(members, tails):
    """Members, those sent from an offset preceded by the beginning this
    standby holds (checked again against the digest it sent: the joined file
    is then checked whole, as every member is)."""
    for member in members:
        if member.name in tails:
            path, size, digest_ = tails[member.name]
            if prefix_digest(path, size) != digest_:
                raise Corrupt("%s changed while the re-seed ran" % path, "run 'ds-replica clone --delta' again")
            with open(path, "rb") as f:
                member.data = f.read(size) + member.data
            member.size = len(member.data)
        yield member


class _Linker(threading.Thread):
    """Hard-links every file the standby holds into the new tree (never a
    copy: the files are write-once), in a thread, from the moment the scan
    of PATH finds it until the master has compared the inventory; the few it
    then sends or drops are unlinked again.  The files kept on trust
    (transaction files below the chain window, o….c files: sent by name and
    size only) are read and checked after the links; those that fail are
    `suspect` (the master is asked for them)."""

    BATCH = 4096

    def __init__(self, partial, fmt):
        super().__init__(name="ds-replica-link", daemon=True)
        self.root = os.path.join(partial, "A")
        self.fmt = fmt
        self.queue = queue.SimpleQueue()
        self.batch = []
        self.chosen = {}
        self.trusted = set()
        self.suspect = set()
        self.linked = set()
        self.closed = self.cancelled = False
        self.checker = None
        self.link_seconds = self.check_seconds = 0.0  # linking (from the first file handed over), checking
        self.error = None
        self.start()

    def add(self, path, rel):
        """Link `path` as A/`rel` of the new tree (soon)."""
        self.batch.append((path, rel))
        if len(self.batch) >= self.BATCH:
            self.queue.put(self.batch)
            self.batch = []

    def done_adding(self, chosen, trusted):
        """Every file is handed over: link the rest, and check those kept on
        trust meanwhile."""
        self.chosen, self.trusted = chosen, trusted
        self.close()
        self.checker = threading.Thread(target=self._check_all, name="ds-replica-check", daemon=True)
        self.checker.start()

    def close(self, cancel=False):
        """No more files; with `cancel`, leave the rest (the re-seed failed)."""
        if cancel:
            self.cancelled = True
        if not self.closed:
            self.closed = True
            self.queue.put(self.batch)
            self.queue.put(None)
            self.batch = []

    def stop(self):
        """However the re-seed ends: no thread left behind."""
        self.close(cancel=True)
        self.join()
        if self.checker is not None:
            self.checker.join()

    def target(self, name):
        return os.path.join(self.root, *logical_path(self.fmt, name).split("/"))

    def run(self):
        try:
            t0 = time.monotonic()
            self._link_all()
            self.linked = set(self.chosen)
            self.link_seconds = time.monotonic() - t0
        except BaseException as e:  # raised again by wait(), in the caller's thread
            self.error = e

    def _check_all(self):
        """In a thread of its own, beside the links (both wait on the disk
        more than on the interpreter)."""
        try:
            t0 = time.monotonic()
            suspect = set()
            for name in self.trusted:
                if self.cancelled:
                    return
                if needs_digest(name) and not self.passes_own_check(name):
                    suspect.add(name)
            self.suspect = suspect
            self.check_seconds = time.monotonic() - t0
        except BaseException as e:  # raised again by wait(), in the caller's thread
            self.error = e

    def _link_all(self):
        made = set()
        link, makedirs, dirname, root = os.link, os.makedirs, os.path.dirname, self.root + "/"
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            if self.cancelled:
                continue
            for path, rel in batch:
                dest = root + rel
                folder = dirname(dest)
                if folder not in made:
                    makedirs(folder, exist_ok=True)
                    made.add(folder)
                link(path, dest)

    def passes_own_check(self, name):
        """Whether a file kept on trust passes its own check: a transaction
        file its length and MD5, an o….c file naming a revision PATH holds."""
        try:
            data = read_file(self.chosen[name][0])
            if name.startswith("t"):
                parse_transaction(data, expect_tid=classify(name)[1])
                return True
            return revision_name(classify(name)[1], parse_current(data)) in self.chosen
        except (OSError, Corrupt):
            return False

    def take_back(self, name):
        """Before the master's file `name` (a checked storage file name) is
        written: unlink the kept file the standby linked under that name (a
        link shares the old tree's inode: never write through it).  Only a
        link this thread placed is ever removed."""
        if name in self.linked:
            os.unlink(self.target(name))
            self.linked.discard(name)

    def unlink(self, names):
        """Take back the links of `names` (the master does not hold them),
        and the folders that leaves empty."""
        for name in names & self.linked:
            target = self.target(name)
            os.unlink(target)
            self.linked.discard(name)
            folder = os.path.dirname(target)
            while folder != self.root and not os.listdir(folder):
                os.rmdir(folder)
                folder = os.path.dirname(folder)

    def wait(self):
        self.join()
        if self.checker is not None:
            self.checker.join()
        if self.error is not None:
            raise self.error


def _diverged(sources, partial, replaced, anchor=None):
    """The transactions PATH holds that the new copy does not (a different
    file under the same name counts, unless only its "previous tid" field
    differs, as after a pack; a missing one counts unless the master packed
    it away: below its pack point and, when the master found an anchor
    (hex), not above it): [{tid, time, user, description, oids}]."""
    trusted = [s for s in sources if s.trusted]
    if not trusted:
        return []
    new = Storage(partial)
    packed = new.packed_tid()
    if anchor and anchor != hex_tid(ZERO_TID):
        packed = min(packed, bytes.fromhex(anchor))
    lost = []
    for name, (path, _size) in sorted(trusted[0].files.items()):
        if not name.startswith("t") or name not in replaced:
            continue
        data = read_file(path)
        try:
            same = transaction_digest(read_file(new.path(name))) == transaction_digest(data)
        except FileNotFoundError:
            same = parse_transaction(data, check_md5=False).tid <= packed  # packed away on the master
        if not same:
            lost.append(transaction_facts(data))
    return lost


def _switch(partial, dest, lost, log):
    """Swap the new copy into place.  With transactions to keep, the old
    tree is marked first, then renamed aside after the swap.  Returns (what
    is left to remove, the aside path or None)."""
    aside = None
    if lost and os.path.exists(dest):
        aside = aside_path(dest)
        mark_tree(dest, aside)
    left = put_in_place(partial, dest)
    if left is not None and aside is not None:
        finish_keep_aside(left, log)
        fsync_path(os.path.dirname(dest), directory=True)
        return None, aside
    return left, aside
