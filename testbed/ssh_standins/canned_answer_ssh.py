"""An ssh stand-in with a canned answer: instead of `ssh host ds-replica serve DIR`
it answers every request with a prepared file.  Used as
`-e "python canned_answer_ssh.py ANSWER"` to feed the replica hostile
archives.  Extra arguments (host, command) are ignored.

With CANNED_COUNT=FILE in the environment, each run appends a line to FILE
(how often the standby connected); with CANNED_LIMIT=N as well, the runs past
the Nth refuse instead of answering (so that a standby that would ask
forever ends).  With CANNED_KEEP_INPUT=1 the answer is sent without
waiting for the end of the request (a follower keeps its input open)."""

import os
import sys

if __name__ == "__main__":
    if not os.environ.get("CANNED_KEEP_INPUT"):
        sys.stdin.buffer.read()
    count = os.environ.get("CANNED_COUNT")
    if count:
        with open(count, "a") as f:
            f.write("run\n")
        with open(count) as f:
            runs = len(f.readlines())
        if runs > int(os.environ.get("CANNED_LIMIT", "0") or 0) > 0:
            sys.stderr.write("ds-replica serve: canned answer: limit of %s runs reached\n" % os.environ["CANNED_LIMIT"])
            sys.exit(1)
    with open(sys.argv[1], "rb") as f:
        sys.stdout.buffer.write(f.read())
    sys.stdout.buffer.flush()
