# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make bench`: a pull costs what changed, not what exists.

Everything runs in one go against one private OpenSSH sshd on 127.0.0.1
(tests/support/sshd.py), with generated storages cached under
bench/results/cache/.  Each timing is the median of BENCH_RUNS runs.

  a. increment vs rsync: pull K new transactions from an N-file storage,
     against `rsync -a -e ssh master/ replica/` and against the limit (issue
     25): tar of exactly the increment's files over the same ssh, one syncfs;
     each with a new ssh
     connection per run (the headline), then both again through one
     persistent OpenSSH control master (ControlMaster/ControlPersist), which
     takes the per-run handshake out; and one `ds-replica -v` pull broken
     down into local start, ssh setup, serve, transfer and apply
  b. scaling: the same increment from every N in BENCH_N
  c. first copy: `ds-replica clone` against `tar | ssh | tar`
  d. snapshot time: snapshot_seconds / pull wall time for K=1000, also throttled
  e. memory: peak RSS of serve and of the pull for a ~1 GB increment
  f. durable apply: journal.apply_archive (a syncfs every 1,000 files or
     64 MiB, then a final one) against fsync per file and per folder, and
     against a single final syncfs (the engine before bb5a421)
  g. compression (see compression())
  follow: a live master writing BENCH_FOLLOW_RATE tx/s for BENCH_FOLLOW_SECONDS,
     followed by `ds-replica follow` (bench/follow.py): lag of each
     transaction, the master's share of time in snapshot mode, CPU
  h. hot standby: a read-only process serves the replica; the pull stops it
     only for the apply: downtime against the pull's wall time, K=100 and 1000
     (BENCH_ONLY=h; not in the default set)
  r. re-seed (issue 11): the old master of the BENCH_CLONE_N storage with 100
     transactions of its own, re-seeded from the master with `clone --delta`,
     against a full `clone`: time and bytes on the wire (both directions)

Settings (environment or flags): BENCH_N (default 30000,300000), BENCH_K (100),
BENCH_RUNS (3), BENCH_CM_RUNS (persistent-connection runs, default BENCH_RUNS; 0 skips them),
BENCH_K_SNAPSHOT (1000), BENCH_CLONE_N (largest N),
BENCH_CLONE_RUNS (1), BENCH_MEM_MB (1024), BENCH_ONLY (e.g. "a,b,d"), BENCH_CACHE, BENCH_BWLIMIT (KiB/s),
BENCH_FOLLOW_SECONDS (600), BENCH_FOLLOW_RATE (50), BENCH_FOLLOW_INTERVAL (0.5),
BENCH_FOLLOW_DIR (default /dev/shm when writable: the test master's fsyncs then keep its rate on a busy disk),
BENCH_BASELINE_DS (another engine's ds-replica: scenario a times it too, run for run, so that a refactoring
is compared before/after in one run on one machine state).
Results: bench/results/results.json; plot: docs/benchmark-pull-vs-n.png.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import follow as follow_bench  # noqa: E402
import generate  # noqa: E402

from dirstorage_replica import journal, storage, ustar  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
DS = os.path.join(VENV_BIN, "ds-replica")
RESULTS = os.path.join(HERE, "results")
WORK = os.path.join(RESULTS, "work")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def sh(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def timed(argv, **kw):
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, **kw, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv[:3]), proc.returncode, proc.stderr.strip()[-2000:]))
    return wall, proc.stdout


def median(xs):
    return statistics.median(xs) if xs else None


def secs(x, digits=3):
    """A duration for the log, or "n/a" when nothing was measured."""
    return "n/a" if x is None else "%.*fs" % (digits, x)


def drop_dirty():
    """Flush dirty pages from setup (cp -al, resets) so runs do not pay for them."""
    os.sync()


