"""An ssh stand-in that speaks only request version 0, like a master that runs
the original replica.py: it refuses anything else the way a foreign tool would
(a message on stderr, exit 1).  Used as `-e "python v0_only_ssh.py DIR"`; it
answers version 0 with the real serve code."""

import io
import sys

from dirstorage_replica.serve import serve

if __name__ == "__main__":
    request = sys.stdin.buffer.read()
    if not request.startswith(b"replica request 0\n"):
        sys.stderr.write("replica.py: bad request\n")
        sys.exit(1)
    serve(sys.argv[1], io.BytesIO(request), sys.stdout.buffer)
