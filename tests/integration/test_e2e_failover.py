"""End to end: the day the master dies (issue 11), with the roles and playbooks.

A master (127.0.0.9) with writes going on and three standbys (127.0.0.10,
127.0.0.11, 127.0.0.12), standby2 further behind, standby3 written once
while it was a standby (diverged); each host a container of its own with its
own accounts, groups and cron files, and its own OpenSSH sshd on its address
(testbed/harness/e2e.py's `Fleet`), the simulated storage process serving
snapshot mode over XML-RPC on the host that serves.

- the master host goes down (its storage process stops, and its address
  refuses ssh: its sshd stops listening and ends the sessions open to it),
  after writing 2 transactions no standby pulled;
- promote.yml for standby2 is refused and names standby1; --check for
  standby1 changes nothing; promote.yml for standby1 promotes it and standby2
  follows it; standby3 is reported diverged and left alone (no -e reseed),
  and the operator takes it out of the inventory;
- until the inventory is changed every playbook stops, naming the change (a
  promoted standby; once the old master is back, a replaced master; once it
  is re-seeded, a standby listed as master);
- writes go on at standby1 (the storage process runs there now, with the
  master role's snapshot.conf) and reach standby2;
- the old master comes back; rejoin.yml --check changes nothing; rejoin.yml
  keeps its 2 transactions aside, lists them, and re-seeds it from standby1;
  all three read the same as standby1, object by object.
- then a planned switchover back to the old master, after standby2 was
  written while it was a standby (so it holds the newest tid, but diverged):
  promote.yml with promote_force stops standby1's writes with the storage's
  stop_command, pulls once more, promotes the old master, whose
  promote_command fails (one line, at the end of the run); standby2 is
  reported diverged and, with -e reseed=true, re-seeded from it, its
  transaction kept aside (standby1, the master it replaced, would rejoin
  with rejoin.yml, as above).

Root only (containers, real accounts, /etc/cron.d).
"""

from __future__ import annotations

import copy
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dirstorage_replica import fleet_marks, keep_aside, storage
from testbed.fakes.toolkit import TOOLKIT_PATH
from testbed.harness.e2e import Fleet, last_tid, recap_counts, task_outcomes
from testbed.harness.sshd import free_port
from tests.support.checks import assert_reads_as, replica_state

MASTER_IP = "127.0.0.9"
STANDBYS = {"standby1": ("127.0.0.10", "dsfoone", "fo_one"), "standby2": ("127.0.0.11", "dsfotwo", "fo_two"),
            "standby3": ("127.0.0.12", "dsfothree", "fo_three")}
OLD_NAME = "fo_old"  # the old master's storage, once it is a standby

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (local accounts, /etc/cron.d)"),  # ci-runs: CI is root
]


@pytest.fixture(scope="module")
def fleet():
    # six playbooks apply the roles to four hosts: the package tasks run in test_systemd.py's container
    f = Fleet("dsfo", MASTER_IP, STANDBYS, own_paths=True, master_storage="fo_main", role_packages=False)
    f.s1_port = free_port()  # standby1's toolkit once it is the master
    f.s1_proc = None
    try:
        with f.running():
            try:
                yield f
            finally:  # before the fleet removes the accounts: userdel refuses an account still running
                Fleet.stop_storage(f.s1_proc)
    finally:
        for name in (OLD_NAME,):  # on loopback (in a container, it went with the container)
            Path(f"/etc/cron.d/ds-replica-{name}").unlink(missing_ok=True)
            Path(f"/run/lock/ds-replica-{name}.lock").unlink(missing_ok=True)


def snapshot_methods(f, port):
    return [{"http": {"url": "http://127.0.0.1:%d%s" % (port, TOOLKIT_PATH), "user": "replica",
                      "password": f.password}}, "direct"]


def as_master_vars(f, host, user, name, path, port, stop_command=None):
    """Host variables of inventory host `host` that serves `path` as a master."""
    return {**f.master_access_vars(host, user),
            "master_storages": [{"name": name, "path": str(path), "snapshot": snapshot_methods(f, port),
                                 "stop_command": stop_command or "touch %s/stopped-flag" % Path(path).parent}]}


def first_inventory(f):
    """The inventory as provisioned; standby1 knows how it would serve once promoted."""
    def hook(inv):
        hosts = inv["all"]["children"]
        s1 = hosts["dirstorage_standbys"]["hosts"]["standby1"]
        s1.update({k: v for k, v in as_master_vars(f, "standby1", "dsfoone", "fo_main", f.replica("standby1"),
                                                   f.s1_port).items() if k != "master_storages"})
        s1["standby_storages"][0].update(snapshot=snapshot_methods(f, f.s1_port),
                                         promote_command="touch %s/promoted-flag" % f.replica("standby1").parent)
    return hook


