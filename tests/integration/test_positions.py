"""Standby positions recorded by the master's serve (issue 24), across a real
OpenSSH sshd: a pull, a version 0 pull, a clone, a follow and the command
line each leave `misc/standbys/NAME.json` on the master saying what the
standby holds; a check run leaves none."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from dirstorage_replica import storage
from dirstorage_replica.clone import clone
from dirstorage_replica.follow import Follower, FollowSettings
from dirstorage_replica.positions import horizon
from dirstorage_replica.replica import pull
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage
from tests.integration.test_ssh_pull import DS_REPLICA, master_spec, paramiko_opts

pytestmark = pytest.mark.ssh


def records(master):
    folder = master / "misc" / "standbys"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def commit(home, n=1):
    tm = SimulatedStorage(home, flush_each_commit=True).open()
    try:
        for _unused in range(n):
            tm.commit({tm.new_oid(): PICKLE_HEAD + b"x."})
    finally:
        tm.close()
    return storage.Storage(home).last_tid()


def test_a_pull_records_the_standby_under_its_name_and_a_check_records_nothing(sshd, unpack_fixture):
    d = unpack_fixture("bushy")
    master, replica = d / "master", d / "replica"
    before = storage.Storage(replica).last_tid()
    pull(master_spec(sshd, master), str(replica), paramiko_opts(sshd, standby_name="st-a", check=True))
    assert records(master) == {}
    started = time.time()
    result = pull(master_spec(sshd, master), str(replica), paramiko_opts(sshd, standby_name="st-a"))
    rec = records(master)["st-a"]
    assert (rec["kind"], rec["tid"], rec["sent_tid"]) == ("pull", storage.hex_tid(before), result["after_tid"])
    assert started - 1 <= rec["seen"] <= time.time() + 1
    pull(master_spec(sshd, master), str(replica), paramiko_opts(sshd, standby_name="st-a"))
    assert records(master)["st-a"]["tid"] == result["after_tid"]  # the next pull: it held what it was sent
    assert horizon(str(master))["horizon"]["standby"] == "st-a"


def test_a_version_0_pull_is_recorded_under_its_ssh_address(sshd, unpack_fixture):
    d = unpack_fixture("lawn")
    master, replica = d / "master", d / "replica"
    before = storage.Storage(replica).last_tid()
    pull(master_spec(sshd, master), str(replica), paramiko_opts(sshd, protocol=0, standby_name="ignored"))
    assert list(records(master)) == ["127.0.0.1"]
    assert records(master)["127.0.0.1"]["tid"] == storage.hex_tid(before)


def test_the_command_line_sends_its_host_name_or_the_name_given(sshd, unpack_fixture):
    d = unpack_fixture("chunky")
    master, replica = d / "master", d / "replica"
    ssh = ["-p", str(sshd.port), "-i", str(sshd.client_key_path), "--known-hosts", str(sshd.known_hosts_path),
           "--remote-command", DS_REPLICA]
    proc = subprocess.run([DS_REPLICA, "-q", *ssh, master_spec(sshd, master), str(replica)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    assert list(records(master)) == [host.replace(" ", "-")]
    bad = subprocess.run([DS_REPLICA, *ssh, "--standby-name", "../etc", master_spec(sshd, master), str(replica)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "bad standby name '../etc'" in bad.stderr


def test_a_clone_and_a_follow_are_recorded(sshd, tmp_path):
    master, replica = tmp_path / "master", tmp_path / "replica"
    create_storage(master, "bushy")
    first = commit(master, 2)
    clone(master_spec(sshd, master), str(replica), paramiko_opts(sshd, standby_name="st-f"))
    rec = records(master)["st-f"]
    assert (rec["kind"], rec["tid"]) == ("clone", storage.hex_tid(first))
    newer = commit(master)
    increments = []

    def enough(result):
        increments.append(result)
        raise KeyboardInterrupt()  # ends the follower as a stop would; the connection closes

    follower = Follower(master_spec(sshd, master), str(replica), paramiko_opts(sshd, standby_name="st-f"),
                        settings=FollowSettings(interval=0.05), on_increment=enough)
    thread = threading.Thread(target=lambda: pytest.raises(KeyboardInterrupt, follower.run), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert len(increments) == 1
    deadline = time.monotonic() + 20
    while records(master)["st-f"]["sent_tid"] != storage.hex_tid(newer) and time.monotonic() < deadline:
        time.sleep(0.1)  # the serve writes what it sent when it sees the standby go
    rec = records(master)["st-f"]
    assert (rec["kind"], rec["tid"], rec["sent_tid"]) == ("follow", storage.hex_tid(first), storage.hex_tid(newer))
