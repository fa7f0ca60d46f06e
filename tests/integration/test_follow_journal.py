"""`ds-replica follow` from a master that journals as the real engine does:
its newest commits wait in journal/ (A/x.serial does not move) until a batch
of 200 transactions, 2,000 files or an hour is flushed.  The follower must
bring each commit within seconds all the same, on a quiet master."""

from __future__ import annotations

import threading
import time

from dirstorage_replica import storage
from dirstorage_replica.clone import clone
from dirstorage_replica.follow import Follower, FollowSettings
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage
from testbed.fakes.toolkit import ToolkitServer
from tests.support.checks import assert_reads_as


class Enough(BaseException):
    """Ends the follower from its hook."""


def test_a_quiet_masters_commits_arrive_within_seconds_while_still_in_its_journal(tmp_path):
    home, replica = tmp_path / "master", tmp_path / "replica"
    create_storage(home, "bushy")
    tm = SimulatedStorage(home).open()  # the engine's thresholds: nothing is flushed in this test
    toolkit = ToolkitServer(tm)
    toolkit.write_snapshot_conf(str(home), extra_lines=["nodirect"])
    tm.commit({tm.new_oid(): PICKLE_HEAD + b"first."})
    clone(str(home), str(replica))  # snapshot mode flushed the journal: the copy has the first commit
    arrived = {}

    def on_increment(result):
        arrived[result["after_tid"]] = time.time()
        if len(arrived) >= 3:
            raise Enough()

    follower = Follower(str(home), str(replica), settings=FollowSettings(interval=0.1), on_increment=on_increment)
    thread = threading.Thread(target=lambda: _run(follower), daemon=True)
    thread.start()
    committed = {}
    try:
        for i in range(3):
            time.sleep(1.0)
            tid = tm.commit({0: PICKLE_HEAD + b"quiet %d." % i})
            committed[storage.hex_tid(tid)] = time.time()
            deadline = time.monotonic() + 10
            while storage.hex_tid(tid) not in arrived and time.monotonic() < deadline:
                time.sleep(0.02)
        thread.join(timeout=10)
    finally:
        toolkit.stop()
        tm.close()
    lags = {tid: arrived.get(tid, float("inf")) - at for tid, at in committed.items()}
    assert all(lag < 2.0 for lag in lags.values()), lags
    assert not thread.is_alive()
    assert_reads_as(replica, home)


def _run(follower):
    try:
        follower.run()
    except Enough:
        pass
