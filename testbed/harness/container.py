# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host booted under systemd, for tests/integration/test_systemd.py: this machine's own Debian
run by ``systemd-nspawn --boot`` with systemd as PID 1, sharing the host's network.

``--volatile=yes`` mounts a tmpfs as the container's root and this machine's ``/usr`` read-only
on it; ``/etc``, ``/var``, ``/home``, ``/root``, ``/opt``, ``/srv`` and ``/usr/local`` are
overlays of this machine's, whose writes go to folders under the container's work folder and are
thrown away with it: the container has its own ``/etc/passwd``, ``/etc/systemd/system`` and
``/etc/cron.d``. (``--volatile=overlay`` is refused on ``/``, and ``--volatile=state`` finds
this machine's ``/dev`` pre-populated.) ``binds`` (and ``binds_ro``, read-only) are shared with
the host at the same path.
The host's services that would collide with it or run its crontabs are masked (``MASKED``).

The E2E fleet (testbed/harness/e2e.py) boots one per host: ``account``, ``ensure_user``, ``run`` and
``popen`` (as any of its accounts) and ``path`` (a file of its own ``/etc`` seen from the host) are
what it and the tests use, the same calls as ``LocalHost`` of the loopback fallback.

No service manager runs on the host here (PID 1 is not systemd), so the container is neither
registered with machined nor given its own scope (``--register=no --keep-unit``); the test
enters it with ``nsenter`` (``run``). A container that does not boot raises: never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import namedtuple
from pathlib import Path

NSPAWN = "/usr/bin/systemd-nspawn"
OVERLAID = ("etc", "var", "home", "root", "opt", "srv", "usr/local")
MASKED = ("cron.service", "postgresql.service", "prometheus.service", "prometheus-node-exporter.service",
          "ssh.service", "ssh.socket", "timers.target", "systemd-firstboot.service", "e2scrub_reap.service",
          "getty@tty1.service")


Account = namedtuple("Account", "uid gid home")


class ContainerError(AssertionError):
    """The container could not be booted or entered: the test fails, loudly."""


class EnteredProcess(object):
    """A program started in a container through `nsenter`, which forks into the container's PID
    namespace and waits for it, but forwards no signal: signals go to the program itself. `pid` is
    its PID inside the container (what a command run there, e.g. a stop_command, names); `wait`,
    `poll` and `returncode` are nsenter's, which ends as the program did (its status or its signal)."""

    def __init__(self, popen):
        self.popen = popen
        self.stdin, self.stdout, self.stderr = popen.stdin, popen.stdout, popen.stderr
        self.host_pid = self._child(popen)
        self.pid = self._pid_inside(self.host_pid)

    @staticmethod
    def _child(popen, timeout=10.0):
        """The host's PID of the program nsenter forked; None if all has ended already."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                children = Path("/proc/%d/task/%d/children" % (popen.pid, popen.pid)).read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            if popen.poll() is not None:
                return None
            if time.monotonic() > deadline:
                raise ContainerError("nsenter (pid %d) started nothing within %gs" % (popen.pid, timeout))
            time.sleep(0.005)

    @staticmethod
    def _pid_inside(host_pid):
        if host_pid is None:
            return None
        try:
            status = Path("/proc/%d/status" % host_pid).read_text()
        except OSError:
            return None  # it has already ended
        return int([ln for ln in status.splitlines() if ln.startswith("NSpid:")][0].split()[-1])

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout=None):
        return self.popen.wait(timeout=timeout)

    def send_signal(self, sig):
        if self.host_pid is not None and self.popen.poll() is None:
            try:
                os.kill(self.host_pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)
        self.popen.kill()


class BootedHost(object):
    """`systemd-nspawn --boot` of this machine's own Debian, named `name`, its throwaway layers in
    `workdir`. `leader` is its PID 1 (systemd) as the host sees it."""

    def __init__(self, name, workdir, binds=(), binds_ro=()):
        self.name = name
        self.workdir = Path(workdir)
        self.binds = [str(b) for b in binds]
        self.binds_ro = [str(b) for b in binds_ro]
        self.proc = None
        self.leader = None
        self.log = self.workdir / "nspawn.log"

    def argv(self):
        argv = [NSPAWN, "--boot", "--volatile=yes", "--directory=/", "--machine=" + self.name, "--register=no",
                "--keep-unit", "--console=pipe", "--quiet"]
        for d in OVERLAID:
            upper = self.workdir / "upper" / d.replace("/", "_")
            upper.mkdir(parents=True, exist_ok=True)
            argv.append("--overlay=/%s:%s:/%s" % (d, upper, d))
        argv += ["--bind=%s" % b for b in self.binds] + ["--bind-ro=%s" % b for b in self.binds_ro]
        return argv + ["--"] + ["systemd.mask=%s" % unit for unit in MASKED]

    def cgroups(self):
        """The container's own cgroup in each hierarchy systemd uses (name=systemd and the unified one),
        under this process's own. Without them every container's systemd managed the same ``/payload``
        (``--keep-unit`` with no service manager here): booted at once, their units failed to enter
        their cgroups (status 219/CGROUP, "booted degraded"), and one container's units shared the
        cgroups of another's."""
        unified = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
        mounts = {"name=systemd": "/sys/fs/cgroup/systemd", "": unified}
        found = []
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _ident, controllers, path = line.split(":", 2)
            mount = mounts.get(controllers)
            if mount and os.path.exists(os.path.join(mount, "cgroup.procs")):
                found.append(Path(mount + path.rstrip("/")) / ("ds-ct-" + self.name))
        return found

    def _enter_own_cgroups(self):
        for cgroup in self.cgroups():
            cgroup.mkdir(exist_ok=True)
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def _remove_own_cgroups(self):
        for cgroup in self.cgroups():
            for folder in sorted((d for d in cgroup.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                cgroup.rmdir()

    def start(self, timeout=90.0):
        if not os.access(NSPAWN, os.X_OK):
            raise ContainerError("%s missing: run `make deps` as root (Debian package systemd-container)" % NSPAWN)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=self._enter_own_cgroups)  # noqa: PLW1509 (no threads write them)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            self._check_alive()
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], capture_output=True,
                                      text=True, check=False).stdout.split()
            if children:
                self.leader = int(children[0])
            elif time.monotonic() > deadline:
                self._fail("did not start systemd within %gs" % timeout)
            else:
                time.sleep(0.2)
        state = ""
        while state not in ("running", "degraded"):
            self._check_alive()
            answer = self.run(["systemctl", "is-system-running"])
            state = answer.stdout.strip() or answer.stderr.strip()
            if time.monotonic() > deadline:
                self._fail("systemd did not finish booting within %gs (state %r)" % (timeout, state))
            time.sleep(0.5)
        if state == "degraded":
            self._fail("booted degraded: %s" % self.run(["systemctl", "--failed", "--no-legend"]).stdout)
        return self

    def _check_alive(self):
        if self.proc.poll() is not None:
            self._fail("systemd-nspawn exited %s" % self.proc.returncode)

    def _fail(self, what):
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        self.stop()
        raise ContainerError("container %s %s: %s" % (self.name, what, log))

    def enter(self):
        """The command prefix that runs a program inside the container (all its namespaces)."""
        return ("nsenter", "--target", str(self.leader), "--all")

    def argv_as(self, argv, user=None, env=None, cwd=None):
        """`argv` run inside the container: as `user` (one of its own accounts; root if None), with
        exactly the environment `env` (if given), in `cwd` (if given)."""
        prefix = [*self.enter()]  # (nsenter's --wd would open the folder of this machine, not the container's)
        if user is not None:
            account = self.account(user)
            prefix += ["setpriv", "--reuid=%d" % account.uid, "--regid=%d" % account.gid, "--init-groups"]
        if env is not None or cwd:
            prefix += ["env", *(["-i"] if env is not None else []), *(["--chdir=%s" % cwd] if cwd else []),
                       *("%s=%s" % kv for kv in (env or {}).items())]
        return [*prefix, *argv]

    def run(self, argv, user=None, env=None, cwd=None, **kw):
        """A command run inside the container (as root, or `user`): its CompletedProcess (text,
        never raises)."""
        return subprocess.run(self.argv_as(argv, user, env, cwd), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False, **kw)

    def popen(self, argv, user=None, env=None, cwd=None, **kw):
        """A program started inside the container (as root, or `user`): an EnteredProcess."""
        return EnteredProcess(subprocess.Popen(self.argv_as(argv, user, env, cwd), **kw))

    def account(self, user):
        """`user`'s (uid, gid, home) in the container's own /etc/passwd."""
        line = self.run(["getent", "passwd", user]).stdout.strip()
        if not line:
            raise ContainerError("no account %s in container %s" % (user, self.name))
        fields = line.split(":")
        return Account(int(fields[2]), int(fields[3]), fields[5])

    def ensure_user(self, user):
        """The account `user` in the container (made if missing, password `*`: sshd with UsePAM no
        refuses a locked one)."""
        if self.run(["getent", "passwd", user]).returncode != 0:
            made = self.run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", user])
            if made.returncode != 0:
                raise ContainerError("useradd %s in container %s: %s" % (user, self.name, made.stderr.strip()))
        return self.account(user)

    def path(self, path):
        """Where the host sees the container's file `path` (its own /etc, /home, ...)."""
        return Path("/proc/%d/root" % self.leader) / str(path).lstrip("/")

    def sh(self, script, **kw):
        """`sh -c script` inside the container; raises with its output unless it exits 0."""
        proc = self.run(["sh", "-c", script], **kw)
        if proc.returncode != 0:
            raise AssertionError("in %s: %s -> %s\n%s%s" % (self.name, script, proc.returncode, proc.stdout,
                                                            proc.stderr))
        return proc.stdout

    def stop(self):
        """Halt it (SIGTERM to systemd-nspawn; a second one ends it at once), else kill it; its
        layers are removed."""
        for wait in (15, 10):
            if self.proc is None or self.proc.poll() is not None:
                break
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._remove_own_cgroups()
        shutil.rmtree(self.workdir / "upper", ignore_errors=True)
