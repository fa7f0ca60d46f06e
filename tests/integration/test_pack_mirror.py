"""A standby packs as its master did (issue 24, packmirror.py): after a pull
or a follower sees the master's x.packed move, the standby's A/ holds the
master's files (the "previous tid" of kept transactions relinked as the
engine did), what the master set aside is set aside under the same
`-STAMP-deleted` name, x.packed is the master's, and it reads as the master.
Golden: `bushy`, whose master the real engine packed up to the replica's
newest transaction; `packed-since`, the real engine's set-aside names.
Simulated: SimulatedStorage.pack, which renames like the engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dirstorage_replica import packmirror, storage
from dirstorage_replica.clone import clone
from dirstorage_replica.follow import Follower, FollowSettings
from dirstorage_replica.info import verify
from dirstorage_replica.replica import pull
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage
from tests.support.checks import assert_reads_as, manifest


def live_files(home, relinked=True):
    """{logical name: bytes} of the storage files of A/ (x.* included); with
    relinked=False a transaction's "previous tid" is left out (the simulated
    pack, unlike the real engine's, does not relink it)."""
    st = storage.Storage(home)
    files = {name: (Path(st.a_dir) / rel).read_bytes() for rel, name in st.iter_files("A") if name is not None}
    if not relinked:
        files = {n: storage.transaction_digest(d) if n.startswith("t") else d for n, d in files.items()}
    return files


def set_aside(home):
    st = storage.Storage(home)
    return {rel for rel, name in st.iter_files("A") if name is None and rel.endswith("-deleted")}


def assert_packed_as(replica, master, relinked=False):
    assert live_files(replica, relinked) == live_files(master, relinked)
    assert storage.Storage(replica).packed_tid() == storage.Storage(master).packed_tid()
    assert_reads_as(replica, master)


def test_a_pull_packs_the_standby_as_the_real_engine_packed_its_master(unpack_fixture):
    d = unpack_fixture("bushy")
    master, replica = d / "master", d / "replica"
    m = manifest(d)
    assert m["replica"]["packed_tid"] == "0" * 16 and m["master"]["packed_tid"] == m["replica"]["last_tid"]
    result = pull(str(master), str(replica))
    assert result["pack"]["packed_tid"] == m["master"]["packed_tid"]
    assert result["pack"]["set_aside"] > 0 and result["pack"]["relinked"] > 0
    assert_packed_as(replica, master, relinked=True)  # byte for byte: the engine's relinked transactions too
    # what the standby set aside is what the master set aside, under the same names (same pack time)
    assert set_aside(replica) and set_aside(replica) <= set_aside(master)
    assert result["changed"] is True
    checked = verify(str(replica), str(master))
    assert checked["ok"] and checked["problems"] == [], checked["problems"][:3]
    again = pull(str(master), str(replica))
    assert again["pack"] is None and again["changed"] is False  # one exchange per pack, never per pull


def test_the_real_engines_set_aside_names_are_read_with_their_pack_time(unpack_fixture):
    d = unpack_fixture("packed-since")
    st = storage.Storage(d / "master")
    found = packmirror.set_aside(st)
    on_disk = sorted(p for p in (d / "master" / "A").rglob("*-deleted"))
    assert len(found) == len(on_disk) > 0
    for (name, stamp), path in zip(sorted(found, key=lambda f: storage.logical_path(st.format, f[0])),
                                   sorted(on_disk, key=str), strict=True):
        assert str(path).endswith("%s-%d-deleted" % (storage.logical_path(st.format, name), stamp))
        assert 1_600_000_000 < stamp < 2_000_000_000


def commit(tm, oids, text):
    return tm.commit({oid: PICKLE_HEAD + text for oid in oids})


@pytest.fixture
def simulated(tmp_path):
    """A simulated master (delay_delete 10 days), a standby cloned from it,
    and five transactions rewriting the same three objects since."""
    master, replica = tmp_path / "master", tmp_path / "replica"
    create_storage(master, "chunky")
    tm = SimulatedStorage(master, flush_each_commit=True).open()
    oids = [tm.new_oid() for _unused in range(3)]
    commit(tm, oids, b"v0.")
    tm.close()
    clone(str(master), str(replica))
    tm = SimulatedStorage(master, flush_each_commit=True).open()
    tids = [commit(tm, oids[: 1 + i % 3], b"v%d." % i) for i in range(1, 6)]
    tm.close()
    pull(str(master), str(replica))
    return master, replica, oids, tids


def test_a_simulated_pack_is_mirrored_at_the_next_pull_and_every_step_reads_as_the_master(simulated):
    master, replica, oids, tids = simulated
    with SimulatedStorage(master, flush_each_commit=True) as tm:
        packed = tm.pack(tids[3])
        commit(tm, oids[:1], b"after the pack.")
    assert set_aside(master)
    result = pull(str(master), str(replica))
    assert result["pack"]["set_aside"] == len(set_aside(master)) and result["pack"]["removed"] == 0
    assert storage.Storage(replica).packed_tid() == packed
    assert_packed_as(replica, master)
    assert {p.rsplit("/", 1)[-1] for p in set_aside(replica)} == {p.rsplit("/", 1)[-1] for p in set_aside(master)}


