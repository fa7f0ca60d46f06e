# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power cuts on a real file system: the machinery of tests/integration/test_power_loss.py
and of its full enumeration in tests/soak/test_power_loss_soak.py.

A file system (ext4 or xfs) is made in a sparse file and mounted through a loop
device.  The process under test runs under strace, whose fault injection
(`-e inject=CALL:signal=SIGSTOP:when=N`) freezes it right after its Nth call of
CALL (a stop signal is acted on when the call returns).  While it is frozen the
backing file is copied, without any sync: the loop device writes into the backing
file's page cache and a read of that file goes through the same cache, so the
copy holds exactly what the file system had sent to its device, and nothing of
what waits in the mounted file system's own page cache or in its running
journal transaction.  That copy is what a power cut leaves.  It is attached to a
loop device and mounted, once the original is unmounted, where the original was
(ext4 and xfs replay their journal there), and
the test runs what an operator would run after the reboot.

Two kinds of image per cut:
- ``strict``: only what the process forced out (fsync, syncfs, and what the file
  system wrote on its own by then);
- ``tick``: as if the file system's periodic journal commit (ext4's `commit=`
  timer, xfs's log worker) had fired at the cut: one byte is rewritten and
  fsynced in an unrelated file of the same file system before the copy, which
  commits every metadata change made so far (renames, new names, sizes) but not
  the data still waiting for delayed allocation.  Metadata ahead of data is
  where missing fsyncs show.

ext4 is mounted with `commit=600` so that its own timer does not commit during
a run; the kernel's flusher writes dirty pages only after 30 s
(vm.dirty_expire_centisecs), longer than a run takes; `self_test` checks on
every file system and mode that a file written without fsync is absent from the
copy and a file fsynced is there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dirstorage_replica.durable import fsync_path

STRACE = shutil.which("strace") or "/usr/bin/strace"
IMAGE_MB = {"ext4": 64, "xfs": 320}  # xfsprogs 6 makes no file system under 300 MB
# (file system, mount options) under test; ext4's default data=ordered and its weaker data=writeback
FILESYSTEMS = {
    "ext4-ordered": ("ext4", "data=ordered,commit=600"),
    "ext4-writeback": ("ext4", "data=writeback,commit=600"),
    "xfs": ("xfs", "nouuid"),  # the cut image has the same uuid as the mounted original
}
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"]}
TICK_FILE = ".power-cut-tick"
FREEZE_TIMEOUT = 120


def _run(argv, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, argv)), proc.returncode,
                                                   (proc.stderr or proc.stdout).strip()))
    return proc.stdout


