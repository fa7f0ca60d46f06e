"""make soak (SOAK=1): a cascade's serve gives up after its 30 s wait (PEER_WAIT), too long
for make test (tests/integration/test_cascade.py shortens the pull's wait instead).

standby1's turn at its snapshot is held (as its own pull applying would hold it) for longer
than 30 s: standby2's pull from standby1 waits, then fails with exit 75 (try again later) and
one line saying so, standby2 unchanged."""

from __future__ import annotations

import subprocess
import time

from dirstorage_replica.snapshot import PEER_LOCK, PEER_WAIT
from testbed.harness.reliability import DS_REPLICA
from tests.integration.test_cascade import _turn_held, _wait, chain
from tests.integration.test_reliability import _commit_big
from tests.support.checks import replica_state

__all__ = ["chain"]  # the fixture, shared with test_cascade.py


def test_a_serve_gives_up_after_its_wait_and_the_pull_exits_75(chain):
    master, one, two = chain
    _commit_big(master, 3, 1000)
    assert subprocess.run([DS_REPLICA, "-q", str(master), str(one)], check=False, timeout=60).returncode == 0
    before = replica_state(two)
    holder = subprocess.Popen(["flock", "-x", str(one / "misc" / PEER_LOCK), "sleep", str(PEER_WAIT + 30)])
    try:
        _wait(lambda: _turn_held(one))
        t0 = time.monotonic()
        proc = subprocess.run([DS_REPLICA, "-q", str(one), str(two)], capture_output=True, text=True, timeout=120,
                              check=False)
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 75, (proc.returncode, proc.stderr)
    [line] = proc.stderr.splitlines()
    # (the pid it names is the one in the lock file: flock(1), standing in here, writes none)
    assert line.startswith("ds-replica: master refused: ") and "cannot enter snapshot mode: another ds-replica " \
        "process" in line and "has held it for %ds" % PEER_WAIT in line, line
    assert PEER_WAIT <= waited < PEER_WAIT + 20, waited
    assert replica_state(two) == before
