"""Cascading standbys on one machine: a replica serves another standby
(`ds-replica serve` on a replica, here through a local path) and takes turns
with its own pulls; a cascaded standby can switch its upstream to the master."""

from __future__ import annotations

import subprocess
import time

import pytest

from dirstorage_replica import durable, errors, hold, replica, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.snapshot import PEER_LOCK
from testbed.harness.reliability import DS_REPLICA
from tests.integration.test_reliability import _commit_big, _stopped_master
from tests.support.checks import assert_reads_as, replica_state


@pytest.fixture
def chain(tmp_path):
    """master -> standby1 -> standby2, all equal."""
    master, one, two = tmp_path / "master", tmp_path / "standby1", tmp_path / "standby2"
    _stopped_master(master, 5)
    clone(str(master), str(one))
    clone(str(one), str(two))
    return master, one, two


def _turn_held(home):
    return durable.FileLock(str(home / "misc" / PEER_LOCK)).probe()[0]


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_serve_waits_while_the_replica_pulls_then_the_standby_switches_upstream(chain):
    master, one, two = chain
    _commit_big(master, 40, 20000)
    first = subprocess.Popen([DS_REPLICA, "-q", "--bwlimit", "200", str(master), str(one)], stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait(lambda: _turn_held(one))
        # standby2 asks standby1 while standby1's own pull holds it: the serve waits for its turn
        proc = subprocess.run([DS_REPLICA, "-v", str(one), str(two)], capture_output=True, text=True, timeout=60,
                              check=False)
    finally:
        _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert proc.returncode == 0, proc.stderr
    assert "waiting for another ds-replica process" in proc.stderr
    assert_reads_as(two, one)
    assert_reads_as(two, master)
    # the master moves on; standby2 switches its upstream to the master and catches up directly
    _commit_big(master, 3, 1000)
    assert subprocess.run([DS_REPLICA, "-q", str(master), str(two)], check=False).returncode == 0
    assert_reads_as(two, master)
    assert storage.Storage(one).last_tid() < storage.Storage(two).last_tid()


def test_a_pull_waits_while_a_serve_holds_the_replica(chain):
    master, one, _two = chain
    _commit_big(master, 3, 1000)
    # a serve to a cascaded standby holds standby1's turn for a second
    holder = subprocess.Popen(["flock", "-x", str(one / "misc" / PEER_LOCK), "sleep", "1.5"])
    _wait(lambda: _turn_held(one))
    proc = subprocess.run([DS_REPLICA, "-v", str(master), str(one)], capture_output=True, text=True, timeout=60,
                          check=False)
    holder.wait()
    assert proc.returncode == 0, proc.stderr
    assert "waiting for another ds-replica process" in proc.stderr
    assert_reads_as(one, master)


def test_a_pull_gives_up_in_one_line_when_the_serve_goes_on(chain, monkeypatch):
    master, one, _two = chain
    _commit_big(master, 3, 1000)
    monkeypatch.setattr(hold, "PEER_WAIT", 0.5)
    before = replica_state(one)
    holder = subprocess.Popen(["flock", "-x", str(one / "misc" / PEER_LOCK), "sleep", "30"])
    try:
        _wait(lambda: _turn_held(one))
        with pytest.raises(errors.Busy) as err:
            replica.pull(str(master), str(one))
    finally:
        holder.kill()
        holder.wait()
    assert "is being served to another standby: ds-replica pid" in str(err.value)
    assert "\n" not in str(err.value)
    assert replica_state(one) == before