def after_failover_inventory(f, old_master_listed_as="standby", promote_command=None, stop_command=None):
    """What the operator writes after the failover: standby1 the master (its storage's `stop_command`, if
    given), standby2 and the old master its standbys (the old master's storage with `promote_command`)."""
    def hook(inv):
        hosts = inv["all"]["children"]
        old = copy.deepcopy(hosts["dirstorage_masters"]["hosts"]["master"])
        s1 = hosts["dirstorage_standbys"]["hosts"].pop("standby1")
        s1_vars = {"ansible_host": s1["ansible_host"],
                   **as_master_vars(f, "standby1", "dsfoone", "fo_main", f.replica("standby1"), f.s1_port,
                                    stop_command)}
        hosts["dirstorage_masters"]["hosts"] = {"standby1": s1_vars}
        hosts["dirstorage_standbys"]["hosts"].pop("standby3")  # diverged: set aside by the operator
        s2 = hosts["dirstorage_standbys"]["hosts"]["standby2"]
        s2["standby_storages"][0].update(master_host="standby1", master_path=str(f.replica("standby1")))
        if old_master_listed_as == "master":
            hosts["dirstorage_masters"]["hosts"]["master"] = old
        else:
            hosts["dirstorage_standbys"]["hosts"]["master"] = {
                "ansible_host": MASTER_IP, "standby_user": f.master_user,
                "master_host_key_file": old["master_host_key_file"],
                "master_authorized_keys_file": old["master_authorized_keys_file"],
                "standby_storages": [{"name": OLD_NAME, "path": str(f.master_home), "master_host": "standby1",
                                      "master_path": str(f.replica("standby1")),
                                      "snapshot": snapshot_methods(f, f.xmlrpc_port)}]}
            if promote_command:
                hosts["dirstorage_standbys"]["hosts"]["master"]["standby_storages"][0]["promote_command"] = \
                    promote_command
    return hook


SLOW = 1200  # seconds a playbook may take on a loaded 2-core machine


def outside_misc(path):
    return outside_misc_of(replica_state(path))


def outside_misc_of(state):
    """A replica_state without misc/ and the files a re-pointing rewrites (config/upstream, snapshot.conf)."""
    return {k: v[2] for k, v in state.items()
            if not k.startswith("misc") and k != "config/upstream" and not k.startswith("config/snapshot")}


def stop_writer(pid, flag):
    """A stop_command that stops the storage process `pid` (SIGTERM) and waits until it has ended
    (60 s at most, else it fails), then touches `flag`."""
    return ("kill %d && for i in $(seq 600); do kill -0 %d 2>/dev/null || break; sleep 0.1; done; "
            "! kill -0 %d 2>/dev/null && touch %s" % (pid, pid, pid, flag))


def assert_rejoin_plan(proc, f):
    """rejoin.yml --check for the old master: the plan, host by host. The old master would get a
    key pair for standby1 and be re-seeded from it (no pull: check mode); standby2 is left alone.
    (standby1 shows no change: check mode creates no key pair, so it has no key to authorize.)"""
    recap = recap_counts(proc.stdout)
    assert {"master", "standby1", "standby2"} <= set(recap), recap
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in recap.values()), recap
    assert recap["standby2"]["changed"] == 0 and recap["master"]["changed"] > 0, recap
    reseed = task_outcomes(proc.stdout, "Re-seed each storage (clone --delta)")
    assert [(status, host) for status, host, _item in reseed] == [("changed", "master")], reseed
    label = reseed[0][2]
    assert label.startswith(OLD_NAME + ": ") and str(f.replica("standby1")) in label, label
    assert label.endswith(" -> %s" % f.master_home), label
    pulls = task_outcomes(proc.stdout, "Pull once")
    assert {(status, host) for status, host, _item in pulls} == {("skipping", "master")}, pulls
    keys = task_outcomes(proc.stdout, "Create one key pair per storage")
    assert {(status, host) for status, host, _item in keys} == {("changed", "master")}, keys


