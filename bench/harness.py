# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmarks' shared harness (bench/run.py and its scenario_*.py files):
logging, timing, the sshd and the ssh commands, the storages, results.json."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time

import generate

from testbed.harness.sshd import start_sshd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
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


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


class Bench(object):
    """What every scenario uses: the settings (`a`), the results, one private
    sshd on 127.0.0.1 (and a persistent connection through it), timed pulls,
    rsync and the copy-exactly-the-increment limit, and the cached storages."""

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
