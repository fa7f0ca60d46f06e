"""The test master writes what the real engine writes (checked against the
golden fixtures) and behaves as a running storage: journal, snapshot mode,
locks, XML-RPC toolkit, pack, and a separate process that can be killed."""

from __future__ import annotations

import base64
import collections
import configparser
import hashlib
import itertools
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest

from dirstorage_replica import errors
from dirstorage_replica import storage as S
from testbed.fakes.simulated_storage import SimulatedStorage, SnapshotRefused, create_storage
from testbed.fakes.toolkit import ToolkitServer

ROOT = Path(__file__).resolve().parents[2]
# never-packed fixture masters (the bushy case is packed; packing is checked separately)
FIXTURE_OF_FORMAT = {"bushy": "foreign", "chunky": "chunky", "lawn": "lawn", "flat": "flat"}
DELETED_RE = re.compile(r"-\d+-deleted$")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def settings_shape(path):
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read(path)
    return {section: dict(parser.items(section)) for section in parser.sections()}


def write_some(master, large=False):
    """A few transactions: new objects, updates, and one large object."""
    tids = [master.commit({0: b"root"}, description=b"initial database creation")]
    a, b = master.new_oid(), master.new_oid()
    tids.append(master.commit({0: b"root 2", a: b"a" * 300, b: b"b" * 40}, user=b"/ test", description=b"tx 1"))
    tids.append(master.commit({a: b"a 2"}, user=b"/ test", description=b"tx 2"))
    if large:
        tids.append(master.commit({b: os.urandom(300_000)}, user=b"/ test", description=b"large"))
    tids.append(master.commit({0: b"root 3", b: b"b 3"}, user=b"/ test", description=b"tx 4"))
    return tids


def check_storage(home, expect_tids=None):
    """Everything a replication tool relies on, read through the engine's layer."""
    st = S.Storage(home)
    names = []
    for rel, name in st.iter_files("A"):
        if name is None:  # only a pack may leave files that are no storage name
            assert st.packed_tid() != S.ZERO_TID and DELETED_RE.search(rel), "stray file in A/: %s" % rel
            continue
        names.append(name)
    chain = list(st.chain(stop=st.packed_tid()))  # checks every MD5 on the way
    if expect_tids is not None:
        assert [t.tid for t in reversed(chain)] == expect_tids
    revisions = collections.defaultdict(list)
    for name in names:
        kind, oid, tid = S.classify(name)
        if kind == "o":
            revisions[oid].append(tid)
    assert revisions, "no object revisions in A/"
    for oid, tids in revisions.items():
        tids.sort()
        assert st.current(oid) == tids[-1], "o%s.c is not the newest revision" % S.hex_tid(oid)
        for older, newer in itertools.pairwise(tids):
            rev = S.parse_revision(st.read(S.revision_name(oid, newer)), expect_oid=oid, expect_tid=newer)
            assert rev.prev == older
        first = S.parse_revision(st.read(S.revision_name(oid, tids[0])), expect_oid=oid, expect_tid=tids[0])
        if st.packed_tid() == S.ZERO_TID:
            assert first.prev == S.ZERO_TID
    assert st.last_oid() == max(revisions)
    return st, chain


# ------------------------------------------------------------- layout