def test_an_interrupted_mirror_is_finished_by_the_next_pull(simulated, monkeypatch):
    master, replica, oids, tids = simulated
    with SimulatedStorage(master, flush_each_commit=True) as tm:
        tm.pack(tids[3])
    renames = []
    real_rename = packmirror.os.rename

    def cut_after_one(src, dst):
        if renames:
            raise KeyboardInterrupt("power cut")
        renames.append(src)
        real_rename(src, dst)

    monkeypatch.setattr(packmirror.os, "rename", cut_after_one)
    with pytest.raises(KeyboardInterrupt):
        pull(str(master), str(replica))
    monkeypatch.setattr(packmirror.os, "rename", real_rename)
    assert storage.Storage(replica).packed_tid() == storage.ZERO_TID  # x.packed goes last
    assert_reads_as(replica, master)  # reads as the master in between
    result = pull(str(master), str(replica))
    assert result["pack"]["set_aside"] == len(set_aside(master)) - 1
    assert_packed_as(replica, master)


def test_set_aside_files_are_removed_after_the_storages_delay(simulated):
    master, replica, oids, tids = simulated
    with SimulatedStorage(master, flush_each_commit=True) as tm:
        tm.pack(tids[3])
    pull(str(master), str(replica))
    st = storage.Storage(replica)
    assert packmirror.remove_expired(st, time.time()) == 0  # ten days to go
    assert packmirror.remove_expired(st, time.time() + 864000 + 5) == len(set_aside(master))
    assert set_aside(replica) == set()
    assert_reads_as(replica, master)


def test_a_follower_packs_as_its_master_between_increments(simulated):
    master, replica, oids, tids = simulated
    seen = []

    def enough(result):
        seen.append(result)
        raise KeyboardInterrupt()  # ends the follower; the connection closes

    follower = Follower(str(master), str(replica), settings=FollowSettings(interval=0.05, heartbeat=1),
                        on_increment=enough)
    thread = threading.Thread(target=lambda: pytest.raises(KeyboardInterrupt, follower.run), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while follower.st is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with SimulatedStorage(master, flush_each_commit=True) as tm:
        packed = tm.pack(tids[3])  # no new transaction: a heartbeat tells the follower
    while storage.Storage(replica).packed_tid() != packed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert storage.Storage(replica).packed_tid() == packed
    assert_packed_as(replica, master)
    with SimulatedStorage(master, flush_each_commit=True) as tm:
        commit(tm, oids[:1], b"after the pack.")
    thread.join(timeout=30)
    assert len(seen) == 1 and seen[0]["pack"] is None  # the pack was mirrored once, before
    assert_packed_as(replica, master)


@pytest.mark.ssh
def test_the_exchange_of_names_goes_over_ssh(sshd, unpack_fixture):
    from tests.integration.test_ssh_pull import master_spec, paramiko_opts

    d = unpack_fixture("bushy")
    result = pull(master_spec(sshd, d / "master"), str(d / "replica"), paramiko_opts(sshd, standby_name="st-p"))
    assert result["pack"]["packed_tid"] == manifest(d)["master"]["packed_tid"]
    assert_packed_as(d / "replica", d / "master", relinked=True)


def test_a_hot_standby_stops_its_service_once_to_pack_as_its_master(simulated):
    master, replica, oids, tids = simulated
    with SimulatedStorage(master, flush_each_commit=True) as tm:
        tm.pack(tids[3])  # and nothing new: the pull has no increment to apply

    class Hot(object):
        """A hot standby's commands, as the pull's Hold runs them (hot.HotStandby)."""
        downtime = 0.0
        stops = 0

        def stop_and_lock(self, lock, _home):
            self.stops += 1
            assert lock.acquire()

        def start(self):
            pass

    hot = Hot()
    result = pull(str(master), str(replica), hot=hot)
    assert result["transactions"] == 0 and result["pack"]["set_aside"] > 0 and hot.stops == 1
    assert_packed_as(replica, master)
    assert pull(str(master), str(replica), hot=hot)["pack"] is None and hot.stops == 1


def test_a_power_cut_at_any_disk_change_of_the_mirror_is_finished_by_the_next_pull(unpack_fixture, tmp_path,
                                                                                   monkeypatch):
    """Cut (KeyboardInterrupt) before each disk change of the mirror in turn:
    the replica reads as the master then, and the next pull finishes the
    pack, byte for byte as the real engine left the master."""
    import shutil

    d = unpack_fixture("bushy")
    real_rename, real_write = packmirror.os.rename, packmirror.write_atomic
    changes = []

    def counted(real):
        def change(*args, **kwargs):
            if len(changes) == cut_at[0]:
                raise KeyboardInterrupt("power cut")
            changes.append(args[0])
            return real(*args, **kwargs)
        return change

    cut_at = [None]
    monkeypatch.setattr(packmirror.os, "rename", counted(real_rename))
    monkeypatch.setattr(packmirror, "write_atomic", counted(real_write))
    whole = tmp_path / "whole"
    shutil.copytree(d, whole)
    pull(str(whole / "master"), str(whole / "replica"))
    total = len(changes)
    assert total >= 3  # at least a relink, a rename and x.packed
    for n in range(total):
        case = tmp_path / ("cut-%d" % n)
        shutil.copytree(d, case)
        changes.clear()
        cut_at[0] = n
        with pytest.raises(KeyboardInterrupt):
            pull(str(case / "master"), str(case / "replica"))
        assert_reads_as(case / "replica", case / "master")
        cut_at[0] = None
        result = pull(str(case / "master"), str(case / "replica"))
        assert result["pack"] is not None, n
        assert_packed_as(case / "replica", case / "master", relinked=True)
