"""Drives the REAL DirectoryStorage engine for the conformance scenarios of
`make real-engine-check`, one command per line on stdin, one JSON answer per
line on stdout.  Run with the real engine's Python ($DS_REAL_PYTHON), with
$DS_REAL_ENGINE on its path (../shared/real-engine/README.md); it imports
nothing of this project, so the same commands can drive the model
(tests/real_engine/conformance.py ModelDriver).

Commands: `create FORMAT [KEY=VALUE ...]` (mkds, then [journal] settings),
`open`, `commit N` (N transactions of one object each; answers their tids),
`enter CODE`, `leave CODE`, `close` (clean), `crash` (exit without closing:
the journal stays as a SIGKILL leaves it), `quit`.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.environ["DS_REAL_ENGINE"])

import transaction  # noqa: E402
import ZODB  # noqa: E402
from DirectoryStorage.Filesystem import Filesystem  # noqa: E402
from DirectoryStorage.Full import Full  # noqa: E402
from DirectoryStorage.mkds import mkds  # noqa: E402
from persistent.mapping import PersistentMapping  # noqa: E402


class Engine(object):
    def __init__(self, home):
        self.home = home
        self.storage = self.db = self.conn = None

    def create(self, fmt, *settings):
        mkds(self.home, "Full", fmt)
        path = os.path.join(self.home, "config", "settings")
        text = open(path).read()
        for item in settings:
            key, value = item.split("=", 1)
            text = re.sub(r"(?m)^%s:.*$" % re.escape(key), "%s: %s" % (key, value), text)
        open(path, "w").write(text)
        return {}

    def open(self):
        self.storage = Full(Filesystem(self.home), synchronous=1)
        self.db = ZODB.DB(self.storage)
        self.conn = self.db.open()
        last = self.storage.lastTransaction()  # ZODB.DB() committed the root object if it was new
        return {"tids": [last.hex().upper()]} if last != bytes(8) else {}

    def commit(self, n):
        root = self.conn.root()
        tids = []
        for i in range(int(n)):
            root["k%d" % (len(root) + i)] = PersistentMapping({"v": i})
            transaction.commit()
            tids.append(self.storage.lastTransaction().hex().upper())
        return {"tids": tids}

    def enter(self, code):
        self.storage.enter_snapshot(code)
        return {}

    def leave(self, code):
        self.storage.leave_snapshot(code)
        return {}

    def close(self):
        self.conn.close()
        self.db.close()
        return {}

    def crash(self):
        sys.stdout.write(json.dumps({"ok": True}) + "\n")
        sys.stdout.flush()
        os._exit(0)


def main():
    engine = Engine(sys.argv[1])
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        try:
            answer = dict(getattr(engine, words[0])(*words[1:]), ok=True)
        except Exception as e:  # reported to the harness, which fails the scenario with it
            answer = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
