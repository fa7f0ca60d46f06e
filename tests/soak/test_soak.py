"""Long versions of the reliability scenarios (make soak: SOAK=1).

Collected only with SOAK=1 (see tests/conftest.py), so `make test` never
reports them as skipped.

SOAK_SECONDS (default 1800) of pulls every second while the master writes
SOAK_RATE (default 60) transactions/s; SOAK_KILLS (default 300) SIGKILLed pulls;
SOAK_FOLLOW_SECONDS (default 1800) of `ds-replica follow` over the real sshd while
the master writes 50 tx/s, with the follower, its serve or ssh SIGKILLed every
SOAK_FOLLOW_KILL_EVERY (default 30) seconds.
Figures go to tests/output/reliability.json (soak_live_writes, soak_pull_kills,
soak_follow_kills).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from testbed.harness.reliability import report, run_follow_kills, run_live_writes, run_pull_kills


@pytest.fixture
def fast_dir(tmp_path):
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="ds-soak-", dir="/dev/shm"))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def test_soak_live_writes(fast_dir, request):
    seconds = float(os.environ.get("SOAK_SECONDS", "1800"))
    rate = float(os.environ.get("SOAK_RATE", "60"))
    stats = run_live_writes(fast_dir, seconds, rate=rate)
    report(request, "soak_live_writes", stats)
    assert stats["ok"] >= 0.9 * stats["pulls"]
    assert stats["pulls_with_transactions"] >= 0.8 * stats["ok"], stats
    assert (stats["transactions_at_clone"] + stats["transactions"] + stats["final_transactions"]
            == stats["master_transactions"]), stats


def test_soak_pull_kills(fast_dir, request):
    kills = int(os.environ.get("SOAK_KILLS", "300"))
    stats = run_pull_kills(fast_dir, kills, history=int(os.environ.get("SOAK_HISTORY", "1500")),
                           verify_every=int(os.environ.get("SOAK_VERIFY_EVERY", "5")))
    report(request, "soak_pull_kills", stats)
    killed = sum(n for kind, n in stats["kill_points"].items() if kind != "finished-first")
    assert killed >= kills / 2, stats["kill_points"]


def test_soak_follow_kills(fast_dir, sshd, request):
    seconds = float(os.environ.get("SOAK_FOLLOW_SECONDS", "1800"))
    every = float(os.environ.get("SOAK_FOLLOW_KILL_EVERY", "30"))
    stats = run_follow_kills(fast_dir, sshd, seconds, rate=50.0, kill_every=every)
    report(request, "soak_follow_kills", stats)
    assert all(n >= 2 for n in stats["kills"].values()), stats["kills"]