@pytest.mark.parametrize("fmt", sorted(FIXTURE_OF_FORMAT))
def test_layout_is_the_engines(tmp_path, unpack_fixture, fmt):
    fixture = unpack_fixture(FIXTURE_OF_FORMAT[fmt]) / "master"
    home = tmp_path / "master"
    create_storage(home, fmt)
    fresh = S.Storage(home)
    assert fresh.last_tid() == S.ZERO_TID and fresh.packed_tid() == S.ZERO_TID
    with SimulatedStorage(home) as master:
        assert master.snapshot_code is None
        assert not (home / "misc" / "snapshot").exists()  # a running storage is not a snapshot
        tids = write_some(master, large=True)
    st, chain = check_storage(home, tids)

    # config: same sections and keys as the real storage, identity bytes alike
    ours, theirs = settings_shape(home / "config" / "settings"), settings_shape(fixture / "config" / "settings")
    assert {s: set(k) for s, k in ours.items()} == {s: set(k) for s, k in theirs.items()}
    assert ours["structure"] == theirs["structure"] and ours["storage"]["classname"] == "Full"
    for name in ("identity", "settings"):
        assert mode(home / "config" / name) == mode(fixture / "config" / name)
    ident = (home / "config" / "identity").read_bytes()
    assert re.fullmatch(rb"[0-9a-f]{32}", ident)
    assert re.fullmatch(rb"[0-9a-f]{32}", (fixture / "config" / "identity").read_bytes())

    # misc/: same files, modes and marker
    assert sorted(os.listdir(home / "misc")) == sorted(os.listdir(fixture / "misc"))
    for name in os.listdir(fixture / "misc"):
        assert mode(home / "misc" / name) == mode(fixture / "misc" / name), name
    assert (home / "misc" / "snapshot").read_bytes() == (fixture / "misc" / "snapshot").read_bytes() == b"shutdown"
    assert not os.listdir(home / "journal") and not os.listdir(home / "B")

    # A/: same file modes per kind, same folder modes
    def modes_by_kind(root):
        out = collections.defaultdict(set)
        for rel, name in S.Storage(root).iter_files("A"):
            out[name if name and name.startswith("x.") else S.classify(name)[0]].add(mode(root / "A" / rel))
        return out
    assert modes_by_kind(home) == modes_by_kind(fixture)  # 0640, x.packed 0644
    dirs = {mode(Path(d)) for d, _unused, _unused in os.walk(home / "A")}
    assert dirs == {mode(Path(d)) for d, _unused, _unused in os.walk(fixture / "A")}

    # header bytes at the same offsets as a fixture file of the same kind
    theirs_t = S.Storage(fixture).transaction_data(S.Storage(fixture).last_tid())
    ours_t = st.transaction_data(tids[-1])
    for data in (ours_t, theirs_t):
        txn = S.parse_transaction(data)
        assert data[16:24] == S.ZERO_TID and txn.md5 != S.EMPTY_MD5
    fx = S.Storage(fixture)
    oid = fx.transaction(fx.last_tid()).oids[0]
    theirs_o = fx.read(S.revision_name(oid, fx.current(oid)))
    ours_o = st.read(S.revision_name(S.ZERO_TID, st.current(S.ZERO_TID)))  # the root object
    for data in (ours_o, theirs_o):
        rev = S.parse_revision(data)
        assert data[16:40] == b"\0" * 24 and rev.md5 != S.EMPTY_MD5 and rev.pickle
    assert len(st.read(S.current_name(S.ZERO_TID))) == len(fx.read(S.current_name(oid))) == 8


def test_journal_folder_is_the_engines(tmp_path, unpack_fixture):
    fixture = unpack_fixture("crashed-master") / "master" / "journal"
    home = tmp_path / "m"
    create_storage(home, "bushy")
    master = SimulatedStorage(home).open()
    master.commit({0: b"root"})
    tid = master.commit({0: b"x", 5: b"y"}, user=b"/ fixture", description=b"tx")
    done = home / "journal" / ("working_%s_done" % S.hex_tid(tid))
    theirs = sorted(p for p in fixture.iterdir() if p.name.endswith("_done"))[-2]  # writes 2 objects

    def shape(folder):
        """(name with every id replaced by N, mode) of each file: t040D44.D79E9C3099 -> tN"""
        return sorted((re.sub(r"[0-9A-F]{16}", "N", n.replace(".", "", 1) if n.startswith("t") else n),
                       mode(folder / n)) for n in os.listdir(folder))
    assert shape(done) == shape(theirs)
    assert mode(done) == mode(theirs) == 0o755
    assert master.read("x.serial") == tid and master.read("x.oid") == (5).to_bytes(8, "big")
    master.close()


# ------------------------------------------------------------- journal

def test_crash_before_flush_then_recovery(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "chunky")
    master = SimulatedStorage(home).open()
    tids = write_some(master)
    master.crash()
    assert S.Storage(home).last_tid() == S.ZERO_TID  # nothing flushed
    assert len(os.listdir(home / "journal")) == len(tids)
    half = home / "journal" / "working_0000000000000001_temp"  # as in the crashed-master fixture
    half.mkdir()
    (half / "x.junk").write_bytes(b"junk")
    assert not S.Storage(home).lock().probe()[0]  # a crash leaves no lock behind
    with SimulatedStorage(home) as master:
        assert not os.listdir(home / "journal")
        assert master.last_tid == tids[-1]
    check_storage(home, tids)


