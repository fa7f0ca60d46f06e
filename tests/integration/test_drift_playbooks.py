"""playbooks/drift.yml, imported first by every playbook, on a fleet of
local-connection hosts (real storages, real ansible-playbook, no ssh).

- A transaction the master commits and its follower applies between the
  check's reads is not drift (CI saw pack.yml stop with "standby1 holds
  transaction …, newer than its master" while the master wrote on and
  standby1 followed). A callback
  (testbed/harness/callback_plugins/run_at_task_start.py) commits on the
  master and pulls into the standby just before the standby's storage is
  read, with one fork so that the hosts take their turn in inventory order,
  the master first: had the master been read first, it would look older.
- Every playbook stops on drift, naming it, and leaves every storage as it
  was: make test runs each playbook once and each kind of drift at least
  once; make soak (tests/soak/test_drift_soak.py) every pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dirstorage_replica import fleet_marks
from dirstorage_replica.clone import clone
from dirstorage_replica.storage import Storage, hex_tid
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage
from tests.integration.test_modules import BIN, ENV, ROOT
from tests.integration.test_reliability import _stopped_master
from tests.support.checks import assert_reads_as, replica_state

COMMIT_AND_FOLLOW = """\
import os, subprocess, sys
sys.path.insert(0, %r)
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage
master, standby = sys.argv[1:]
with SimulatedStorage(master) as tm:
    tm.commit({tm.new_oid(): PICKLE_HEAD + os.urandom(500) + b"."})
