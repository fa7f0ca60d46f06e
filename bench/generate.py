# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write large, format-true Full DirectoryStorage storages fast, for benchmarks.

Files are built with the engine's own builders (``build_transaction``,
``build_revision``, ``logical_path``) and written straight to disk (no fsync).
config/settings is the golden fixture's, byte for byte; only the identity is new.

Layout of one cache entry (``bench/results/cache/<key>/``):

- ``base/``    the storage with N object revision files (what the replica holds)
- ``master/``  ``cp -al base`` plus K new transactions.  The new transactions
  only *add* write-once files and *replace* x.serial, x.oid and o….c through
  rename, exactly as the real storage does, so the hard links never let a write
  to one tree show through in another.
- ``increment.json`` the HOME-relative paths the K transactions wrote (the
  expected increment; used to reset a replica between runs).

    python bench/generate.py --n 30000 --k 100 [--cache DIR] [--format bushy]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "plugins"))

try:
    from dirstorage_replica import storage as ds  # installed editable in .venv
except ImportError:  # pragma: no cover - run without the venv
    from module_utils import storage as ds  # type: ignore

GEN_VERSION = 1
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "bushy.tar.gz")
DEFAULT_CACHE = os.path.join(HERE, "results", "cache")
EPOCH0 = 1577836800.0  # 2020-01-01 UTC: the generated history starts there


def fixture_settings():
    """config/settings of the golden bushy fixture (the real storage wrote it)."""
    with tarfile.open(FIXTURE, "r:gz") as tf:
        for m in tf.getmembers():
            if m.name.endswith("master/config/settings"):
                return tf.extractfile(m).read()
    raise RuntimeError("no config/settings in %s" % FIXTURE)


class Writer(object):
    """Writes storage files under HOME/A, creating folders once."""

    def __init__(self, home, fmt):
        self.home = home
        self.a_dir = os.path.join(home, "A")
        self.fmt = fmt
        self.made = set()
        self.written = []  # HOME-relative paths, when recording
        self.record = False

    def _path(self, name):
        rel = ds.logical_path(self.fmt, name)
        return rel, os.path.join(self.a_dir, rel)

    def write_once(self, name, data):
        rel, path = self._path(name)
        parent = os.path.dirname(path)
        if parent not in self.made:
            os.makedirs(parent, exist_ok=True)
            self.made.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if self.record:
            self.written.append("A/" + rel)

    def replace(self, name, data):
        """Mutable files (x.*, o….c): new file, then rename (breaks hard links)."""
        rel, path = self._path(name)
        parent = os.path.dirname(path)
        if parent not in self.made:
            os.makedirs(parent, exist_ok=True)
            self.made.add(parent)
        tmp = path + ".gen-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self.record:
            self.written.append("A/" + rel)


class Pickles(object):
    """Pickle-sized byte strings: mostly 100 B - 5 KB (log-uniform), a fraction
    `big` of 100 KB - 1 MB; content is a slice of one random buffer."""

    def __init__(self, rng, big=0.001, small=(100, 5000), large=(100_000, 1_000_000)):
        self.rng = rng
        self.big = big
        self.small = small
        self.large = large
        self.buf = rng.randbytes(2 * large[1] + 4096)

    def size(self):
        lo, hi = self.large if self.rng.random() < self.big else self.small
        return int(lo * (hi / lo) ** self.rng.random())

    def make(self):
        n = self.size()
        off = self.rng.randrange(0, len(self.buf) - n)
        return b"\x80\x03" + self.buf[off:off + n]