def require_machine(fs_names):
    """Fail loudly (never skip) where the machine cannot cut power on a loop device."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (losetup and mount need it)")
    if not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], capture_output=True, check=False)
        if not os.path.exists("/dev/loop-control"):
            missing.append("loop devices (/dev/loop-control; `modprobe loop`)")
    for fs in sorted({FILESYSTEMS[n][0] for n in fs_names}):
        if not _kernel_knows(fs):
            missing.append("the %s file system in the kernel (`modprobe %s`)" % (fs, fs))
    tools = {"losetup", "mount", "umount", STRACE} | {MKFS[FILESYSTEMS[n][0]][0] for n in fs_names}
    missing += ["%s (run `make deps` as root: e2fsprogs, xfsprogs, util-linux, strace)" % t
                for t in sorted(tools) if not shutil.which(t)]
    if missing:
        pytest.fail("power-cut tests need: " + "; ".join(missing), pytrace=False)


def _kernel_knows(fs):
    def listed():
        return fs in Path("/proc/filesystems").read_text().split()
    if not listed():
        subprocess.run(["modprobe", fs], capture_output=True, check=False)
    return listed()


@contextlib.contextmanager
def mounted(image, mountpoint, fs_name):
    """Attach `image` to a free loop device and mount it at `mountpoint`;
    always unmounted and detached again, whatever happens inside."""
    fs, options = FILESYSTEMS[fs_name]
    device = _run(["losetup", "-f", "--show", str(image)]).strip()
    try:
        os.makedirs(mountpoint, exist_ok=True)
        _run(["mount", "-t", fs, "-o", options, device, str(mountpoint)])
        try:
            yield Path(mountpoint)
        finally:
            _umount(mountpoint)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def _umount(mountpoint):
    for _attempt in range(50):
        if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.1)  # a killed process may still hold a file open for a moment
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def make_image(path, fs_name, fill=None):
    """A fresh file system in the sparse file `path`; `fill(root)` puts the
    starting files on it, then everything is made durable and unmounted."""
    fs = FILESYSTEMS[fs_name][0]
    with open(path, "wb") as f:
        f.truncate(IMAGE_MB[fs] << 20)
    _run(MKFS[fs] + [str(path)])
    with mounted(path, str(path) + ".mnt", fs_name) as root:
        (root / TICK_FILE).write_bytes(b"\0")
        if fill:
            fill(root)
        _run(["sync", "-f", str(root)])
    os.rmdir(str(path) + ".mnt")


def copy_image(src, dst):
    """What a power cut leaves: the backing file as the device holds it, no sync."""
    _run(["cp", "--sparse=always", str(src), str(dst)])


def tick(root):
    """The periodic journal commit, now: rewrite one byte of an unrelated file
    and fsync it (ext4 and xfs commit every metadata change made before)."""
    fd = os.open(os.path.join(root, TICK_FILE), os.O_WRONLY)
    try:
        os.write(fd, b"\1")
        os.fsync(fd)
    finally:
        os.close(fd)


class Frozen(object):
    """`argv` run under strace until its `when`th call of `call` has returned,
    then frozen (SIGSTOP).  `finished` is its exit status if it ended first.
    `options`: more strace options (`-f`: its threads too; strace counts the
    Nth call per thread, so the first thread to make its Nth call is frozen)."""

    def __init__(self, argv, call, when, log, env=None, wrapped=False, options=()):
        self.log = log
        if os.path.exists(log):
            os.unlink(log)
        inject = list(options) + ["-e", "trace=%s" % call, "-e", "inject=%s:signal=SIGSTOP:when=%d" % (call, when)]
        if wrapped:  # the traced process is started by the command (DS_STRACE_* in its environment)
            env = dict(env or os.environ, DS_STRACE_OUT=str(log), DS_STRACE_ARGS=" ".join(inject))
            full = list(argv)
        else:
            full = [STRACE, "-o", str(log)] + inject + list(argv)
        self.proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        self.finished = None
        self.output = ""

    def wait_frozen(self):
        """True once frozen, False if the process ended before the call."""
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while time.monotonic() < deadline:
            if os.path.exists(self.log) and "--- stopped by SIGSTOP ---" in Path(self.log).read_text():
                return True
            if self.proc.poll() is not None and not self._frozen_later():
                out, err = self.proc.communicate()
                self.finished, self.output = self.proc.returncode, err
                return False
            time.sleep(0.01)
        self.kill()
        raise AssertionError("%s: neither frozen nor finished after %d s" % (self.log, FREEZE_TIMEOUT))

    def _frozen_later(self):
        # a wrapped trace (the serve) may still be frozen after the pull ended
        return os.path.exists(self.log) and "--- stopped by SIGSTOP ---" in Path(self.log).read_text()

    def kill(self):
        """SIGKILL the traced process first, so that strace reaps it (a zombie
        would still count as alive, and the next run must see it dead, as after a
        reboot), then the rest of the process group this test started."""
        traced = [pid for pid in self._group() if _tracer(pid)]
        for pid in traced:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(os.path.exists("/proc/%d" % pid) for pid in traced) and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.returncode is None:
            self.proc.communicate(timeout=30)
        # the next run must find it gone, as after a reboot: else the harness, not the engine, failed
        assert not any(os.path.exists("/proc/%d" % pid) for pid in traced), \
            "harness: the cut process %s was not reaped within 60 s" % traced

    def _group(self):
        found = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path("/proc", entry, "stat").read_text()
                if entry.isdigit() and int(stat.rsplit(")", 1)[1].split()[2]) == self.proc.pid:
                    found.append(int(entry))
        return found


def _tracer(pid):
    """The pid tracing `pid` (0: none, or gone)."""
    try:
        for line in Path("/proc", str(pid), "status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_test(workdir, fs_name):
    """The harness itself, on this file system and mode: a file written
    without fsync is absent from a cut image, a file fsynced (with its
    folder) is there whole; after a tick a new name is there."""
    image, cut = Path(workdir) / "self.img", Path(workdir) / "self-cut.img"
    make_image(image, fs_name)
    payload = os.urandom(200_000)
    with mounted(image, Path(workdir) / "self.mnt", fs_name) as root:
        _write(root / "synced", payload, sync=True)
        _write(root / "unsynced", payload, sync=False)
        copy_image(image, cut)
        _write(root / "ticked", payload, sync=False)
        tick(root)
        copy_image(image, Path(workdir) / "self-tick.img")
    found = {}
    for name, img in (("strict", cut), ("tick", Path(workdir) / "self-tick.img")):
        with mounted(img, Path(workdir) / ("self-%s.mnt" % name), fs_name) as root:
            found[name] = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    assert found["strict"].get("synced") == payload, "%s: a fsynced file is not whole in the cut image" % fs_name
    assert "unsynced" not in found["strict"], \
        "%s: a file written without fsync reached the cut image: the harness cannot tell" % fs_name
    assert "ticked" in found["tick"], "%s: the tick did not commit a new name" % fs_name
    for p in (image, cut, Path(workdir) / "self-tick.img"):
        p.unlink()
    return {name: sorted(files) for name, files in found.items()}


def _write(path, data, sync):
    Path(path).write_bytes(data)
    if sync:
        fsync_path(path)
        fsync_path(os.path.dirname(path), directory=True)


@contextlib.contextmanager
def workdir(prefix):
    """A folder of its own for one test (two runs never collide), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("DS_POWER_CUT_DIR") or None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
