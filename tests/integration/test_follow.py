"""`ds-replica follow` in-process (engine API), where the command line
cannot reach: a hot standby's stop and start (its read-only service
stopped around each apply) and `min_apply_interval`; and a master too old to
follow."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from dirstorage_replica import storage
from dirstorage_replica.clone import clone
from dirstorage_replica.follow import Follower, FollowSettings
from dirstorage_replica.info import storage_info
from dirstorage_replica.replica import pull
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage
from testbed.fakes.toolkit import ToolkitServer
from testbed.harness.reliability import DS_REPLICA
from tests.support.checks import assert_reads_as


class Enough(BaseException):
    """Ends the follower from its hook (as a stop would, without signals)."""


def test_a_hot_standby_is_applied_at_most_once_per_min_apply_interval(tmp_path):
    home, replica = tmp_path / "master", tmp_path / "replica"
    create_storage(home, "bushy")
    tm = SimulatedStorage(home).open()
    toolkit = ToolkitServer(tm)
    toolkit.write_snapshot_conf(str(home), extra_lines=["nodirect"])
    tm.commit({tm.new_oid(): PICKLE_HEAD + b"first."})
    clone(str(home), str(replica))
    cloned = storage.Storage(replica).last_tid()
    tm.start_writer(40)
    applies = []

    class Hot(object):
        """A hot standby's commands, as the follower's Hold runs them (hot.HotStandby)."""
        downtime = 0.0
        stopped = False

        def stop_and_lock(self, lock, _home):
            applies.append(time.monotonic())  # the read-only service would be stopped here
            self.stopped = lock.acquire()

        def start(self):
            if self.stopped:  # ... and started again here
                self.stopped = False
                if len(applies) >= 4:
                    raise Enough()

    results = []
    follower = Follower(str(home), str(replica), settings=FollowSettings(interval=0.05, min_apply_interval=1.0),
                        hot=Hot(), on_increment=results.append)
    ended = []

    def run():
        try:
            follower.run()
        except Enough:
            ended.append("enough")

    thread = threading.Thread(target=run, daemon=True)
    try:
        thread.start()
        thread.join(timeout=60)
    finally:
        tm.stop_writer()
    assert ended == ["enough"]
    gaps = [b - a for a, b in zip(applies, applies[1:], strict=False)]
    assert len(applies) == 4 and all(g >= 0.95 for g in gaps), gaps  # 40 tx/s, yet one apply per second
    # what came meanwhile was received while the service served, and applied in one stop
    assert max(r["increments"] for r in results) >= 2, [r["increments"] for r in results]
    assert all(r["apply_lag_seconds"] < 3.0 for r in results), [r["apply_lag_seconds"] for r in results]
    # the replica holds, past what the clone gave it, the master's transactions: those of the three
    # applies reported and of the fourth (ended by Enough before its report), none damaged
    st = storage.Storage(replica)
    assert st.journal_entries() == [], st.journal_entries()
    applied = [txn.tid for txn in st.chain(stop=cloned)]
    assert len(applied) > sum(r["transactions"] for r in results) > 0, (len(applied), results)
    assert storage.hex_tid(st.last_tid()) > results[-1]["after_tid"]
    master = storage.Storage(home)
    assert all(st.transaction_md5(tid) == master.transaction_md5(tid) for tid in applied)
    toolkit.stop()
    tm.close()
    pull(str(home), str(replica))  # the replica was at a transaction of this master: it catches up exactly
    assert_reads_as(replica, home)


OLD_MASTER = """\
import sys
sys.stdin.buffer.readline()  # `replica request 2`: refused at the first line, as ds-replica 0.1 does
sys.stderr.write("ds-replica serve: unsupported request version request 2: this master speaks versions 0 and 1\\n")
sys.exit(1)
"""


def test_a_master_too_old_to_follow_stops_the_follower_with_what_to_do(tmp_path):
    home, replica = tmp_path / "master", tmp_path / "replica"
    create_storage(home, "bushy")
    with SimulatedStorage(home) as tm:
        tm.commit({tm.new_oid(): PICKLE_HEAD + b"first."})
    clone(str(home), str(replica))
    old = tmp_path / "old_master_ssh.py"
    old.write_text(OLD_MASTER)
    proc = subprocess.run([DS_REPLICA, "follow", "-e", "%s %s" % (sys.executable, old), "old.invalid:%s" % home,
                           str(replica)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1  # at once: retrying cannot teach the master a new version
    assert proc.stderr.splitlines() == [
        "ds-replica: the master does not speak request version 2, which following needs (master refused: "
        "unsupported request version request 2: this master speaks versions 0 and 1); upgrade ds-replica on the "
        "master, or schedule pulls with cron instead"]
    assert storage_info(str(replica))["follower"]["state"] == "stopped"
