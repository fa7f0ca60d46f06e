"""A stand-in for ssh that runs the remote command on this machine, as the
same user: used as `-e "python local_ssh.py"` where a test wants the master's
serve in a process of its own but no sshd (for example to trace only the
replica side).  Everything before `--` (ssh options) and the destination are
ignored; the command is split as a POSIX shell would split it and exec'd,
never run through a shell."""

import os
import shlex
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    rest = args[args.index("--") + 2:] if "--" in args else args[1:]
    argv = shlex.split(" ".join(rest))
    os.execvp(argv[0], argv)
