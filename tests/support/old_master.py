"""A stand-in for a master that runs the original replica.py: it knows only
request version 0 and refuses anything else the way a foreign tool would
(a message on stderr, exit 1).  Used as `-e "python old_master.py DIR"`; it
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