class Bench(object):
    def __init__(self, args):
        self.a = args
        self.sshd = None
        self.ssh = None
        self.ssh_cm = None
        self.cm_dir = None
        self.results = {"settings": vars(args).copy(), "machine": machine(), "scenarios": {}}
        path = os.path.join(RESULTS, "results.json")
        if args.merge and os.path.exists(path):  # keep scenarios this run does not redo
            with open(path) as f:
                self.results["scenarios"] = json.load(f).get("scenarios", {})

    # -- plumbing -------------------------------------------------------
    def start(self):
        self.sshd = start_sshd(listen=["127.0.0.1"])
        self.ssh = self.sshd.ssh_command_string()
        self.user_host = "%s@127.0.0.1" % self.sshd.user
        os.makedirs(WORK, exist_ok=True)
        log("sshd on 127.0.0.1:%d" % self.sshd.port)

    def stop(self):
        self.close_cm()
        if self.sshd is not None:
            self.sshd.stop()

    # -- a persistent ssh connection (OpenSSH control master) --------------
    def open_cm(self):
        """Open (or check) one control master; self.ssh_cm is the ssh command
        line that goes through it, for ds-replica -e and rsync -e alike."""
        if self.cm_dir is None:
            self.cm_dir = tempfile.mkdtemp(prefix="bench-cm-")  # short: a socket path has ~100 bytes
            self.ssh_cm = "%s -o ControlMaster=auto -o ControlPath=%s/cm-%%r@%%h:%%p -o ControlPersist=120" % (
                self.ssh, self.cm_dir)
        argv = shlex.split(self.ssh_cm)
        if subprocess.run(argv + ["-O", "check", self.user_host], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0:
            return
        # -M -N -f: the master goes to the background once authenticated; its
        # stdio is /dev/null so that no pipe of ours stays open behind it
        subprocess.run(argv + ["-M", "-N", "-f", self.user_host], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)

    def close_cm(self):
        if self.cm_dir is None:
            return
        subprocess.run(shlex.split(self.ssh_cm) + ["-O", "exit", self.user_host], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.cm_dir, ignore_errors=True)
        self.cm_dir = self.ssh_cm = None

    def handshake(self, ssh, runs=5):
        """Median wall time of `ssh host true`: what every run pays before any tool starts."""
        argv = shlex.split(ssh) + [self.user_host, "true"]
        return median([timed(argv)[0] for _unused in range(runs)])

    def pull_argv(self, master, replica, extra=(), remote=DS, wrap=(), ssh=None, ds=DS):
        return list(wrap) + [ds, "--json", "-q", "-e", ssh or self.ssh, "--remote-command", remote] + \
            list(extra) + ["%s:%s" % (self.user_host, master), replica]

    def pull(self, master, replica, extra=(), remote=DS, wrap=(), ssh=None, ds=DS):
        """Time one pull; `ds` (with `remote` the same program) may be another engine's ds-replica."""
        wall, out = timed(self.pull_argv(master, replica, extra, remote, wrap, ssh, ds))
        res = json.loads(out)
        if not res.get("changed"):
            raise RuntimeError("the pull changed nothing: %s" % res)
        return wall, res

    def rsync(self, master, replica, ssh=None):
        return timed(["rsync", "-a", "-e", ssh or self.ssh, "%s:%s/" % (self.user_host, master), replica + "/"])[0]

    def limit(self, master, replica, increment, ssh=None):
        """The copy-exactly-the-increment limit (issue 25): tar of exactly the
        increment's files on the master, over the same ssh, untarred into the
        replica, then one syncfs (`sync -f`).  No checks, no locks, no journal:
        what moving those bytes durably costs, which a pull can only approach."""
        listing = os.path.join(WORK, "increment-list.txt")
        with open(listing, "w") as f:
            f.write("".join(rel + "\n" for rel in increment))
        remote = "tar -cf - -C %s -T %s" % (shlex.quote(master), shlex.quote(listing))
        pipe = "%s %s %s | tar -xf - -C %s && sync -f %s" % (ssh or self.ssh, self.user_host, shlex.quote(remote),
                                                             shlex.quote(replica), shlex.quote(replica))
        return timed(["bash", "-o", "pipefail", "-c", pipe])[0]

    def breakdown(self, master, replica, ssh):
        """One `ds-replica -v` pull, its stderr lines stamped as they arrive,
        and the master's `serve` wrapped to stamp its own start and end (same
        host, same clock).  Cheap: one extra pull."""
        stamps = os.path.join(WORK, "serve-stamps.txt")
        wrapper = os.path.join(WORK, "serve-stamped.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\ndate +'start %%s.%%N' >> %s\n%s \"$@\"\nrc=$?\n"
                    "date +'end %%s.%%N' >> %s\nexit $rc\n" % (stamps, DS, stamps))
        os.chmod(wrapper, 0o755)
        if os.path.exists(stamps):
            os.unlink(stamps)
        argv = [DS, "-v", "-q", "--json", "-e", ssh, "--remote-command", wrapper,
                "%s:%s" % (self.user_host, master), replica]
        t0 = time.time()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [(time.time(), line.rstrip("\n")) for line in proc.stderr]
        out = proc.stdout.read()
        proc.wait()
        t_end = time.time()
        if proc.returncode != 0:
            raise RuntimeError("breakdown pull failed: %s" % lines[-3:])
        res = json.loads(out)

        def at(prefix):
            return next(t for t, line in lines if line.startswith(prefix))

        with open(stamps) as f:
            st = dict((w, float(v)) for w, v in (ln.split() for ln in f if ln.strip()))
        t_ask, t_recv, t_apply = at("replica "), at("received "), at("commit point passed")
        return {"wall_s": t_end - t0, "elapsed_seconds": res["elapsed_seconds"],
                "snapshot_seconds": res["snapshot_seconds"],
                "local_start_s": t_ask - t0,             # python + imports + lock + journal check
                "ssh_setup_s": st["start"] - t_ask,      # connect, authenticate, start the remote shell
                "serve_s": st["end"] - st["start"],      # python start + chain walk + snapshot + sending
                "transfer_tail_s": t_recv - st["end"],   # last bytes, ssh close, validate_increment
                "commit_s": t_apply - t_recv,            # journal commit point (the spool made durable)
                "apply_exit_s": t_end - t_apply}         # apply_archive + exit

    def storage(self, n, k, **kw):
        t0 = time.monotonic()
        info = generate.ensure(n, k, cache=self.a.cache, log=log, **kw)
        spent = time.monotonic() - t0
        if spent > 1:
            log("storages for N=%d K=%d ready in %.0fs" % (n, k, spent))
        return info

    def replica_for(self, info, tag):
        path = os.path.join(WORK, "replica-%s" % tag)
        generate.link_copy(info["base"], path)
        return path

    def save(self):
        with open(os.path.join(RESULTS, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=True)

    # -- a + b: increment vs rsync, scaling ------------------------------
    def increment(self):
        out = {}
        for n in self.a.n:
            info = self.storage(n, self.a.k)
            replica = self.replica_for(info, "n%d" % n)
            ds_t, rs_t, lim_t, base_t, res = [], [], [], [], None
            for _unused in range(self.a.runs):
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                wall, res = self.pull(info["master"], replica)
                ds_t.append(wall)
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                lim_t.append(self.limit(info["master"], replica, info["increment"]))
                if self.a.baseline_ds:  # the same pull by another engine, interleaved: before/after in one run
                    generate.reset_replica(info["base"], replica, info["increment"])
                    drop_dirty()
                    base = self.a.baseline_ds
                    base_t.append(self.pull(info["master"], replica, remote=base, ds=base)[0])
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                rs_t.append(self.rsync(info["master"], replica))
            extra = {"ssh_true_s": self.handshake(self.ssh)}
            if base_t:
                extra.update(baseline_ds=self.a.baseline_ds, baseline_s=base_t, baseline_median_s=median(base_t))
            generate.reset_replica(info["base"], replica, info["increment"])
            drop_dirty()
            extra["breakdown"] = self.breakdown(info["master"], replica, self.ssh)
            if self.a.cm_runs:
                # the same runs through one persistent connection, opened before they start
                self.open_cm()
                extra["ssh_true_cm_s"] = self.handshake(self.ssh_cm)
                ds_c, rs_c = [], []
                for _unused in range(self.a.cm_runs):
                    generate.reset_replica(info["base"], replica, info["increment"])
                    drop_dirty()
                    self.open_cm()
                    ds_c.append(self.pull(info["master"], replica, ssh=self.ssh_cm)[0])
                    generate.reset_replica(info["base"], replica, info["increment"])
                    drop_dirty()
                    self.open_cm()
                    rs_c.append(self.rsync(info["master"], replica, ssh=self.ssh_cm))
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                self.open_cm()
                extra["breakdown_cm"] = self.breakdown(info["master"], replica, self.ssh_cm)
                extra.update(ds_replica_cm_s=ds_c, rsync_cm_s=rs_c, ds_replica_cm_median_s=median(ds_c),
                             rsync_cm_median_s=median(rs_c))
                log("N=%d persistent ssh: ds-replica %s, rsync %s (medians); ssh true %s, via the master %s"
                    % (n, secs(median(ds_c)), secs(median(rs_c)), secs(extra["ssh_true_s"]),
                       secs(extra["ssh_true_cm_s"])))
            files_total = info["base_facts"]["revisions"] + info["base_facts"]["transactions"] + \
                info["base_facts"]["objects"]
            out[str(n)] = {"n_revisions": n, "files_in_storage": files_total, "k": self.a.k,
                           "increment_files": res["files"], "increment_bytes": res["bytes"],
                           "ds_replica_s": ds_t, "rsync_s": rs_t, "limit_s": lim_t,
                           "ds_replica_median_s": median(ds_t), "rsync_median_s": median(rs_t),
                           "limit_median_s": median(lim_t),
                           "snapshot_s": res["snapshot_seconds"], **extra}
            log("N=%d: ds-replica %s, rsync %s, the limit (tar of the increment, one syncfs) %s (medians; %d files "
                "in the increment)" % (n, secs(median(ds_t)), secs(median(rs_t)), secs(median(lim_t)), res["files"]))
            shutil.rmtree(replica)
            self.results["scenarios"]["increment"] = out
            self.save()

    # -- follow: continuous replication ------------------------------------
    def follow(self):
        where = self.a.follow_dir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else WORK)
        out = follow_bench.run(os.path.join(where, "ds-bench-follow"), self.ssh, self.user_host,
                               seconds=self.a.follow_seconds, rate=self.a.follow_rate,
                               interval=self.a.follow_interval, log=log)
        out["where"] = where
        self.results["scenarios"]["follow"] = out
        self.save()

    # -- c: first copy ----------------------------------------------------
    def first_copy(self):
        n = self.a.clone_n
        info = self.storage(n, self.a.k)
        base = info["base"]
        dest = os.path.join(WORK, "clone-dest")
        cl, tr, snaps, res = [], [], [], None
        for _unused in range(self.a.clone_runs):
            shutil.rmtree(dest, ignore_errors=True)
            drop_dirty()
            wall, text = timed([DS, "clone", "--json", "-q", "-e", self.ssh, "--remote-command", DS,
                                "%s:%s" % (self.user_host, base), dest])
            res = json.loads(text)
            cl.append(wall)
            snaps.append(res["snapshot_seconds"])
            shutil.rmtree(dest)
            os.makedirs(dest)
            drop_dirty()
            remote = "tar -cf - -C %s A" % shlex.quote(base)
            pipe = "%s %s %s | tar -xf - -C %s" % (self.ssh, self.user_host, shlex.quote(remote), shlex.quote(dest))
            tr.append(timed(["bash", "-o", "pipefail", "-c", pipe])[0])
        shutil.rmtree(dest, ignore_errors=True)
        self.results["scenarios"]["first_copy"] = {
            "n_revisions": n, "runs": len(cl), "files": res["files"], "bytes": res["bytes"],
            "clone_s": cl, "tar_ssh_s": tr,
            "clone_median_s": median(cl), "tar_ssh_median_s": median(tr),
            "clone_snapshot_s": snaps, "clone_snapshot_median_s": median(snaps),
            "ratio": median(cl) / median(tr)}
        log("clone N=%d: ds-replica clone %s (master in snapshot mode %s), tar|ssh|tar %s"
            % (n, secs(median(cl), 1), secs(median(snaps), 1), secs(median(tr), 1)))
        self.save()

    # -- h: re-seeding an old master (clone --delta, issues 11 and 19) ---------
    def reseed(self):
        """The N storage's old master, 100 transactions of its own past the
        base (which the master never saw), re-seeded from the master (base +
        K) with clone --delta, against a full clone of the master; one run
        each, bytes on the wire in both directions."""
        n = self.a.clone_n
        info = self.storage(n, self.a.k)
        master = info["master"]
        old = os.path.join(WORK, "reseed-old")
        full = os.path.join(WORK, "reseed-full")
        for path in [old, full] + glob.glob(old + ".before-reseed-*"):
            shutil.rmtree(path, ignore_errors=True)
        generate.link_copy(info["base"], old)
        generate.add_transactions(old, 100, seed=11)  # the old master's own, unseen history
        drop_dirty()
        target = "%s:%s" % (self.user_host, master)
        d_wall, text = timed([DS, "clone", "--delta", "--json", "-q", "-e", self.ssh, "--remote-command", DS,
                              target, old])
        delta = json.loads(text)
        drop_dirty()
        f_wall, text = timed([DS, "clone", "--json", "-q", "-e", self.ssh, "--remote-command", DS, target, full])
        whole = json.loads(text)
        full_wire = ustar_bytes(master)
        delta_wire = delta["request_bytes"] + delta["answer_bytes"]
        self.results["scenarios"]["reseed"] = {
            "n_revisions": n, "method": delta["method"], "diverged_transactions": len(delta["diverged_transactions"]),
            "delta_s": d_wall, "clone_s": f_wall, "time_ratio": d_wall / f_wall,
            "delta_files": delta["files"], "delta_kept_files": delta["kept_files"],
            "delta_removed_files": delta["removed_files"], "delta_request_bytes": delta["request_bytes"],
            "delta_answer_bytes": delta["answer_bytes"], "delta_wire_bytes": delta_wire,
            "clone_files": whole["files"], "clone_wire_bytes": full_wire, "wire_ratio": delta_wire / full_wire,
            "delta_snapshot_s": delta["snapshot_seconds"], "clone_snapshot_s": whole["snapshot_seconds"]}
        log("re-seed N=%d after %d diverged transactions: clone --delta (%s) %s (%d files in, %.1f MB on the wire), "
            "full clone %s (%.1f MB): %.1f%% of the time, %.2f%% of the bytes"
            % (n, len(delta["diverged_transactions"]), delta["method"], secs(d_wall, 1), delta["files"],
               delta_wire / 1e6,
               secs(f_wall, 1), full_wire / 1e6, 100 * d_wall / f_wall, 100 * delta_wire / full_wire))
        for path in [old, full] + glob.glob(old + ".before-reseed-*"):
            shutil.rmtree(path, ignore_errors=True)
        self.save()

    # -- g: compression -----------------------------------------------------
    def compression(self):
        """A text-rich increment (pickles of CMS-like objects: real ZODB pickles
        compress, the random bytes of the other scenarios do not) pulled with
        and without --compress, on the free loopback and through a 1 MiB/s cap
        (a slow link): bytes on the wire and wall time."""
        import pickle
        import random

        from dirstorage_replica.clone import clone
        from tests.support.simulated_storage import SimulatedStorage, create_storage
        base = os.path.join(WORK, "compress")
        shutil.rmtree(base, ignore_errors=True)
        master, replica0 = os.path.join(base, "master"), os.path.join(base, "replica0")
        create_storage(master, "bushy")
        rng = random.Random(7)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _unused in range(rng.randint(2, 10)))
                 for _unused in range(2000)]

        def commit_some(tm, count):
            for i in range(count):
                objects = {}
                for _unused in range(5):
                    text = " ".join(rng.choice(words) for _unused in range(rng.randint(100, 1500)))
                    state = {"title": text[:60], "text": text, "modified": time.time(), "owner": "editor%d" % i}
                    objects[rng.randint(1, 3000) if tm.last_oid > 3000 else tm.new_oid()] = pickle.dumps(state, 3)
                tm.commit(objects)

        with SimulatedStorage(master) as tm:
            commit_some(tm, 50)
        clone(master, replica0)
        with SimulatedStorage(master) as tm:
            commit_some(tm, 200)
        out = {}
        for link, extra in (("loopback", []), ("1 MiB/s", ["--bwlimit", "1024"])):
            out[link] = {}
            for comp in (False, True):
                walls, wires, res = [], [], None
                for _unused in range(self.a.runs):
                    replica = os.path.join(base, "replica")
                    shutil.rmtree(replica, ignore_errors=True)
                    sh(["cp", "-a", replica0, replica])
                    drop_dirty()
                    wall, res = self.pull(master, replica, extra + (["--compress"] if comp else []))
                    walls.append(wall)
                    wires.append(res["wire_bytes"])
                out[link]["gzip" if comp else "plain"] = {
                    "wall_s": walls, "wall_median_s": median(walls), "wire_bytes": median(wires),
                    "bytes": res["bytes"], "transactions": res["transactions"]}
            log("compression %s: plain %.2fs %.1f MB on the wire, gzip %.2fs %.1f MB" % (
                link, out[link]["plain"]["wall_median_s"], out[link]["plain"]["wire_bytes"] / 1e6,
                out[link]["gzip"]["wall_median_s"], out[link]["gzip"]["wire_bytes"] / 1e6))
        shutil.rmtree(base, ignore_errors=True)
        self.results["scenarios"]["compression"] = out
        self.save()

    # -- d: snapshot time -------------------------------------------------
    def snapshot(self):
        n = min(self.a.n)
        info = self.storage(n, self.a.k_snapshot)
        replica = self.replica_for(info, "snap")
        out = {"n_revisions": n, "k": self.a.k_snapshot, "increment_bytes": info["increment_bytes"],
               "increment_files": len(info["increment"])}
        bw = self.a.bwlimit or max(256, int(info["increment_bytes"] / 1024 / 8))  # ~8 s of transfer
        for label, extra in (("free", []), ("bwlimit", ["--bwlimit", str(bw)])):
            walls, snaps = [], []
            for _unused in range(self.a.runs):
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                wall, res = self.pull(info["master"], replica, extra)
                walls.append(wall)
                snaps.append(res["snapshot_seconds"])
            out[label] = {"wall_s": walls, "snapshot_s": snaps, "wall_median_s": median(walls),
                          "snapshot_median_s": median(snaps), "share": median(snaps) / median(walls)}
            log("snapshot K=%d %s: %s of %s (%.0f%%)" % (self.a.k_snapshot, label, secs(median(snaps)),
                                                         secs(median(walls)), 100 * out[label]["share"]))
        out["bwlimit_kib_s"] = bw
        # keep the archive of the last pull for the durable-apply scenario
        self.archive = os.path.join(WORK, "increment-k%d.tar" % self.a.k_snapshot)
        shutil.copyfile(os.path.join(replica, "misc", "replica.previous"), self.archive)
        shutil.rmtree(replica)
        self.results["scenarios"]["snapshot"] = out
        self.save()

    # -- h: hot standby downtime --------------------------------------------
    def hot(self):
        """A hot standby: a read-only process (tests/support/hot_replica.py) serves the replica; the
        pull stops it only for the apply.  Wall time of the pull, its downtime_seconds (stop command
        to the end of the start command) and the longest silence in the process's answers."""
        from tests.support import hot_replica

        n = min(self.a.n)
        out = {"n_revisions": n}
        log_path, pidfile = os.path.join(WORK, "hot-answers.log"), os.path.join(WORK, "hot.pid")
        for k in (100, 1000):
            info = self.storage(n, k)
            replica = self.replica_for(info, "hot")
            start = "cd %s && %s -m tests.support.hot_replica start %s %s %s" % tuple(
                shlex.quote(x) for x in (ROOT, sys.executable, replica, log_path, pidfile))
            hot = ["--stop-command", "kill $(cat %s)" % shlex.quote(pidfile), "--start-command", start]
            walls, downs, silences = [], [], []
            for _unused in range(self.a.runs):
                generate.reset_replica(info["base"], replica, info["increment"])
                drop_dirty()
                if os.path.exists(log_path):
                    os.unlink(log_path)
                sh(["/bin/sh", "-c", start])
                try:
                    wall, res = self.pull(info["master"], replica, hot)
                finally:
                    sh(["/bin/sh", "-c", "kill $(cat %s); while [ -e %s ]; do sleep 0.01; done"
                        % (shlex.quote(pidfile), shlex.quote(pidfile))])
                walls.append(wall)
                downs.append(res["downtime_seconds"])
                silences.append(hot_replica.longest_silence(log_path)[0])
            out[str(k)] = {"files": len(info["increment"]), "bytes": info["increment_bytes"], "wall_s": walls,
                           "downtime_s": downs, "silence_s": silences, "wall_median_s": median(walls),
                           "downtime_median_s": median(downs), "silence_median_s": median(silences)}
            log("hot standby K=%d: down %s of a %s pull (longest silence %s)" % (
                k, secs(median(downs)), secs(median(walls)), secs(median(silences))))
            shutil.rmtree(replica)
        self.results["scenarios"]["hot"] = out
        self.save()

    # -- e: memory ----------------------------------------------------------
    def memory(self):
        n = min(self.a.n)
        out = {}
        for profile, avg in (("large", 560_000), ("medium", 36_000)):
            k = max(1, int(self.a.mem_mb * 1e6 / avg / 8))
            info = self.storage(n, k, inc_profile=profile)
            replica = self.replica_for(info, "mem")
            serve_rss = os.path.join(WORK, "serve-rss.txt")
            wrapper = os.path.join(WORK, "serve-with-time.sh")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec /usr/bin/time -f %%M -o %s %s \"$@\"\n" % (serve_rss, DS))
            os.chmod(wrapper, 0o755)
            pull_rss = os.path.join(WORK, "pull-rss.txt")
            drop_dirty()
            wall, res = self.pull(info["master"], replica, remote=wrapper,
                                  wrap=["/usr/bin/time", "-f", "%M", "-o", pull_rss])
            out[profile] = {"k": k, "files": res["files"], "bytes": res["bytes"], "wall_s": wall,
                            "serve_peak_rss_mb": int(open(serve_rss).read().split()[-1]) / 1024,
                            "pull_peak_rss_mb": int(open(pull_rss).read().split()[-1]) / 1024}
            log("memory (%s objects, %.0f MB in %d files): serve %.0f MB, pull %.0f MB"
                % (profile, res["bytes"] / 1e6, res["files"], out[profile]["serve_peak_rss_mb"],
                   out[profile]["pull_peak_rss_mb"]))
            shutil.rmtree(replica)
            self.results["scenarios"]["memory"] = out
            self.save()

    # -- f: durable apply ---------------------------------------------------
    def durable(self):
        info = self.storage(min(self.a.n), self.a.k_snapshot)
        if not getattr(self, "archive", None):  # scenario d did not run: one pull makes the archive
            replica = self.replica_for(info, "apply")
            self.archive = os.path.join(WORK, "increment-k%d.tar" % self.a.k_snapshot)
            self.pull(info["master"], replica)
            shutil.copyfile(os.path.join(replica, "misc", "replica.previous"), self.archive)
            shutil.rmtree(replica)
        new, old, batched, count = [], [], [], 0  # batched: here, the old single-syncfs apply
        runs = max(self.a.runs, 5)  # cheap, and noisy on a shared disk
        modes = ("engine", "fsync-each", "one-syncfs")
        for i in range(runs):
            for mode in modes[i % 3:] + modes[:i % 3]:
                # a fresh home per run: no unlink/relink churn from a reset in the timed window
                home = os.path.join(WORK, "apply-%s-%d" % (mode, i))
                shutil.rmtree(home, ignore_errors=True)
                for d in ("A", "B", "journal", "misc"):
                    os.makedirs(os.path.join(home, d))
                shutil.copytree(os.path.join(info["base"], "config"), os.path.join(home, "config"))
                shutil.copyfile(self.archive, os.path.join(home, "journal", journal.REPLICA_TAR))
                st = storage.Storage(home)
                drop_dirty()
                t0 = time.monotonic()
                if mode == "engine":
                    count = journal.apply_archive(st)
                    new.append(time.monotonic() - t0)
                elif mode == "one-syncfs":
                    count = apply_one_syncfs(st)
                    batched.append(time.monotonic() - t0)
                else:
                    count = old_style_apply(st, os.path.join(home, "journal", journal.REPLICA_TAR))
                    old.append(time.monotonic() - t0)
                shutil.rmtree(home)
        self.results["scenarios"]["durable_apply"] = {
            "files": count, "runs": runs, "flush_files": journal.Durability.FLUSH_FILES,
            "flush_bytes": journal.Durability.FLUSH_BYTES,
            "engine_s": new, "fsync_each_s": old, "one_syncfs_s": batched,
            "engine_files_per_s": count / median(new), "fsync_each_files_per_s": count / median(old),
            "one_syncfs_files_per_s": count / median(batched),
            "ratio": median(old) / median(new), "ratio_one_syncfs": median(old) / median(batched)}
        log("durable apply of %d files: engine (syncfs every %d files) %.0f files/s, fsync each %.0f files/s, "
            "one final syncfs %.0f files/s" % (count, journal.Durability.FLUSH_FILES, count / median(new),
                                               count / median(old), count / median(batched)))
        self.save()


