# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hot standby: stopping the storage process that serves a replica for the
apply of a pull or of a follower (replica.py's Hold), and starting it again.

The commands come from the operator's own configuration (`--stop-command`,
`--start-command`, the `service:` of a standby storage) and run with
`/bin/sh -c` as the replica account; no shell string is ever built from
other input.  The downtime runs from the start of the stop command to the
end of the start command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from .errors import Busy, DSError

SHELL = "/bin/sh"
STOP_TIMEOUT = 60.0  # --stop-timeout: the stop command, then the wait for misc/lock


def last_line(output):
    """The last non-blank line a command printed (for a one-line error)."""
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_command(command, timeout):
    """Run `command` with /bin/sh -c; (exit status, its last output line).
    A command that outlives `timeout` is killed with every process it started
    that is still in its process group (a `systemctl stop` left waiting would
    otherwise stop the service after the start command), and counts as
    failed (-9)."""
    try:
        proc = subprocess.Popen([SHELL, "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        return 127, e.strerror or str(e)
    try:
        output, _unused = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        output = _read_rest(proc)
        return -9, "still running after %gs: killed" % timeout + (" (%s)" % last_line(output) if output else "")
    return proc.returncode, last_line(output)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass  # gone meanwhile


def _read_rest(proc):
    """What a killed command printed (a process that left the group may still hold its output open:
    at most a few seconds' wait)."""
    try:
        output, _unused = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.stdout.close()
        proc.wait()
        return b""
    return output


def _output(said):
    return ": " + said if said else ""


def stop_failed(command, status, said):
    return DSError("the stop command failed (exit %d%s): %s" % (status, _output(said), command),
                   "the replica is unchanged and the start command was run; check the stop command "
                   "(it runs with /bin/sh -c as the replica account)")


def start_failed(command, status, said):
    return DSError("the start command failed (exit %d%s): %s" % (status, _output(said), command),
                   "the storage process that serves the replica is not running: start it by hand, "
                   "then check the start command")


class HotStandby(object):
    """The stop and start commands of a hot standby's storage process, and
    the downtime they cause."""

    def __init__(self, stop_command, start_command, stop_timeout=STOP_TIMEOUT, log=None):
        self.stop_command = stop_command
        self.start_command = start_command
        self.stop_timeout = float(stop_timeout)
        self.log = log or (lambda msg: None)
        self.stopped_at = None  # time.monotonic() when the stop command began
        self.downtime = 0.0

    def stop_and_lock(self, lock, home):
        """Run the stop command, then wait for the storage process to let go
        of `lock` (misc/lock) and take it; the whole within stop_timeout."""
        self.stopped_at = time.monotonic()
        self.log("stopping the storage process: %s" % self.stop_command)
        status, said = run_command(self.stop_command, self.stop_timeout)
        if status != 0:
            raise stop_failed(self.stop_command, status, said)
        left = self.stop_timeout - (time.monotonic() - self.stopped_at)
        if not lock.acquire_within(max(left, 0.0)):
            pid = lock.holder()
            raise Busy("replica %s: misc/lock is still held%s %gs after the stop command began"
                       % (home, " by pid %d" % pid if pid else "", self.stop_timeout),
                       "the storage process did not stop: check the stop command, or allow more time "
                       "with --stop-timeout")
        self.log("misc/lock free after %.3fs" % (time.monotonic() - self.stopped_at))

    def start(self):
        """Run the start command if the stop command ran; the downtime ends here."""
        if self.stopped_at is None:
            return
        self.log("starting the storage process: %s" % self.start_command)
        status, said = run_command(self.start_command, self.stop_timeout)
        self.downtime = time.monotonic() - self.stopped_at
        self.stopped_at = None
        if status != 0:
            raise start_failed(self.start_command, status, said)


def hot_standby(stop_command, start_command, stop_timeout=None, log=None):
    """The HotStandby of the given commands, or None without any (a cold
    pull).  One command without the other is refused."""
    if not stop_command and not start_command:
        return None
    if not (stop_command and start_command):
        raise DSError("a hot standby needs both a stop command and a start command",
                      "give --stop-command and --start-command together (module: stop_command and start_command)")
    return HotStandby(stop_command, start_command, STOP_TIMEOUT if stop_timeout is None else stop_timeout, log)
