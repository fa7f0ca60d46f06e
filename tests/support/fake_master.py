"""A stand-in for `ssh host ds-replica serve DIR` that answers every request
with a prepared file: used as `-e "python fake_master.py ANSWER"` to feed
the replica hostile archives.  Extra arguments (host, command) are ignored."""

import sys

if __name__ == "__main__":
    sys.stdin.buffer.read()
    with open(sys.argv[1], "rb") as f:
        sys.stdout.buffer.write(f.read())
    sys.stdout.buffer.flush()