def test_recovers_the_crashed_master_fixture(unpack_fixture):
    case = unpack_fixture("crashed-master")
    expect = json.loads((case / "manifest.json").read_text())["after_recovery"]
    with SimulatedStorage(case / "master") as master:
        assert S.hex_tid(master.last_tid) == expect["last_tid"]
        assert not os.listdir(case / "master" / "journal")
        for oid, obj in expect["objects"].items():
            tid, pickle = master.load(int(oid, 16))
            assert S.hex_tid(tid) == obj["serial"]
            assert obj["md5"] in (None, hashlib.md5(pickle).hexdigest())
    check_storage(case / "master")


def test_commits_wait_in_the_journal_until_a_batch_is_due(tmp_path):
    # the real engine's defaults: 200 transactions, 2,000 files or 3,600 s, looked at on commit
    home = tmp_path / "m"
    create_storage(home, "bushy")
    st = S.Storage(home)
    with SimulatedStorage(home) as master:
        assert master.thresholds == {"flush_transaction_threshold": 200, "flush_file_threshold": 2000,
                                     "flush_interval": 3600}
        tids = write_some(master)
        assert st.last_tid() == S.ZERO_TID and master.pending == len(tids)
        assert st.newest_tid() == tids[-1] and master.read("x.serial") == tids[-1]
        for i in range(200 - len(tids) - 1):
            tids.append(master.commit({0: b"r%d" % i}))
        assert st.last_tid() == S.ZERO_TID and master.pending == 199
        tids.append(master.commit({0: b"the 200th"}))
        master.wait_flushed()  # the engine's flusher thread moves the batch
        assert master.pending == 0 and st.last_tid() == tids[-1] == st.newest_tid()
    check_storage(home, tids)


def test_each_flush_threshold_comes_from_the_settings(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "lawn")
    settings = home / "config" / "settings"
    text = settings.read_text()
    for key, value in (("flush_transaction_threshold", 3), ("flush_file_threshold", 12), ("flush_interval", 1)):
        text = re.sub(r"(?m)^%s: .*$" % key, "%s: %s" % (key, value), text)
    settings.write_text(text)
    st = S.Storage(home)
    with SimulatedStorage(home) as master:
        first = master.commit({0: b"root"})        # 5 files: t, o, o.c, x.serial, x.oid
        master.commit({0: b"root 2"})               # 10 files
        assert master.pending == 2 and st.last_tid() == S.ZERO_TID
        third = master.commit({0: b"3", master.new_oid(): b"x"})  # 17 files: past 12
        master.wait_flushed()
        assert master.pending == 0 and st.last_tid() == third
        master.commit({0: b"4"})
        time.sleep(1.2)                             # older than flush_interval, but no commit looks
        assert master.pending == 1 and st.last_tid() == third
        fifth = master.commit({0: b"5"})            # this commit sees the age
        master.wait_flushed()
        assert master.pending == 0 and st.last_tid() == fifth
    with SimulatedStorage(home, flush_each_commit=True) as master:
        sixth = master.commit({0: b"6"})
        master.wait_flushed()
        assert st.last_tid() == sixth and master.pending == 0
    assert first < fifth


def test_newest_tid_counts_the_journal_and_b(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "chunky")
    st = S.Storage(home)
    with SimulatedStorage(home) as master:
        tids = write_some(master)
        master.enter_snapshot("tool")           # flushes the journal into A/
        assert st.last_tid() == tids[-1] and not st.journal_tids()
        during = [master.commit({0: b"d%d" % i}) for i in range(3)]
        assert st.newest_tid() == during[-1] and st.journal_tids() == during
        master.flush()                          # into B/, A/ stays the snapshot
        assert st.last_tid() == tids[-1] and st.newest_tid() == during[-1] and not st.journal_tids()
        master.leave_snapshot("tool")
        assert st.last_tid() == st.newest_tid() == during[-1]


def test_second_open_is_refused_while_locked(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "lawn")
    with SimulatedStorage(home):
        with pytest.raises(errors.Busy):
            SimulatedStorage(home).open()
        assert S.Storage(home).sublock().probe()[0]


# ------------------------------------------------------------- snapshot