subprocess.run([%r, "-q", master, standby], check=True)
"""
MASTER_ADDR = "127.0.0.1"
STANDBYS = {"standby1": "127.0.0.2", "standby2": "127.0.0.3"}
#: every playbook that imports drift.yml, with the extra vars it needs to get that far (the rejoin host may be
#: ahead of its master: that is why it rejoins, so it is never the host that drifts here)
PLAYBOOKS = {"pack.yml": ["-e", "pack_days=7"], "promote.yml": ["-e", "promote_host=standby1"],
             "provision.yml": [], "rejoin.yml": ["-e", "rejoin_host=standby1"], "replicate.yml": [],
             "schedule.yml": [], "verify.yml": []}


def local_host(addr, **hostvars):
    return dict(ansible_connection="local", ansible_python_interpreter=sys.executable, ansible_host=addr, **hostvars)


class LocalFleet:
    """A master storage and two standbys cloned from it, each a host of the
    inventory on its own loopback address, all reached by the local connection."""

    def __init__(self, base: Path):
        self.base = base
        self.master = base / "master"
        self.standbys = {name: base / name for name in STANDBYS}
        _stopped_master(self.master, 3)
        for path in self.standbys.values():
            clone(str(self.master), str(path))

    def paths(self):
        return [self.master, *self.standbys.values()]

    def inventory(self, master_path=None):
        master_path = str(master_path or self.master)
        standbys = {name: local_host(addr, standby_storages=[{
            "name": "main", "path": str(self.standbys[name]), "master_host": "master", "master_path": master_path}])
            for name, addr in STANDBYS.items()}
        inv = {"all": {"children": {
            "dirstorage_masters": {"hosts": {"master": local_host(
                MASTER_ADDR, master_user=os.environ.get("USER", "root"),
                master_storages=[{"name": "main", "path": master_path}])}},
            "dirstorage_standbys": {"hosts": standbys},
        }}}  # fmt: skip
        path = self.base / "hosts.yml"
        path.write_text(yaml.safe_dump(inv))
        return path

    def playbook(self, name, *extra, env=None, inventory=None):
        argv = [str(BIN / "ansible-playbook"), "-i", str(inventory or self.inventory()), str(ROOT / "playbooks" / name),
                *extra]
        return subprocess.run(argv, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=300,
                              check=False)


@pytest.fixture
def fleet(tmp_path):
    return LocalFleet(tmp_path)


def test_a_commit_the_follower_applies_between_the_reads_is_not_drift(fleet):
    master, standby = fleet.master, fleet.standbys["standby1"]
    before = Storage(str(master)).newest_tid()
    script = fleet.base / "commit_and_follow.py"
    script.write_text(COMMIT_AND_FOLLOW % (str(ROOT), str(BIN / "ds-replica")))
    argv = [sys.executable, str(script), str(master), str(standby)]
    env = dict(ENV, ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "testbed" / "harness" / "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="run_at_task_start",
               DS_AT_TASK_START=json.dumps({"host": "standby1", "task": "Read what each", "argv": argv}))
    r = fleet.playbook("drift.yml", "-f", "1", env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # the master did commit during the run, and the standby did apply it before it was read
    after = Storage(str(master)).newest_tid()
    assert after > before
    assert hex_tid(Storage(str(standby)).last_tid()) == hex_tid(after)
    assert_reads_as(standby, master)


# -- each kind of drift: make it, return the inventory and the line the check must print -----------------
def promoted_standby(f):
    one = f.standbys["standby1"]
    subprocess.run([str(BIN / "ds-replica"), "promote", str(one)], check=True, capture_output=True, timeout=60)
    return f.inventory(), "standby1: storage main (%s) was promoted to master at " % one


def follows_another_master(f):
    one = f.standbys["standby1"]
    fleet_marks.set_upstream(str(one), "zope@127.0.0.9:/srv/zodb/other")
    return f.inventory(), ("standby1: storage main (%s) follows zope@127.0.0.9:/srv/zodb/other, the inventory says "
                           "%s:%s" % (one, MASTER_ADDR, f.master))


def reseeded_standby_listed_as_master(f):
    fleet_marks.set_upstream(str(f.master), "zope@%s:%s" % (STANDBYS["standby1"], f.standbys["standby1"]))
    return f.inventory(), ("master: storage main (%s) is a standby of zope@%s:%s since it was re-seeded"
                           % (f.master, STANDBYS["standby1"], f.standbys["standby1"]))


def ahead_of_its_master(f):
    two = f.standbys["standby2"]
    with SimulatedStorage(str(two)) as tm:  # written on the standby: the inventory's master is not its master
        tm.commit({tm.new_oid(): PICKLE_HEAD + b"split brain."})
    ahead, behind = (hex_tid(Storage(str(p)).newest_tid()) for p in (two, f.master))
    return f.inventory(), ("standby2: storage main (%s) holds transaction %s, newer than its master master (%s)"
                           % (two, ahead, behind))


DRIFTS = [promoted_standby, follows_another_master, reseeded_standby_listed_as_master, ahead_of_its_master]


def assert_stops_on_drift(fleet, playbook, make_drift):
    inventory, line = make_drift(fleet)
    before = {p: replica_state(p) for p in fleet.paths()}
    cron_before = sorted(os.listdir("/etc/cron.d")) if os.path.isdir("/etc/cron.d") else []
    r = fleet.playbook(playbook, *PLAYBOOKS[playbook], inventory=inventory)
    assert r.returncode != 0, r.stdout[-4000:]
    assert "inventory drift: " in r.stdout and line in r.stdout, r.stdout[-4000:]
    # the run ended in the drift play: no task of the playbook's own plays ran
    played = [ln.split("]")[0] + "]" for ln in r.stdout.splitlines() if ln.startswith("PLAY [")]
    assert played == ["PLAY [Inventory drift -- the storages against the inventory]"], r.stdout[-4000:]
    assert {p: replica_state(p) for p in fleet.paths()} == before
    assert (sorted(os.listdir("/etc/cron.d")) if os.path.isdir("/etc/cron.d") else []) == cron_before


@pytest.mark.parametrize("playbook", sorted(PLAYBOOKS))
def test_every_playbook_stops_on_drift_and_changes_nothing(fleet, playbook):
    """Each playbook once, the kinds of drift in turn (every kind at least once)."""
    make_drift = DRIFTS[sorted(PLAYBOOKS).index(playbook) % len(DRIFTS)]
    assert_stops_on_drift(fleet, playbook, make_drift)


def test_promote_storage_chooses_among_a_hosts_standby_storages(fleet):
    """promote.yml on a host with two standby storages: without -e promote_storage it names them and
    stops, as it does for a name the host does not have; with it, the plan is that storage's."""
    other = fleet.base / "standby1-other"
    clone(str(fleet.master), str(other))
    inv = yaml.safe_load(fleet.inventory().read_text())
    inv["all"]["children"]["dirstorage_standbys"]["hosts"]["standby1"]["standby_storages"].append(
        {"name": "other", "path": str(other), "master_host": "master", "master_path": str(fleet.master)})
    inventory = fleet.base / "two-storages.yml"
    inventory.write_text(yaml.safe_dump(inv))
    before = {p: replica_state(p) for p in (*fleet.paths(), other)}
    for extra, line in (([], "standby1 has 2 standby storages (it has: main, other): choose one with "
                             "-e promote_storage=NAME"),
                        (["-e", "promote_storage=nosuch"], "standby1 has no standby storage named nosuch (it has: "
                                                           "main, other): choose one with -e promote_storage=NAME")):
        r = fleet.playbook("promote.yml", "-e", "promote_host=standby1", *extra, "--check", inventory=inventory)
        assert r.returncode != 0 and line in r.stdout, r.stdout[-4000:]
        assert "promote standby1 storage" not in r.stdout
    r = fleet.playbook("promote.yml", "-e", "promote_host=standby1", "-e", "promote_storage=other", "--check",
                       inventory=inventory)
    # the plan is that storage's (the plays after it need the replica accounts, which this fleet has not:
    # test_e2e_failover.py runs them)
    assert "promote standby1 storage other (%s, newest transaction " % other in r.stdout, r.stdout[-4000:]
    assert "promote standby1 storage main" not in r.stdout
    assert {p: replica_state(p) for p in (*fleet.paths(), other)} == before