def apply_one_syncfs(st):
    """journal.apply_archive as it was before bb5a421: no flush until one
    syncfs at the end (the engine's batch thresholds raised out of reach)."""
    saved = journal.Durability.FLUSH_FILES, journal.Durability.FLUSH_BYTES
    journal.Durability.FLUSH_FILES = journal.Durability.FLUSH_BYTES = 1 << 62
    try:
        return journal.apply_archive(st)
    finally:
        journal.Durability.FLUSH_FILES, journal.Durability.FLUSH_BYTES = saved


def old_style_apply(st, tar_path):
    """What the original tool does (spec section 6, step 7): extract every
    member into HOME and fsync each file and its folder (and every folder it
    created).  Files are written exactly as journal.apply_archive writes them
    (write-once files in place, x.* and o….c through a temporary name and a
    rename), so the only difference measured is how durability is reached."""
    count = 0
    with open(tar_path, "rb") as f:
        for member in ustar.iter_members(f.read):
            parts = member.name.split("/")
            dst = os.path.join(st.home, *parts)
            parent = os.path.dirname(dst)
            if not os.path.isdir(parent):
                missing = []
                d = parent
                while not os.path.isdir(d):
                    missing.append(d)
                    d = os.path.dirname(d)
                os.makedirs(parent)
                for d in reversed(missing):
                    storage.fsync_path(os.path.dirname(d), directory=True)
            mutable = journal.is_mutable(storage.logical_name(st.format, "/".join(parts[1:])))
            target = dst + ".tmp" if mutable else dst
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.write(fd, member.data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if mutable:
                os.replace(target, dst)
            storage.fsync_path(parent, directory=True)
            count += 1
    os.replace(tar_path, st.sub("misc", "replica.previous"))
    storage.fsync_path(st.journal_dir, directory=True)
    storage.fsync_path(st.sub("misc"), directory=True)
    return count


def ustar_bytes(home):
    """The size of the archive a full clone of `home` sends: config/settings,
    config/identity and every storage file of A/, each a 512-byte header and
    its data padded to 512 bytes, then the two zero blocks."""
    def member(size):
        return 512 + -(-size // 512) * 512
    total = sum(member(os.path.getsize(os.path.join(home, "config", n))) for n in ("settings", "identity"))
    st = storage.Storage(home)
    for rel, name in st.iter_files("A"):
        if name is not None:
            total += member(os.path.getsize(os.path.join(st.a_dir, *rel.split("/"))))
    return total + 1024


def machine():
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_mb"] = int(f.readline().split()[1]) // 1024
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        info["disk"] = sh(["df", "-hT", RESULTS]).stdout.strip().splitlines()[-1]
        info["mount"] = [ln for ln in open("/proc/mounts").read().splitlines() if " / " in ln][:1]
        info["rsync"] = sh(["rsync", "--version"]).stdout.splitlines()[0]
        info["ssh"] = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
        info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def report(results):
    sc = results["scenarios"]
    lines = []
    for link, r in sc.get("compression", {}).items():
        lines.append("g. compression, %d text-rich transactions (%.1f MB), %s: plain %.2fs with %.1f MB on the wire, "
                     "--compress %.2fs with %.1f MB (x%.1f fewer bytes)" % (
                         r["plain"]["transactions"], r["plain"]["bytes"] / 1e6, link, r["plain"]["wall_median_s"],
                         r["plain"]["wire_bytes"] / 1e6, r["gzip"]["wall_median_s"], r["gzip"]["wire_bytes"] / 1e6,
                         r["plain"]["wire_bytes"] / max(1, r["gzip"]["wire_bytes"])))
    inc = sc.get("increment", {})
    ns = sorted(inc, key=int)
    for n in ns:
        r = inc[n]
        lines.append("a. N=%-7s increment %5d files: ds-replica %7.3fs  rsync %7.3fs  -> ds-replica %.1fx faster "
                     "(target >= 20x)" % (n, r["increment_files"], r["ds_replica_median_s"], r["rsync_median_s"],
                                          r["rsync_median_s"] / r["ds_replica_median_s"]))
        if r.get("limit_median_s"):
            lines.append("   the limit (tar of exactly the increment over the same ssh, one syncfs) %7.3fs -> pull is "
                         "x%.2f of it (target <= 1.3x)" % (r["limit_median_s"],
                                                           r["ds_replica_median_s"] / r["limit_median_s"]))
        if "baseline_median_s" in r:
            ratio = r["ds_replica_median_s"] / r["baseline_median_s"]
            lines.append("   baseline engine %s: %7.3fs -> this engine takes x%.2f of its time"
                         % (r["baseline_ds"], r["baseline_median_s"], ratio))
        if "ds_replica_cm_median_s" in r:
            lines.append("   persistent ssh connection: ds-replica %7.3fs  rsync %7.3fs  -> %.1fx "
                         "(ssh true: %.3fs new, %.3fs through the master)"
                         % (r["ds_replica_cm_median_s"], r["rsync_cm_median_s"],
                            r["rsync_cm_median_s"] / r["ds_replica_cm_median_s"], r["ssh_true_s"],
                            r["ssh_true_cm_s"]))
        for key in ("breakdown", "breakdown_cm"):
            bd = r.get(key)
            if bd:
                lines.append("   one -v pull%s: local start %.2f, ssh setup %.2f, serve %.2f (snapshot %.3f), "
                             "transfer tail %.2f, commit %.2f, apply+exit %.2f = %.2fs"
                             % (" (persistent)" if key == "breakdown_cm" else "", bd["local_start_s"],
                                bd["ssh_setup_s"], bd["serve_s"], bd["snapshot_seconds"], bd["transfer_tail_s"],
                                bd["commit_s"], bd["apply_exit_s"], bd["wall_s"]))
    if len(ns) >= 2:
        lo, hi = inc[ns[0]], inc[ns[-1]]
        lines.append("b. N %s -> %s: ds-replica x%.2f (target <= 1.2x), rsync x%.2f"
                     % (ns[0], ns[-1], hi["ds_replica_median_s"] / lo["ds_replica_median_s"],
                        hi["rsync_median_s"] / lo["rsync_median_s"]))
        if "ds_replica_cm_median_s" in lo and "ds_replica_cm_median_s" in hi:
            lines.append("   persistent ssh: ds-replica x%.2f, rsync x%.2f"
                         % (hi["ds_replica_cm_median_s"] / lo["ds_replica_cm_median_s"],
                            hi["rsync_cm_median_s"] / lo["rsync_cm_median_s"]))
    fc = sc.get("first_copy")
    if fc:
        lines.append("c. first copy N=%d (%d files, %.0f MB): clone %.1fs, tar|ssh|tar %.1fs -> x%.2f (target <= 1.3x)"
                     % (fc["n_revisions"], fc["files"], fc["bytes"] / 1e6, fc["clone_median_s"],
                        fc["tar_ssh_median_s"], fc["ratio"]))
    s = sc.get("snapshot")
    if s:
        for label in ("free", "bwlimit"):
            if label in s:
                lines.append("d. K=%d %-7s: snapshot %.3fs of %.3fs wall = %.1f%% (target <= 25%%)"
                             % (s["k"], label, s[label]["snapshot_median_s"], s[label]["wall_median_s"],
                                100 * s[label]["share"]))
    m = sc.get("memory", {})
    for profile, r in m.items():
        lines.append("e. %.0f MB increment of %s objects (%d files): serve %.0f MB, pull %.0f MB peak RSS "
                     "(target < 100 MB)" % (r["bytes"] / 1e6, profile, r["files"], r["serve_peak_rss_mb"],
                                            r["pull_peak_rss_mb"]))
    fo = sc.get("follow")
    if fo:
        lines.append("follow. %.0fs, master at %.1f tx/s (asked %g), interval %gs: lag p50 %.3fs (target <= 0.5s), "
                     "p99 %.3fs (target <= 2s); master in snapshot mode %.1f%% of the time (target <= 5%%); "
                     "CPU follower %.1f%%, serve %.1f%% of a core"
                     % (fo["seconds"], fo["achieved_tps"], fo["rate_tps"], fo["interval_s"], fo["lag_p50_s"],
                        fo["lag_p99_s"], 100 * fo["snapshot_share"], 100 * fo["follower_cpu_share"],
                        100 * fo["serve_cpu_share"]))
    d = sc.get("durable_apply")
    if d:
        lines.append("f. durable apply of %d files: engine (syncfs every %d files) %.0f files/s vs fsync each "
                     "%.0f files/s -> x%.2f"
                     % (d["files"], d["flush_files"], d["engine_files_per_s"], d["fsync_each_files_per_s"],
                        d["ratio"]))
        lines.append("   one final syncfs (before bb5a421): %.0f files/s -> x%.2f against fsync each"
                     % (d["one_syncfs_files_per_s"], d["ratio_one_syncfs"]))
    h = sc.get("hot")
    for k in ("100", "1000"):
        if h and k in h:
            r = h[k]
            lines.append("h. hot standby, K=%s (%d files): storage process down %.3fs (longest silence %.3fs) of a "
                         "%.3fs pull" % (k, r["files"], r["downtime_median_s"], r["silence_median_s"],
                                         r["wall_median_s"]))
    return "\n".join(lines)


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description="ds-replica benchmarks (make bench)")
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=env_list("BENCH_N", "30000,300000"))
    p.add_argument("--cm-runs", type=int, default=int(os.environ.get("BENCH_CM_RUNS", -1)),
                   help="runs per N through a persistent ssh connection (default: --runs; 0: none)")
    p.add_argument("--k", type=int, default=int(os.environ.get("BENCH_K", 100)))
    p.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    p.add_argument("--k-snapshot", type=int, default=int(os.environ.get("BENCH_K_SNAPSHOT", 1000)))
    p.add_argument("--clone-n", type=int, default=int(os.environ.get("BENCH_CLONE_N", 0)) or None)
    p.add_argument("--clone-runs", type=int, default=int(os.environ.get("BENCH_CLONE_RUNS", 1)),
                   help="a first copy of 300k files takes minutes on this disk: one run by default")
    p.add_argument("--mem-mb", type=int, default=int(os.environ.get("BENCH_MEM_MB", 1024)))
    p.add_argument("--bwlimit", type=int, default=int(os.environ.get("BENCH_BWLIMIT", 0)) or None)
    p.add_argument("--only", default=os.environ.get("BENCH_ONLY", "a,b,c,d,e,f,g,r,follow"))
    p.add_argument("--follow-seconds", type=float, default=float(os.environ.get("BENCH_FOLLOW_SECONDS", 600)))
    p.add_argument("--follow-rate", type=float, default=float(os.environ.get("BENCH_FOLLOW_RATE", 50)))
    p.add_argument("--follow-interval", type=float, default=float(os.environ.get("BENCH_FOLLOW_INTERVAL", 0.5)))
    p.add_argument("--follow-dir", default=os.environ.get("BENCH_FOLLOW_DIR"))
    p.add_argument("--cache", default=os.environ.get("BENCH_CACHE", generate.DEFAULT_CACHE))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--baseline-ds", default=os.environ.get("BENCH_BASELINE_DS"), metavar="PATH",
                   help="scenario a also times this ds-replica (another engine, installed on this machine; "
                        "it serves itself on the master), interleaved with this one's runs")
    p.add_argument("--merge", action="store_true", help="keep other scenarios of an earlier results.json")
    a = p.parse_args(argv)
    a.clone_n = a.clone_n or max(a.n)
    if a.cm_runs < 0:
        a.cm_runs = a.runs
    only = set(a.only.split(","))
    t0 = time.monotonic()
    b = Bench(a)
    b.start()
    try:
        if only & {"a", "b"}:
            b.increment()
        if "d" in only:
            b.snapshot()
        if "f" in only:
            b.durable()
        if "e" in only:
            b.memory()
        if "g" in only:
            b.compression()
        if "c" in only:
            b.first_copy()
        if "follow" in only:
            b.follow()
        if "h" in only:
            b.hot()
        if "r" in only:
            b.reseed()
    finally:
        b.stop()
    b.results["total_seconds"] = round(time.monotonic() - t0, 1)
    b.results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    b.save()
    print("\n" + report(b.results))
    print("total %.0fs; results in %s" % (b.results["total_seconds"], os.path.join(RESULTS, "results.json")))
    if not a.no_plot and "increment" in b.results["scenarios"]:
        import plot
        print("plot:", plot.plot(os.path.join(RESULTS, "results.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
