"""A stand-in for ssh that runs the remote command on this machine (as
local_ssh.py does) and counts the bytes of its answer: used as
`-e "python counting_ssh.py COUNTFILE LIMIT"`.  The count is written to
COUNTFILE when the answer ends.  With LIMIT > 0, once LIMIT bytes have been
relayed it SIGKILLs the process that started it (the standby's ds-replica:
a clone killed after that many bytes) and the remote command, then exits.
Everything before `--` (ssh options) and the destination are ignored; the
command is split as a POSIX shell would split it, never run through a shell."""

import fcntl
import os
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time


def cpu_and_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), fields[0]


def drained(fd, reader, seconds=30.0):
    """Wait until the reader has taken every byte out of the pipe `fd`
    (FIONREAD answers for either end of a Linux pipe), then until it has
    done what it does with them (asleep, its CPU time still, waiting for
    more): it is killed having had and handled LIMIT bytes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0] == 0:
            break
        time.sleep(0.01)
    before = None
    while time.monotonic() < deadline:
        now = cpu_and_state(reader)
        if now == before and now[1] == "S":
            return
        before = now
        time.sleep(0.2)


if __name__ == "__main__":
    countfile, limit, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    rest = args[args.index("--") + 2:] if "--" in args else args[1:]
    child = subprocess.Popen(shlex.split(" ".join(rest)), stdout=subprocess.PIPE)
    relayed = 0
    out = sys.stdout.buffer
    while True:
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        if limit > 0 and relayed + len(chunk) >= limit:
            out.write(chunk[:limit - relayed])
            out.flush()
            relayed = limit
            drained(out.fileno(), os.getppid())
            with open(countfile, "w") as f:  # before the kill: the test reads it as soon as its process ends
                f.write("%d\n" % relayed)
            os.kill(os.getppid(), signal.SIGKILL)
            child.kill()
            break
        out.write(chunk)
        out.flush()
        relayed += len(chunk)
    if not (limit > 0 and relayed == limit):
        with open(countfile, "w") as f:
            f.write("%d\n" % relayed)
    sys.exit(child.wait())