def test_failover_promote_follow_rejoin(fleet):
    f = fleet
    s1, s2, s3 = f.replica("standby1"), f.replica("standby2"), f.replica("standby3")
    f.inventory_hook = first_inventory(f)
    f.playbook("provision.yml", timeout=SLOW)

    # -- writes go on; standby2 pulls less often than standby1; standby3 is written on once ------
    f.write_more(seconds=1.0, seed=2)
    f.replicate(timeout=SLOW)
    [split] = f.commit_on(s3, "dsfothree", ["written on standby3"])
    f.write_more(seconds=1.0, seed=3)
    f.replicate("--limit", "standby1", timeout=SLOW)
    assert last_tid(s1) == last_tid(f.master_home) > last_tid(s2)
    assert last_tid(s1) > split == last_tid(s3)  # standby1 holds the newest transaction, standby3 diverged

    # -- the master writes 2 transactions no standby sees, then its host goes down -----------------
    f.stop_master()
    lost = f.commit_on(f.master_home, f.master_user, ["late order 1", "late order 2"])
    assert len(lost) == 2
    f.master_host_down()
    refused = subprocess.run(f.sshd.ssh_argv("true", user="root", host=MASTER_IP), capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 255 and "Connection refused" in refused.stderr, refused.stderr

    # -- promote.yml for the standby that is behind: refused, names standby1 ---------------------
    before = {h: replica_state(f.replica(h)) for h in STANDBYS}
    refused = f.playbook("promote.yml", "-e", "promote_host=standby2", check_rc=False, timeout=SLOW)
    assert refused.returncode != 0
    assert "promote standby1 instead" in refused.stdout, refused.stdout[-3000:]
    assert {h: replica_state(f.replica(h)) for h in STANDBYS} == before

    # -- --check reports and changes nothing -----------------------------------------------------
    checked = f.playbook("promote.yml", "-e", "promote_host=standby1", "--check", timeout=SLOW)
    assert "promote standby1 storage fo_one" in checked.stdout
    assert "the master does not answer: no last pull" in checked.stdout, checked.stdout[-3000:]
    assert {h: replica_state(f.replica(h)) for h in STANDBYS} == before
    assert f.cron_file("standby1").exists()

    # -- promote standby1; standby2 follows it; standby3 diverged: reported, left alone ------------
    proc = f.playbook("promote.yml", "-e", "promote_host=standby1", timeout=SLOW)
    assert ("standby3 fo_three: DIVERGED: " in proc.stdout and " -- re-seed it with -e reseed=true or rejoin.yml"
            in proc.stdout), proc.stdout[-3000:]
    assert outside_misc(s3) == outside_misc_of(before["standby3"])  # its storage as it was
    assert not list(s3.parent.glob("replica.before-reseed-*"))
    assert fleet_marks.promoted(str(s1)) is not None
    assert not f.cron_file("standby1").exists()
    assert (s1.parent / "promoted-flag").exists(), "promote_command did not run"
    assert "standby2 fo_two: FOLLOWS standby1" in proc.stdout, proc.stdout[-3000:]
    assert last_tid(s2) == last_tid(s1)
    assert fleet_marks.upstream(str(s2)).endswith(":%s" % s1)
    assert "fo_two" in f.cron_file("standby2").read_text() and str(s1) in f.cron_file("standby2").read_text()

    # -- the stale inventory stops every playbook before it changes anything ---------------------
    stale = f.playbook("replicate.yml", check_rc=False, timeout=SLOW)
    assert stale.returncode != 0
    assert "inventory drift: standby1: storage fo_one (%s) was promoted to master at" % s1 in stale.stdout

    # -- writes go on at standby1 and reach standby2 ---------------------------------------------
    f.inventory_hook = after_failover_inventory(f)
    f.write_on(s1, "dsfoone", seconds=1.0, seed=4)
    f.s1_proc, _url = f.start_storage(s1, "dsfoone", f.s1_port)
    f.replicate("--limit", "standby1,standby2", timeout=SLOW)
    assert last_tid(s2) == last_tid(s1)

    # -- the old master comes back: still listed as master, it stops every playbook; rejoin keeps its
    # 2 transactions aside and lists them ----------------------------------------------------------
    f.master_host_up()
    f.inventory_hook = after_failover_inventory(f, old_master_listed_as="master")
    stale = f.playbook("verify.yml", check_rc=False, timeout=SLOW)
    assert "inventory drift: master: storage fo_main (%s) was replaced as master by standby1" % f.master_home \
        in stale.stdout, stale.stdout[-3000:]
    f.inventory_hook = after_failover_inventory(f)
    whole = {h: replica_state(p) for h, p in (("master", f.master_home), ("standby1", s1), ("standby2", s2))}
    checked = f.playbook("rejoin.yml", "-e", "rejoin_host=master", "--check", timeout=SLOW)
    assert_rejoin_plan(checked, f)
    # every storage whole, misc/ and config/ included, as before the check
    assert {h: replica_state(p) for h, p in (("master", f.master_home), ("standby1", s1), ("standby2", s2))} \
        == whole
    assert not list(f.master_home.parent.glob("storage.before-reseed-*"))
    assert not f.cron_file("master", OLD_NAME).exists()
    proc = f.playbook("rejoin.yml", "-e", "rejoin_host=master", timeout=SLOW)
    assert "2 transaction(s) the master does not hold" in proc.stdout, proc.stdout[-3000:]
    for tid, description in zip(lost, ["late order 1", "late order 2"], strict=True):
        assert tid in proc.stdout and "description=%r" % description in proc.stdout
    assert ": re-seeded in-place;" in proc.stdout, proc.stdout[-3000:]
    [aside] = f.master_home.parent.glob("storage.before-reseed-*")
    assert [t["tid"] for t in keep_aside.list_kept(str(aside))["transactions"]] == lost  # only what it would lose
    Fleet.stop_storage(f.s1_proc)
    f.s1_proc = None
    f.replicate(timeout=SLOW)
    for replica in (s2, f.master_home):
        assert_reads_as(replica, s1)
    assert f.cron_file("master", OLD_NAME).exists()
    # listed as a master again by mistake, the re-seeded old master stops every playbook, changing nothing
    upstream = fleet_marks.upstream(str(f.master_home))
    assert upstream == "dsfoone@%s:%s" % (STANDBYS["standby1"][0], s1), upstream
    f.inventory_hook = after_failover_inventory(f, old_master_listed_as="master")
    whole = {h: replica_state(p) for h, p in (("master", f.master_home), ("standby1", s1), ("standby2", s2))}
    stale = f.playbook("verify.yml", check_rc=False, timeout=SLOW)
    assert stale.returncode != 0
    assert ("inventory drift: master: storage fo_main (%s) is a standby of %s since it was re-seeded"
            % (f.master_home, upstream)) in stale.stdout, stale.stdout[-3000:]
    assert {h: replica_state(p) for h, p in (("master", f.master_home), ("standby1", s1), ("standby2", s2))} \
        == whole

    # -- a planned switchover back: stop_command, one last pull, promote; the old master's
    # promote_command fails (reported in one line); standby2 was written while it was a standby, so
    # it holds the newest tid but diverged: promote_force, and -e reseed=true re-seeds it, its
    # transaction kept aside --------------------------------------------------------------------
    [stray] = f.commit_on(s2, "dsfotwo", ["written on standby2"])
    f.write_on(s1, "dsfoone", seconds=0.5, seed=5)
    # standby1 serves and keeps writing until its stop_command stops the writer (SIGTERM, then it
    # waits for the process to end: a clean close, every commit acknowledged is in the storage)
    f.s1_proc, _url = f.start_storage(s1, "dsfoone", f.s1_port, rate=5)
    threading.Thread(target=f.s1_proc.wait, daemon=True).start()  # reaped at once: `kill -0` sees it gone
    f.inventory_hook = after_failover_inventory(f, promote_command="echo 'zeo did not start' >&2; exit 3",
                                                stop_command=stop_writer(f.s1_proc.pid, s1.parent / "stopped-flag"))
    started = time.time()
    proc = f.playbook("promote.yml", "-e", "promote_host=master", "-e", "promote_force=true", "-e", "reseed=true",
                      check_rc=False, timeout=SLOW)
    assert f.s1_proc.poll() == 0, "the stop_command did not stop standby1's writer cleanly"
    # it wrote while the playbook ran, up to the stop_command: not a quiet master
    newest = storage.tid_to_epoch(storage.Storage(str(s1)).newest_tid())
    assert newest > started + 1, (newest, started)
    assert proc.returncode != 0
    assert "promote_command of %s on master failed (exit 3): zeo did not start" % OLD_NAME in proc.stdout, \
        proc.stdout[-3000:]
    assert "the master answers: a planned switchover" in proc.stdout
    assert (s1.parent / "stopped-flag").exists(), "the old master's stop_command did not run"
    assert fleet_marks.promoted(str(f.master_home)) is not None
    assert "standby2 fo_two: DIVERGED" in proc.stdout, proc.stdout[-6000:]
    assert last_tid(f.master_home) == last_tid(s1) == last_tid(s2), proc.stdout[-6000:]
    assert_reads_as(f.master_home, s1)  # every transaction standby1 acknowledged is on the new master
    assert "standby2 fo_two: RE-SEEDED in-place from master" in proc.stdout and stray in proc.stdout
    assert "1 transaction(s) the master does not hold, kept in %s.before-reseed-" % s2 in proc.stdout
    assert fleet_marks.upstream(str(s2)).endswith(":%s" % f.master_home)
    assert_reads_as(s2, f.master_home)