def test_snapshot_mode_freezes_a_and_recombines(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "bushy")
    master = SimulatedStorage(home, journal={"flush_transaction_threshold": 2}).open()
    tids = write_some(master)
    master.enter_snapshot("tool-1")
    st = S.Storage(home)
    assert (home / "misc" / "snapshot").read_bytes() == b"user/tool-1"
    frozen = st.last_tid()
    assert frozen == tids[-1]  # entering flushed the journal into A/
    with pytest.raises(SnapshotRefused):
        master.enter_snapshot("tool-2")

    sublock = st.sublock()
    assert sublock.acquire()  # released by the storage
    for i in range(5):
        tids.append(master.commit({0: b"during %d" % i}))
    master.flush()
    assert st.last_tid() == frozen and list(st.chain())[0].tid == frozen
    assert st.read("x.serial", "B") == tids[-1] and master.read("x.serial") == tids[-1]
    assert master.load(0) == (tids[-1], b"during 4")

    with pytest.raises(SnapshotRefused):  # the tool still holds misc/sublock
        master.leave_snapshot("tool-1")
    assert master.snapshot_code == "user/tool-1" and (home / "misc" / "snapshot").exists()
    sublock.release()
    with pytest.raises(SnapshotRefused):
        master.leave_snapshot("someone-else")
    assert sublock.acquire()  # a wrong code did not take the sublock away
    sublock.release()

    master.leave_snapshot("tool-1")
    assert master.snapshot_code is None and not (home / "misc" / "snapshot").exists()
    assert not os.listdir(home / "B") and st.last_tid() == tids[-1]
    assert not sublock.acquire()  # the storage holds it again
    master.close()
    check_storage(home, tids)


def test_close_in_snapshot_mode_keeps_a_frozen(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "flat")
    master = SimulatedStorage(home).open()
    tids = write_some(master)
    master.enter_snapshot("t")
    tids.append(master.commit({0: b"late"}))
    master.close()
    assert S.Storage(home).last_tid() == tids[-2]
    assert (home / "misc" / "snapshot").read_bytes() == b"user/t"
    with SimulatedStorage(home):  # reopening recombines B/
        pass
    check_storage(home, tids)


def test_xmlrpc_toolkit(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "lawn")
    master = SimulatedStorage(home).open()
    write_some(master)
    server = ToolkitServer(master, username="zope", password="secret")
    try:
        body = xmlrpc.client.dumps(("c1",), "enterSnapshot").encode()
        for auth in (None, "zope:wrong"):
            request = urllib.request.Request(server.url, data=body, headers={"Content-Type": "text/xml"})
            if auth:
                request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, timeout=10)
            assert err.value.code == 401
        assert server.unauthorized == 2 and not master.in_snapshot

        proxy = xmlrpc.client.ServerProxy(server.url.replace("http://", "http://zope:secret@"), allow_none=True)
        assert proxy.enterSnapshot("c1") is None
        assert master.snapshot_code == "user/c1" and proxy.currentSnapshotCode() == "user/c1"
        with pytest.raises(xmlrpc.client.Fault) as fault:
            proxy.enterSnapshot("c2")
        assert fault.value.faultCode == -1 and "snapshot already in use" in fault.value.faultString
        with S.Storage(home).sublock():
            with pytest.raises(xmlrpc.client.Fault):
                proxy.leaveSnapshot("c1")
        proxy.leaveSnapshot("c1")
        assert not master.in_snapshot
        assert server.calls == {"enterSnapshot": 2, "leaveSnapshot": 2, "currentSnapshotCode": 1}

        server.write_snapshot_conf(home, ["nodirect"])
        conf = (home / "config" / "snapshot.conf").read_text().splitlines()
        assert conf == ["http %s toolkit.access" % server.url, "nodirect"]
        assert (home / "config" / "toolkit.access").read_text() == "zope:secret\n"
    finally:
        server.stop()
        master.close()


# ------------------------------------------------------------- pack

def assert_packed_like_the_engine(home):
    """What the real engine's pack leaves in A/ (P = x.packed): per object at
    most one revision at or before P, older ones renamed <path>-<epoch>-deleted;
    a transaction file at or before P survives exactly when a surviving revision
    belongs to it; surviving files at or before P and x.packed carry the mark
    bit (0740)."""
    st = S.Storage(home)
    packed = st.packed_tid()
    kept, gone = collections.defaultdict(set), collections.defaultdict(set)  # kind -> {(id, tid)}
    for rel, name in st.iter_files("A"):
        deleted = name is None
        if deleted:
            assert DELETED_RE.search(rel), rel
            name = S.logical_name(st.format, DELETED_RE.sub("", rel))
        kind, ident, tid = S.classify(name)
        if kind == "t":
            ident, tid = None, ident
        elif kind != "o":
            continue
        (gone if deleted else kept)[kind].add((ident, tid))
        if not deleted and tid <= packed:
            assert mode(st.a_dir + "/" + rel) == 0o740, rel
    newest_old = {}
    for oid, tid in kept["o"]:
        if tid <= packed:
            assert oid not in newest_old, "two revisions at or before the pack for %s" % S.hex_tid(oid)
            newest_old[oid] = tid
    assert gone["o"] and all(tid < newest_old[oid] for oid, tid in gone["o"])
    kept_revision_tids = {tid for _unused, tid in kept["o"]}
    assert all(tid in kept_revision_tids for _unused, tid in kept["t"] if tid <= packed)
    assert gone["t"] and not any(tid in kept_revision_tids for _unused, tid in gone["t"])
    assert mode(st.path("x.packed")) == 0o740


