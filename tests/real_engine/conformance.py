"""The journal and snapshot scenarios that the simulated master must play as
the real engine does.  Each scenario is a list of driver commands (see
engine_driver.py); after each command the harness looks at the storage with
this project's own reader (`Storage`: A/x.serial, journal/, B/x.serial, the
journal-aware newest tid) and records what it saw.  `make test` checks the
model against EXPECTED; `make real-engine-check` checks the real engine
against the same EXPECTED, so the model and the engine cannot drift apart
unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from dirstorage_replica import storage
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage

HERE = os.path.dirname(os.path.abspath(__file__))
SETTLE = 0.3  # the real engine flushes in a thread of its own: let it finish before looking

SCENARIOS = {
    # commits wait in journal/ below the thresholds; a pause without commits flushes nothing;
    # a clean close flushes
    "journal": ["create bushy", "open", "commit 5", "wait 1.5", "close"],
    # the transaction threshold is counted at a commit (ZODB's root creation counts)
    "transactions": ["create lawn flush_transaction_threshold=3", "open", "commit 1", "commit 1", "commit 1",
                     "close"],
    # the age is looked at only when a commit comes
    "age": ["create chunky flush_interval=1", "open", "commit 1", "wait 1.5", "commit 1", "close"],
    # entering snapshot mode flushes; commits meanwhile stay in the journal, then go to B/
    # (flush_transaction_threshold 3), never to A/; leaving recombines B/ into A/
    "snapshot": ["create bushy flush_transaction_threshold=3", "open", "commit 1", "enter tool", "commit 1",
                 "commit 2", "leave tool", "close"],
    # a crash leaves the journal; opening recovers it
    "recovery": ["create flat", "open", "commit 3", "crash", "open", "close"],
}

#: what the real engine showed (make real-engine-check, DirectoryStorage's Python 3 port), step by step:
#: [last commit is the newest tid, ... is A/x.serial, ... is B/x.serial, commits waiting in journal/]
EXPECTED = {
    "journal": [None, [True, False, False, 1], [True, False, False, 6], [True, False, False, 6],
                [True, True, False, 0]],
    "transactions": [None, [True, False, False, 1], [True, False, False, 2], [True, True, False, 0],
                     [True, False, False, 1], [True, True, False, 0]],
    "age": [None, [True, False, False, 1], [True, False, False, 2], [True, False, False, 2],
            [True, True, False, 0], [True, True, False, 0]],
    "snapshot": [None, [True, False, False, 1], [True, False, False, 2], [True, True, False, 0],
                 [True, False, False, 1], [True, False, True, 0], [True, True, False, 0],
                 [True, True, False, 0]],
    "recovery": [None, [True, False, False, 1], [True, False, False, 4], [True, False, False, 4],
                 [True, True, False, 0], [True, True, False, 0]],
}


def observe(home, last):
    """What this project's reader sees: [newest == last, A/x.serial == last,
    B/x.serial == last, commits in journal/]; None before there is a storage."""
    if last is None:
        return None
    st = storage.Storage(home)
    try:
        b_serial = st.read("x.serial", "B")
    except FileNotFoundError:
        b_serial = None
    return [st.newest_tid() == last, st.last_tid() == last, b_serial == last, len(st.journal_tids())]


def play(driver, home, steps):
    """Run `steps` with `driver`; the observation after each."""
    seen, last = [], None
    for step in steps:
        word, *args = step.split()
        if word == "wait":
            time.sleep(float(args[0]))
        else:
            answer = driver.do(step)
            if answer.get("tids"):
                last = bytes.fromhex(answer["tids"][-1])
        time.sleep(SETTLE)
        seen.append(observe(home, last))
    driver.end()
    return seen


class RealDriver(object):
    """engine_driver.py in the real engine's Python."""

    def __init__(self, home):
        self.home = home
        python = os.environ.get("DS_REAL_PYTHON")
        if not (python and os.environ.get("DS_REAL_ENGINE")):
            raise SystemExit("DS_REAL_ENGINE and DS_REAL_PYTHON are not set: set up the real engine as "
                             "../shared/real-engine/README.md says (fetch, setup.sh), then run its export line")
        self.proc = subprocess.Popen([python, os.path.join(HERE, "engine_driver.py"), home], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def do(self, step):
        if step == "open" and self.proc.poll() is not None:  # after a crash: a new engine process
            self.__init__(self.home)
        self.proc.stdin.write(step + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise AssertionError("real engine, %r: %s" % (step, answer.get("error")))
        if step == "crash":
            self.proc.wait(timeout=30)
        return answer

    def end(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class ModelDriver(object):
    """The same commands played by testbed/fakes/simulated_storage.py."""

    def __init__(self, home):
        self.home = home
        self.master = None

    def do(self, step):
        word, *args = step.split()
        return getattr(self, "_" + word)(*args) or {}

    def _create(self, fmt, *settings):
        create_storage(self.home, fmt)
        path = os.path.join(self.home, "config", "settings")
        with open(path) as f:
            text = f.read()
        for item in settings:
            key, value = item.split("=", 1)
            text = "\n".join("%s: %s" % (key, value) if line.startswith(key + ":") else line
                             for line in text.split("\n"))
        with open(path, "w") as f:
            f.write(text)

    def _open(self):
        self.master = SimulatedStorage(self.home).open()
        if self.master.last_tid == storage.ZERO_TID:  # ZODB.DB() creates the root object in its own commit
            self.master.commit({0: PICKLE_HEAD + b"root."})
        return {"tids": [storage.hex_tid(self.master.last_tid)]}

    def _commit(self, n):
        tids = []
        for i in range(int(n)):
            new = self.master.new_oid()  # the root maps a new key to a new object: two objects a commit
            tids.append(storage.hex_tid(self.master.commit({0: PICKLE_HEAD + b"r%d." % new,
                                                            new: PICKLE_HEAD + b"v%d." % i})))
        return {"tids": tids}

    def _enter(self, code):
        self.master.enter_snapshot(code)

    def _leave(self, code):
        self.master.leave_snapshot(code)

    def _close(self):
        self.master.close()

    def _crash(self):
        self.master.crash()

    def end(self):
        if self.master is not None and self.master.is_open:
            self.master.close()


def run(driver_class, workdir, names=None):
    """{scenario: observations} for each scenario, each in a storage of its own."""
    results = {}
    for name in names or SCENARIOS:
        home = os.path.join(workdir, name)
        driver = driver_class(home)
        results[name] = play(driver, home, SCENARIOS[name])
    return results


if __name__ == "__main__":  # print what the real engine does, to compare with EXPECTED by eye
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        json.dump(run(RealDriver if "--real" in sys.argv else ModelDriver, tmp), sys.stdout, indent=1)
