"""An ssh stand-in with a canned answer: instead of `ssh host ds-replica serve DIR`
it answers every request with a prepared file.  Used as
`-e "python canned_answer_ssh.py ANSWER"` to feed the replica hostile
archives.  Extra arguments (host, command) are ignored."""

import sys

if __name__ == "__main__":
    sys.stdin.buffer.read()
    with open(sys.argv[1], "rb") as f:
        sys.stdout.buffer.write(f.read())
    sys.stdout.buffer.flush()
