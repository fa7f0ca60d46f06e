"""End to end: the roles and playbooks against one master and two standbys.

Three machines, each a container of its own (this machine's Debian booted by
systemd-nspawn: its own accounts, groups, cron files and installed files),
each with its own OpenSSH sshd on its own loopback address (127.0.0.2 master,
127.0.0.3 and 127.0.0.4 standbys); Ansible reaches them over ssh as root with
host key checking on. The master account and the two replica accounts are
real accounts of their hosts; the master storage is the simulated storage
process (on the master host, as the master account, answering
enterSnapshot/leaveSnapshot over XML-RPC, so the master role's `http` method
and its credentials file are what the pulls use). The fleet is
testbed/harness/e2e.py's `Fleet`, with the default system paths.

From empty standbys: provision.yml -> both replicas read as the master; new
transactions -> replicate.yml pulls them (then nothing); --check reports and
changes nothing; a hot standby's stop and start commands (inventory) run around the
apply only; the cron line written by the schedule role, run by hand as
the replica account, advances the replica and writes the metrics file; the
standby's key cannot run anything but `ds-replica serve` on the master.

Then, on the same fleet, a cascade (issue 10): the master role applied to
standby1 too (`direct` snapshots of its replica, keys restricted to
`ds-replica serve`), standby2 re-pointed to it; both pull while the master
takes writes, and standby2 reads as the master as of standby1's newest
transaction; then standby2 switches its upstream back to the master and
catches up directly; a switch back to standby1, now behind it, is refused
by the drift check (and without standby1 in the play), changing nothing.

Then packing (issue 24): both standbys follow (`ds-replica follow` with the
cron line's arguments, as the follow unit runs it) while the master writes;
playbooks/pack.yml packs the master through the site's pack command (here
testbed/fakes/zeopack.py, ZEO's zeopack for the simulated storage) and the
horizon holds the pack back for the standby that stopped; after the pack
both standbys' files under A/ are the master's; a forced pack past a
stopped standby strands it, and its next pull says the cure in one line.

Root only (containers, real accounts, /etc/cron.d).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from dirstorage_replica import storage
from testbed.harness.e2e import DEFAULT_GROUP, Fleet, assert_nothing_changed, last_tid, recap_hosts, run
from tests.integration.test_pack_mirror import assert_packed_as, set_aside
from tests.support.checks import assert_reads_as, replica_state

MASTER_IP = "127.0.0.2"
STANDBYS = {"standby1": ("127.0.0.3", "dse2eone", "e2e_one"), "standby2": ("127.0.0.4", "dse2etwo", "e2e_two")}

pytestmark = [
    pytest.mark.ssh,
    # ci-runs: CI is root
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (local accounts, /etc/cron.d)"),  # ci-runs: CI is root
]


@pytest.fixture(scope="module")
def e2e():
    # the default system paths (/usr/local/bin/ds-replica, /opt/ds-replica): what most users get; the
    # roles' package tasks run in test_systemd.py's container (here: five role runs on one dpkg lock)
    fleet = Fleet("dse2e", MASTER_IP, STANDBYS, own_paths=False, role_packages=False)
    with fleet.running():
        yield fleet


def _recap_hosts_named(proc):
    names = [ln.split()[0] for ln in recap_hosts(proc.stdout)]
    assert len(names) == 1 + len(STANDBYS), proc.stdout[-3000:]  # the master and the standbys
    return names


def test_provision_replicate_schedule(e2e):
    t0 = time.monotonic()
    master = e2e.master_home

    # -- provision from empty standbys ---------------------------------------------
    e2e.playbook("provision.yml")
    for host in STANDBYS:
        assert_reads_as(e2e.replica(host), master)
        assert os.stat(e2e.replica(host) / "A").st_uid == e2e.on(host).account(e2e.user(host)).uid
    if e2e.containers:  # else the fleet fell back to loopback, and said so in pytest's warnings summary
        _each_host_its_own_accounts(e2e)
    conf = (master / "config" / "snapshot.conf").read_text()
    assert f"http {e2e.master_url} snapshot-access-1" in conf and "nodirect" in conf
    access = master / "config" / "snapshot-access-1"
    assert access.read_text().strip() == f"replica:{e2e.password}"
    assert access.stat().st_mode & 0o777 == 0o600
    keys = e2e.sshd.authorized_keys_path(e2e.master_user).read_text()
    assert keys.count(f'restrict,command="/usr/local/bin/ds-replica serve {master}"') == 2, keys
    # provisioning again changes nothing
    again = e2e.playbook("provision.yml")
    assert_nothing_changed(again, hosts=_recap_hosts_named(again))

    # -- new transactions; one pull on every standby ---------------------------------
    e2e.write_more(seconds=1.0, seed=2)
    newest = last_tid(master)
    _unused, report = e2e.replicate()
    for host in STANDBYS:
        (result,) = report[host]
        assert result["changed"] is True and result["transactions"] > 0 and result["bytes"] > 0, result
        assert result["after_tid"] == newest
        assert_reads_as(e2e.replica(host), master)
    # nothing new: nothing changes
    proc, report = e2e.replicate()
    for host in STANDBYS:
        (result,) = report[host]
        assert result["changed"] is False and result["transactions"] == 0, result
    # (its localhost play rewrites the report file, which e2e.replicate() removed first)
    assert_nothing_changed(proc, hosts=STANDBYS)

    # -- a hot standby: replicate.yml stops its service (stop_command) only to apply, then starts it ----
    _hot_standby_pulls(e2e, "standby1")

    # -- check mode reports what would come and changes nothing ------------------------
    e2e.write_more(seconds=0.7, seed=3)
    before = {h: replica_state(e2e.replica(h)) for h in STANDBYS}
    _unused, report = e2e.replicate("--check")
    announced = {h: report[h][0]["transactions"] for h in STANDBYS}
    for host in STANDBYS:
        (result,) = report[host]
        assert result["changed"] is True and result["transactions"] > 0, result
        assert replica_state(e2e.replica(host)) == before[host]

    # -- the cron entry, run by hand as the replica account ------------------------------
    host = "standby1"
    name = e2e.storage_name(host)
    user, command = e2e.cron_command(host)
    assert user == e2e.user(host)
    assert "flock" not in command and "/run/lock" not in command, command  # the wrapper's own lock (issue 20)
    cron_run = e2e.on(host).run(["su", "-s", "/bin/sh", user, "-c", command], timeout=120)
    assert cron_run.returncode == 0, cron_run.stderr
    assert cron_run.stdout == "" and cron_run.stderr == "", (cron_run.stdout, cron_run.stderr)  # cron mails nothing
    assert_reads_as(e2e.replica(host), master)
    _check_metrics(e2e, host, name, ok=True, transactions=announced[host])

    # a failing run (master unreachable) keeps the last success and reports the failure
    # (a wrong master path would not do: the forced command serves its one storage whatever is asked)
    prom = e2e.metrics_dir(host) / f"dirstorage_{name}.prom"
    last_success = _metrics(prom)["dirstorage_replication_last_success_timestamp_seconds"]
    broken = command.replace(f" -p {e2e.port} ", " -p 9 ")
    assert broken != command, command
    cron_run = e2e.on(host).run(["su", "-s", "/bin/sh", user, "-c", broken], timeout=120)
    assert cron_run.returncode != 0 and cron_run.stderr, "a failed pull must exit non-zero with a message (cron mails)"
    values = _metrics(prom)
    assert values["dirstorage_replication_last_result"] == 0
    assert values["dirstorage_replication_last_success_timestamp_seconds"] == last_success

    # -- the standby's key only runs `ds-replica serve <storage>` on the master ----------
    ssh = e2e.sshd.ssh_argv("cat", "/etc/passwd", user=e2e.master_user, host=MASTER_IP, key=e2e.key(host))
    proc = subprocess.run(ssh, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert "root:" not in proc.stdout, proc.stdout
    # the forced command ran instead: a serve that got no request (not an ssh failure, 255)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "ds-replica serve: malformed request: the request ended early" in proc.stderr, proc.stderr

    # -- schedule state=absent removes the entries and metrics ---------------------------
    e2e.playbook("schedule.yml", "-e", "schedule_state=absent")
    for h in STANDBYS:
        n = e2e.storage_name(h)
        assert not e2e.cron_file(h).exists()
        assert not (e2e.metrics_dir(h) / f"dirstorage_{n}.prom").exists()

    print(f"e2e took {time.monotonic() - t0:.1f}s", file=sys.stderr)


def _each_host_its_own_accounts(e2e):
    """Each host has its own /etc/passwd and /etc/group, as on a real fleet: an account exists on its
    host only (not on the others, nor on this machine), and each standby made the role's default
    metrics group for itself."""
    accounts = {"master": e2e.master_user, **{h: e2e.user(h) for h in STANDBYS}}
    for host, user in accounts.items():
        on = {other for other in accounts if e2e.on(other).run(["id", "-u", user]).returncode == 0}
        assert on == {host}, (user, on)
        assert run(["id", "-u", user]).returncode != 0, user
    for host in STANDBYS:
        group = e2e.on(host).run(["getent", "group", DEFAULT_GROUP]).stdout.split(":")
        metrics = e2e.metrics_dir(host).stat()
        assert group[0] == DEFAULT_GROUP and int(group[2]) == metrics.st_gid, (host, group)


def _hot_standby_pulls(e2e, host):
    """`host`'s storage given stop and start commands in the inventory: a pull with nothing new stops
    nothing; a pull with new transactions runs the stop command before it changes the replica and the
    start command after the whole increment is in (each records how many files the replica's A/ holds); the other
    standby is not stopped."""
    folder = e2e.base / host / "hot"  # the host's own folder: its commands write there
    folder.mkdir()
    account = e2e.on(host).account(e2e.user(host))
    os.chown(folder, account.uid, account.gid)
    replica, log = e2e.replica(host), folder / "service.log"

    def hot(inv):
        hosts = inv["all"]["children"]["dirstorage_standbys"]["hosts"]
        count = "$(find %s/A -type f | wc -l)" % replica  # the storage's files (the increment is received before)
        hosts[host]["standby_storages"][0].update(stop_command="echo stop %s >> %s" % (count, log),
                                                  start_command="echo start %s >> %s" % (count, log))

    e2e.inventory_hook = hot
    try:
        e2e.replicate()
        assert not log.exists(), "nothing was new, yet the service was stopped"
        e2e.write_more(seconds=0.5, seed=7)
        files_before = sum(len(f) for _d, _s, f in os.walk(replica / "A"))
        proc, report = e2e.replicate()
    finally:
        e2e.inventory_hook = None
    files_after = sum(len(f) for _d, _s, f in os.walk(replica / "A"))
    assert files_after > files_before
    assert log.read_text() == "stop %d\nstart %d\n" % (files_before, files_after), log.read_text()
    assert_reads_as(replica, e2e.master_home)
    ((hot_result,), (other,)) = (report[h] for h in (host, *(h for h in STANDBYS if h != host)))
    assert hot_result["changed"] and hot_result["downtime_seconds"] > 0, hot_result
    assert other["changed"] and other["downtime_seconds"] == 0, other
    assert ", storage process down %ss" % hot_result["downtime_seconds"] in proc.stdout, proc.stdout[-3000:]


def _metrics(prom):
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(prom.read_text()):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values


def _check_metrics(e2e, host, name, ok, transactions):
    from prometheus_client.parser import text_string_to_metric_families

    prom = e2e.metrics_dir(host) / f"dirstorage_{name}.prom"
    text = prom.read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expect = ["last_success_timestamp_seconds", "last_attempt_timestamp_seconds", "last_result", "lag_seconds",
              "transactions", "bytes", "snapshot_seconds"]
    now = time.time()
    values = {}
    for metric in expect:
        full = "dirstorage_replication_" + metric
        assert full in families, (full, text)
        (sample,) = families[full].samples
        assert sample.labels == {"storage": name}
        assert families[full].documentation
        values[metric] = sample.value
    assert values["last_result"] == (1 if ok else 0)
    assert now - 120 < values["last_attempt_timestamp_seconds"] <= now
    assert now - 120 < values["last_success_timestamp_seconds"] <= now
    replica = storage.Storage(str(e2e.replica(host)))
    previous = e2e.replica(host) / "misc" / "replica.previous"
    # the run brought the transactions the check-mode run announced
    assert values["transactions"] == transactions
    assert values["bytes"] > 0
    assert values["lag_seconds"] == 0  # replica now at the master's newest transaction
    assert 0 < values["snapshot_seconds"] < 60  # the master reported how long it held its snapshot
    assert replica.last_tid() == storage.Storage(str(e2e.master_home)).last_tid()
    assert abs(previous.stat().st_mtime - values["last_success_timestamp_seconds"]) < 60


def cascade(fleet, upstream):
    """An inventory hook: standby1 is also a master (of its replica), standby2
    pulls from `upstream` ("standby1" or "master")."""
    def hook(inv):
        standbys = inv["all"]["children"]["dirstorage_standbys"]["hosts"]
        masters = inv["all"]["children"]["dirstorage_masters"]["hosts"]
        one = fleet.replica("standby1")
        masters["standby1"] = dict(standbys["standby1"], **fleet.master_access_vars("standby1", fleet.user("standby1")),
                                   master_storages=[{"name": fleet.storage_name("standby1"), "path": str(one),
                                                     "snapshot": ["direct"]}])
        if upstream == "standby1":
            standbys["standby2"]["standby_storages"][0].update(master_host="standby1", master_path=str(one))
    return hook


def test_cascade_then_switch_upstream(e2e):
    """Runs after test_provision_replicate_schedule, on the fleet it provisioned."""
    t0 = time.monotonic()
    one, two, master = e2e.replica("standby1"), e2e.replica("standby2"), e2e.master_home
    # a switch of upstream is judged with both ends in the play: provision every host
    e2e.inventory_hook = cascade(e2e, "standby1")
    e2e.playbook("provision.yml", timeout=900)
    keys = e2e.sshd_of("standby1").authorized_keys_path(e2e.user("standby1")).read_text()
    assert f'restrict,command="{e2e.bin} serve {one}"' in keys
    conf = (one / "config" / "snapshot.conf").read_text().splitlines()
    assert [ln for ln in conf if ln.strip() and not ln.startswith("#")] == ["direct"]
    assert str(one) in e2e.cron_file("standby2").read_text()

    # both standbys pull at once while the master takes writes; standby2 once more
    e2e.stop_master()
    e2e.start_master(rate=20)
    try:
        e2e.replicate()
        _proc, report = e2e.replicate("--limit", "standby2,localhost")
    finally:
        e2e.stop_master()
        e2e.start_master()
    (result,) = report["standby2"]
    assert result["after_tid"] == last_tid(one)
    assert_reads_as(two, one)  # = the master as of standby1's newest transaction...
    newest_one = storage.Storage(one).last_tid()
    assert newest_one in {t.tid for t in storage.Storage(master).chain()}
    assert newest_one < storage.Storage(master).last_tid()  # ...which the master has since passed

    # standby2 switches its upstream back to the master and catches up directly
    e2e.inventory_hook = cascade(e2e, "master")
    e2e.playbook("provision.yml", timeout=900)
    assert str(master) in e2e.cron_file("standby2").read_text()
    _proc, report = e2e.replicate("--limit", "standby2,localhost")
    (result,) = report["standby2"]
    assert result["changed"] is True and result["after_tid"] == last_tid(master)
    assert_reads_as(two, master)

    # switching back to standby1 is refused, changing nothing: without standby1 in the play, and with it,
    # since standby2 now holds transactions standby1 lacks
    e2e.inventory_hook = cascade(e2e, "standby1")
    cron = e2e.cron_file("standby2")
    before = (replica_state(one), replica_state(two), cron.read_text())
    where = "standby2: storage %s (%s)" % (e2e.storage_name("standby2"), two)
    follows = "%s follows %s@%s:%s, the inventory says %s:%s: " % (
        where, e2e.master_user, MASTER_IP, master, STANDBYS["standby1"][0], one)
    ahead = "%s holds transaction %s, newer than its master standby1 (%s)" % (where, last_tid(master), last_tid(one))
    for extra, line in ((["--limit", "standby2"], follows), ([], ahead)):
        refused = e2e.playbook("provision.yml", *extra, check_rc=False)
        assert refused.returncode != 0 and "inventory drift: " + line in refused.stdout, refused.stdout[-3000:]
        assert (replica_state(one), replica_state(two), cron.read_text()) == before
    e2e.inventory_hook = cascade(e2e, "master")
    print(f"cascade e2e took {time.monotonic() - t0:.1f}s", file=sys.stderr)


# -- packing while two standbys follow (issue 24) ---------------------------------------------

DAY = 86400.0


class Followers:
    """`ds-replica follow` of each standby of the fleet, run as its replica account with the
    arguments of its cron line (what the follow unit runs), as the master's serve sees them."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.procs = {}

    def start(self, host):
        user, command = self.fleet.cron_command(host)
        words = shlex.split(command)
        argv = [self.fleet.bin, "follow", "--interval", "0.5", *words[words.index("--") + 1:]]
        assert "--standby-name" in argv, argv  # the master records it under its own name
        home = self.fleet.on(host).account(user).home
        log = open(self.fleet.base / f"follow-{host}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.procs[host] = (self.fleet.on(host).popen(argv, user=user, env={"PATH": "/usr/bin:/bin", "HOME": home},
                                                      cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                      start_new_session=True), log)

    def stop(self, host):
        proc, log = self.procs.pop(host)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
        assert proc.returncode in (0, 143, -signal.SIGTERM), (proc.returncode, self.log(host))

    def stop_all(self):
        for host in list(self.procs):
            self.stop(host)

    def log(self, host):
        return (self.fleet.base / f"follow-{host}.log").read_text(errors="replace")[-3000:]

    def lags(self, host, target, packed):
        """Whether `host`'s replica lacks transaction `target` or the master's x.packed `packed`."""
        replica = storage.Storage(str(self.fleet.replica(host)))
        return replica.last_tid() < target or replica.packed_tid() != packed

    def wait_current(self, *hosts, timeout=120):
        """Until every replica of `hosts` holds the transaction that was the master's newest
        (journal included) when called, and the master's x.packed; that transaction."""
        master = storage.Storage(str(self.fleet.master_home))
        target = master.newest_tid()
        deadline = time.monotonic() + timeout
        while True:
            packed = master.packed_tid()
            behind = [h for h in hosts if self.lags(h, target, packed)]
            if not behind:
                return target
            for h in behind:
                proc, _log = self.procs[h]
                assert proc.poll() is None, (h, proc.returncode, self.log(h))
            assert time.monotonic() < deadline, (behind, storage.hex_tid(target), storage.hex_tid(packed), {
                h: (storage.hex_tid(storage.Storage(str(self.fleet.replica(h))).last_tid()),
                    storage.hex_tid(storage.Storage(str(self.fleet.replica(h))).packed_tid())) for h in behind},
                self.log(behind[0]))
            time.sleep(0.2)