def write_home_skeleton(home, identity, settings):
    for d in ("A", "B", "journal", "misc", "config"):
        os.makedirs(os.path.join(home, d), exist_ok=True)
    with open(os.path.join(home, "config", "settings"), "wb") as f:
        f.write(settings)
    with open(os.path.join(home, "config", "identity"), "w") as f:
        f.write(identity)
    for name in ("lock", "sublock"):
        with open(os.path.join(home, "misc", name), "wb") as f:
            f.write(b" 0\n")
    fd = os.open(os.path.join(home, "misc", "snapshot"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.write(fd, b"shutdown")
    os.close(fd)


def make_base(home, n_revisions, fmt="bushy", seed=1, txn_size=10, new_fraction=0.35, big=0.001):
    """A Full storage with about `n_revisions` object revision files."""
    rng = random.Random(seed)
    settings = fixture_settings()
    if fmt != "bushy":
        settings = settings.replace(b"format: bushy", b"format: " + fmt.encode())
    write_home_skeleton(home, "%032x" % rng.getrandbits(128), settings)
    w = Writer(home, fmt)
    pk = Pickles(rng, big=big)
    current = [ds.ZERO_TID]  # current[oid int] = tid of its current revision; oid 0 is the root
    last = ds.ZERO_TID
    written = 0
    t = EPOCH0
    user, ext = b"/ bench", b""
    ntx = 0
    while written < n_revisions:
        t += 1.0 + rng.random()
        tid = ds.tid_later_than(ds.tid_from_epoch(t), last)
        count = min(n_revisions - written, max(1, int(rng.triangular(1, 2 * txn_size - 1, txn_size))))
        chosen = set()
        for _unused in range(count):
            if len(current) < 2 or rng.random() < new_fraction:
                chosen.add(len(current))
                current.append(ds.ZERO_TID)
            else:
                chosen.add(rng.randrange(len(current)))
        oids = sorted(chosen)
        for o in oids:
            oid = o.to_bytes(8, "big")
            w.write_once(ds.revision_name(oid, tid), ds.build_revision(oid, tid, current[o], pk.make()))
            current[o] = tid
        w.write_once(ds.transaction_name(tid),
                     ds.build_transaction(tid, last, [o.to_bytes(8, "big") for o in oids], user=user,
                                          description=b"/bench/tx %d" % ntx, extension=ext))
        written += len(oids)
        last = tid
        ntx += 1
    for o, tid in enumerate(current):
        if tid != ds.ZERO_TID:
            w.write_once(ds.current_name(o.to_bytes(8, "big")), tid)
    w.write_once("x.serial", last)
    w.write_once("x.oid", (len(current) - 1).to_bytes(8, "big"))
    w.write_once("x.packed", ds.ZERO_TID)
    return {"revisions": written, "transactions": ntx, "objects": len(current), "last_tid": ds.hex_tid(last)}


def add_transactions(home, k, per_txn=8, seed=2, new_fraction=0.1, big=0.001, small=(100, 5000),
                     large=(100_000, 1_000_000)):
    """Commit `k` new transactions of about `per_txn` objects each on a storage
    (as the real storage leaves A/ after a flush).  Returns HOME-relative paths."""
    st = ds.Storage(home)
    rng = random.Random(seed)
    w = Writer(home, st.format)
    w.record = True
    pk = Pickles(rng, big=big, small=small, large=large)
    last = st.last_tid()
    max_oid = int.from_bytes(st.last_oid(), "big")
    t = max(time.time() - 2.0 * k - 60, ds.tid_to_epoch(last) or EPOCH0)
    changed = {}
    for i in range(k):
        t += 1.0 + rng.random()
        tid = ds.tid_later_than(ds.tid_from_epoch(t), last)
        chosen = set()
        for _unused in range(max(1, int(rng.triangular(1, 2 * per_txn - 1, per_txn)))):
            if rng.random() < new_fraction:
                max_oid += 1
                chosen.add(max_oid)
            else:
                chosen.add(rng.randint(1, max_oid))
        oids = sorted(chosen)
        for o in oids:
            oid = o.to_bytes(8, "big")
            prev = changed.get(o)
            if prev is None:
                try:
                    prev = st.current(oid)
                except FileNotFoundError:
                    prev = ds.ZERO_TID
            w.write_once(ds.revision_name(oid, tid), ds.build_revision(oid, tid, prev, pk.make()))
            changed[o] = tid
        w.write_once(ds.transaction_name(tid),
                     ds.build_transaction(tid, last, [o.to_bytes(8, "big") for o in oids], user=b"/ bench",
                                          description=b"/bench/new %d" % i))
        last = tid
    for o in sorted(changed):
        w.replace(ds.current_name(o.to_bytes(8, "big")), changed[o])
    w.replace("x.oid", max_oid.to_bytes(8, "big"))
    w.replace("x.serial", last)
    return w.written


def real_copy_misc(src, dst):
    """misc/ is rewritten in place by locks: never share it through hard links."""
    shutil.rmtree(os.path.join(dst, "misc"), ignore_errors=True)
    shutil.copytree(os.path.join(src, "misc"), os.path.join(dst, "misc"))


def link_copy(src, dst):
    """cp -al src dst (write-once files shared), then misc/ as real copies."""
    if os.path.exists(dst):
        shutil.rmtree(dst)
    subprocess.run(["cp", "-al", src, dst], check=True)
    real_copy_misc(src, dst)


def reset_replica(base, replica, increment):
    """Undo a pull (or an rsync) of `increment` on a `cp -al base` replica:
    drop what it added, re-link what it replaced, remove folders it made."""
    dirs = set()
    for rel in increment:
        path = os.path.join(replica, rel)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        src = os.path.join(base, rel)
        if os.path.exists(src):
            os.link(src, path)
        else:
            dirs.add(os.path.dirname(path))
    for d in sorted(dirs, key=len, reverse=True):
        while d.startswith(os.path.join(replica, "A") + "/") and not os.path.exists(base + d[len(replica):]):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)
    for name in ("replica.previous",):
        try:
            os.unlink(os.path.join(replica, "misc", name))
        except FileNotFoundError:
            pass
    real_copy_misc(base, replica)


def cache_key(n, fmt, seed, big):
    return "%s-n%d-s%d-b%g-v%d" % (fmt, n, seed, big, GEN_VERSION)


def ensure(n, k, cache=DEFAULT_CACHE, fmt="bushy", seed=1, per_txn=8, big=0.001, inc_profile="small", log=print):
    """Generate (or reuse) base/ and master/ for (n, k).  Returns paths and facts."""
    root = os.path.join(cache, cache_key(n, fmt, seed, big))
    base = os.path.join(root, "base")
    done = os.path.join(root, "base.json")
    if not os.path.exists(done):
        if os.path.exists(root):
            shutil.rmtree(root)
        os.makedirs(root)
        t0 = time.monotonic()
        facts = make_base(base, n, fmt=fmt, seed=seed, big=big)
        facts["seconds"] = round(time.monotonic() - t0, 1)
        with open(done, "w") as f:
            json.dump(facts, f)
        log("generated %s: %s" % (base, facts))
    with open(done) as f:
        facts = json.load(f)
    mkey = "master-k%d-p%d-%s" % (k, per_txn, inc_profile)
    master = os.path.join(root, mkey)
    inc_json = master + ".json"
    if not os.path.exists(inc_json):
        t0 = time.monotonic()
        link_copy(base, master)
        kw = {}
        if inc_profile == "large":  # objects of 200 KB - 1 MB (sent from open files by serve)
            kw = dict(big=1.0, large=(200_000, 1_000_000), new_fraction=0.0)
        elif inc_profile == "medium":  # objects of 16 - 64 KB (held in memory by serve)
            kw = dict(big=1.0, large=(16_000, 64_000), new_fraction=0.0)
        written = add_transactions(master, k, per_txn=per_txn, **kw)
        size = sum(os.path.getsize(os.path.join(master, rel)) for rel in written)
        with open(inc_json, "w") as f:
            json.dump({"files": written, "bytes": size}, f)
        log("generated %s: %d files, %d bytes in %.1fs" % (master, len(written), size, time.monotonic() - t0))
    with open(inc_json) as f:
        inc = json.load(f)
    return {"root": root, "base": base, "master": master, "increment": inc["files"], "increment_bytes": inc["bytes"],
            "base_facts": facts}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30000, help="object revision files in the base storage")
    p.add_argument("--k", type=int, default=100, help="new transactions on the master")
    p.add_argument("--per-txn", type=int, default=8)
    p.add_argument("--format", default="bushy", choices=ds.FORMATS)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", default="small", choices=("small", "medium", "large"))
    p.add_argument("--cache", default=DEFAULT_CACHE)
    p.add_argument("--out", help="also write a stand-alone master/replica pair here (plain copies)")
    a = p.parse_args(argv)
    info = ensure(a.n, a.k, cache=a.cache, fmt=a.format, seed=a.seed, per_txn=a.per_txn, inc_profile=a.profile)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        link_copy(info["master"], os.path.join(a.out, "master"))
        link_copy(info["base"], os.path.join(a.out, "replica"))
    print(json.dumps({k: v for k, v in info.items() if k != "increment"}, indent=1))
    return 0


if __name__ == "__main__":
    tempfile.tempdir = None
    sys.exit(main())
