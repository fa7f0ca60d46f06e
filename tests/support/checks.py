"""Assertions about storages that tests share: "the replica reads as the master"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dirstorage_replica import storage
from dirstorage_replica.hold import PULL_LOCK
from dirstorage_replica.snapshot import PEER_LOCK
from tests.support.treeutil import tree_state

LOCK_FILES = ("misc/lock", "misc/sublock")
# ds-replica's own lock files (two pulls never overlap; pulls and serves take
# turns): bookkeeping beside the storage, created on first use and never removed
OWN_LOCK_FILES = ("misc/" + PULL_LOCK, "misc/" + PEER_LOCK)


def manifest(case_dir) -> dict:
    return json.loads((Path(case_dir) / "manifest.json").read_text())


def expected_refusal(m) -> str:
    """The phrase a refusal of a golden case must contain.  The manifest's
    phrase for `foreign` ("identity") is also met by "has no readable
    config/identity", so name both identities there."""
    if m["expect_error"] == "identity":
        return "replica identity %s does not match master identity %s" % (
            m["replica"]["identity"], m["master"]["identity"])
    return m["expect_error"]


def replica_state(path) -> dict:
    """tree_state without the pid a lock holder writes into misc/lock and
    misc/sublock (informational, as in zc.lockfile); their presence and mode
    still count.  ds-replica's own lock files do not count."""
    state = tree_state(path)
    for name in OWN_LOCK_FILES:
        state.pop(name, None)
    for name in LOCK_FILES:
        if name in state:
            kind, mode, _digest = state[name]
            state[name] = (kind, mode, None)
    return state


def assert_objects(replica_dir, objects: dict):
    """Every object loads on the replica with the serial and pickle MD5 the
    real engine reported (manifest `objects`)."""
    st = storage.Storage(replica_dir)
    assert objects, "manifest lists no objects"
    for oid_hex, expect in objects.items():
        tid, pickle = st.load(bytes.fromhex(oid_hex))
        assert storage.hex_tid(tid) == expect["serial"], oid_hex
        assert hashlib.md5(pickle).hexdigest() == expect["md5"], oid_hex


def assert_same_files(replica_dir, master_dir, relpaths):
    for rel in relpaths:
        a = (Path(master_dir) / rel).read_bytes()
        b = (Path(replica_dir) / rel).read_bytes()
        assert a == b, rel


def assert_reads_as(replica_dir, master_dir):
    """Object by object: every object the master has (current revision) reads
    the same on the replica, and the newest transactions are equal."""
    m = storage.Storage(master_dir)
    r = storage.Storage(replica_dir)
    assert r.last_tid() == m.last_tid()
    for _rel, name in m.iter_files("A"):
        if name and name.endswith(".c"):
            oid = bytes.fromhex(name[1:17])
            assert r.load(oid) == m.load(oid), name