@contextmanager
def following(fleet):
    followers = Followers(fleet)
    try:
        yield followers
    finally:
        followers.stop_all()


def pack_command(fleet):
    """The site's pack command for pack.yml: zeopack's stand-in, packing the running master to {time}."""
    access = fleet.master_home / "config" / "snapshot-access-1"
    return " ".join(shlex.quote(w) for w in [
        "/usr/bin/env", "PYTHONPATH=" + fleet.master_env()["PYTHONPATH"], "/usr/bin/python3", "-m",
        "testbed.fakes.zeopack", "-t"]) + " {time} " + shlex.quote(fleet.master_url) + " " + shlex.quote(str(access))


def run_pack(fleet, **extra):
    extra = dict(extra, pack_command=pack_command(fleet))
    return fleet.playbook("pack.yml", "-e", json.dumps(extra)).stdout


def recorded_tid(fleet, host):
    return json.loads((fleet.master_home / "misc" / "standbys" / f"{host}.json").read_text())["tid"]


def test_pack_while_two_standbys_follow(e2e):
    """Runs after the cascade test, on the fleet it left: both standbys pull from the master."""
    t0 = time.monotonic()
    e2e.inventory_hook = None
    master, one, two = e2e.master_home, e2e.replica("standby1"), e2e.replica("standby2")
    # the site keeps little history (the real engine packs no later than min_pack_time ago; 600 s by default)
    settings = master / "config" / "settings"
    settings.write_text(re.sub(r"(?m)^min_pack_time:.*$", "min_pack_time: 1", settings.read_text()))
    e2e.stop_master()
    e2e.start_master(rate=10)
    try:
        with following(e2e) as followers:
            for host in STANDBYS:
                followers.start(host)
            followers.wait_current("standby1", "standby2")

            # -- standby2 stops; the horizon holds a pack to "now" back to where it stands --------
            followers.stop("standby2")
            held_at = storage.Storage(str(two)).last_tid()
            time.sleep(12)  # the master writes on, standby1 follows
            out = run_pack(e2e, pack_days=0, pack_margin=1)
            held = re.search(r"held back from 0 days by standby standby2, which holds ([0-9A-Fa-f]{16})", out)
            assert held, out[-4000:]
            horizon = storage.tid_from_hex(held.group(1))
            assert horizon == storage.tid_from_hex(recorded_tid(e2e, "standby2")) and horizon <= held_at
            packed = storage.Storage(str(master)).packed_tid()
            assert storage.ZERO_TID < packed <= horizon, (storage.hex_tid(packed), held.group(1))
            assert set_aside(master), "the pack set nothing aside"

            # -- standby2 comes back: not stranded; both mirror the pack -----------------------
            followers.start("standby2")
            followers.wait_current("standby1", "standby2")
            e2e.stop_master()  # writes stop; closing flushes the journal into A/
            e2e.start_master()
            followers.wait_current("standby1", "standby2")
            followers.stop_all()
        for replica in (one, two):
            assert_packed_as(replica, master)
            assert {p.rsplit("/", 1)[-1] for p in set_aside(replica)} == {
                p.rsplit("/", 1)[-1] for p in set_aside(master)}

        # -- a forced pack past a stopped standby strands it; its next pull names the cure -----
        stranded_at = storage.Storage(str(two)).last_tid()
        e2e.stop_master()
        e2e.start_master(rate=10)
        with following(e2e) as followers:
            followers.start("standby1")
            time.sleep(35)  # history after standby2's position, older than the forced pack's 30 s
            out = run_pack(e2e, pack_days=30 / DAY, pack_margin=1, pack_force=True)
            assert re.search(r"this strands standby standby2 \(holding [0-9A-Fa-f]{16}\): re-seed it with "
                             r"'ds-replica clone --delta MASTER PATH'", out), out[-4000:]
            assert storage.Storage(str(master)).packed_tid() > stranded_at
            e2e.stop_master()
            e2e.start_master()
            followers.wait_current("standby1")
        assert_packed_as(one, master)
    finally:
        e2e.stop_master()
        e2e.start_master()
    user, command = e2e.cron_command("standby2")
    before = replica_state(two)
    pulled = e2e.on("standby2").run(["su", "-s", "/bin/sh", user, "-c", command], timeout=120)
    assert pulled.returncode != 0, pulled.stdout
    (line,) = pulled.stderr.strip().splitlines()
    assert "storage has been packed since the last replica" in line and "ds-replica clone --delta" in line, line
    assert replica_state(two) == before
    print(f"pack e2e took {time.monotonic() - t0:.1f}s", file=sys.stderr)