def test_pack_like_the_engine(tmp_path, unpack_fixture):
    assert_packed_like_the_engine(unpack_fixture("bushy") / "master")  # the rule holds for the real engine
    home = tmp_path / "m"
    create_storage(home, "bushy")
    master = SimulatedStorage(home).open()
    tids = write_some(master) + write_some(master)
    pack_at = tids[6]
    assert master.pack(S.tid_later_than(pack_at, pack_at)) == pack_at  # the newest transaction up to then
    assert master.pack(S.ZERO_TID) == pack_at  # nothing older to pack
    assert not master.in_snapshot and not (home / "misc" / "snapshot").exists()
    tids.append(master.commit({0: b"after pack"}))
    master.close()

    st, chain = check_storage(home)
    assert st.packed_tid() == pack_at
    assert [t.tid for t in reversed(chain)] == [t for t in tids if t > pack_at]
    assert_packed_like_the_engine(home)
    assert mode(st.path(S.transaction_name(st.last_tid()))) == 0o640  # written after the pack

    with SimulatedStorage(home) as again:
        again.enter_snapshot("x")
        with pytest.raises(SnapshotRefused):  # pack needs A/, a tool holds it
            again.pack(pack_at)
        again.leave_snapshot("x")


def test_pack_at_keeps_min_pack_time_and_the_newest_transaction_as_the_engine_does(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "bushy")
    with SimulatedStorage(home) as master:
        tids = write_some(master)
        assert master.pack_at(time.time()) == S.ZERO_TID  # all of it is younger than min_pack_time (600 s)
    settings = home / "config" / "settings"
    settings.write_text(settings.read_text().replace("min_pack_time: 600", "min_pack_time: 1"))
    time.sleep(1.2)
    with SimulatedStorage(home) as master:
        assert master.pack_at(time.time() + 3600) == tids[-1]  # never past the newest transaction


# ------------------------------------------------------------- threads and processes

def test_writer_thread_and_snapshot(tmp_path):
    home = tmp_path / "m"
    create_storage(home, "chunky")
    master = SimulatedStorage(home).open()
    master.start_writer(100, large_fraction=0.1, large=(20_000, 60_000), seed=3)
    time.sleep(0.3)
    master.enter_snapshot("w")
    frozen = S.Storage(home).last_tid()
    time.sleep(0.3)
    assert S.Storage(home).last_tid() == frozen < master.last_tid
    master.leave_snapshot("w")
    written = master.stop_writer()
    assert written > 10
    master.close()
    st, chain = check_storage(home)
    assert len(chain) == written


def run_master(home, *args):
    proc = subprocess.Popen([sys.executable, "-m", "testbed.fakes.simulated_storage", str(home), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[0] == "READY", line
    return proc, line[1]


def test_process_sigterm_is_a_clean_close_and_sigkill_a_crash(tmp_path):
    home = tmp_path / "m"
    proc, url = run_master(home, "--create", "lawn", "--rate", "50", "--xmlrpc-port", "0",
                           "--user", "u", "--password", "p")
    proxy = xmlrpc.client.ServerProxy(url.replace("http://", "http://u:p@"), allow_none=True)
    proxy.enterSnapshot("proc")
    assert (home / "misc" / "snapshot").read_bytes() == b"user/proc"
    proxy.leaveSnapshot("proc")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert (home / "misc" / "snapshot").read_bytes() == b"shutdown"
    assert not os.listdir(home / "journal")
    _unused, chain = check_storage(home)
    assert len(chain) > 3

    proc, url = run_master(home, "--rate", "100")
    assert url == "-"
    time.sleep(0.4)
    proc.kill()
    proc.wait(timeout=20)
    assert not (home / "misc" / "snapshot").exists() and os.listdir(home / "journal")
    with SimulatedStorage(home) as master:
        assert master.last_tid > chain[0].tid
    check_storage(home)
