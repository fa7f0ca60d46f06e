"""The schedule role's follow mode under a booted systemd (issue 22): a standby host is this machine's
own Debian booted by `systemd-nspawn --boot` (systemd as PID 1, its own /etc/passwd, /etc/systemd
and /etc/cron.d, the host's network; testbed/harness/container.py), with its own sshd on a loopback
address, and Ansible drives it over ssh like the other E2E hosts (testbed/harness/e2e.py's `Fleet`,
whose master is such a container too).

In file order: provisioned in cron mode (a cron file, no unit); switched to follow (the unit
installed, enabled and started, no cron file; the replica follows the writing master); the
follower killed and restarted by systemd; its hardening in force (a write outside the replica's
path fails in the service's own mount namespace); `systemctl stop` ends it at a transaction
boundary with the replica consistent; switched back to cron (the unit gone, the cron file back).
Then a hot standby: a real unit serves the replica read-only (testbed/fakes/hot_replica.py), the
inventory names it (`service:`); the cron job's pull, run as the replica account, stops and starts
it through `sudo -n systemctl`, and the service is silent only for about the recorded downtime;
sudo refuses that account `restart`, other units and other commands. Last, the follower's hot mode
under its own unit: switched to follow with `service:`, it stops and starts the hot service through
the same sudo rules, and the service is silent only for about the downtime the follower recorded.

A container that cannot boot fails the test (never a skip, and no loopback fallback).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from dirstorage_replica import storage
from testbed.fakes import hot_replica
from testbed.harness.e2e import Fleet, run
from testbed.harness.reliability import DS_REPLICA

NAME = "ctmain"
UNIT = "ds-replica-follow-%s.service" % NAME
HOT_NAME = "ds-hot-%s" % NAME  # the read-only service of a hot standby (`service:` in the inventory)
HOT = HOT_NAME + ".service"
USER = "dsctrep"


class ContainerFleet(Fleet):
    """The e2e Fleet (a container per host) whose master writes 20 transactions a second."""

    def __init__(self):
        super().__init__("dsct", master_ip="127.0.0.60", standbys={"standby1": ("127.0.0.61", USER, NAME)},
                         own_paths=True, fallback=False)
        self.hot = False
        # cron in the container fires once an hour, half an hour from now: no scheduled pull stops the
        # hot service while a test measures its silence (the tests run the cron line themselves)
        self.cron_minute = str((time.localtime().tm_min + 30) % 60)
        self.inventory_hook = self._standby_hook

    @property
    def container(self):
        """The standby host."""
        return self.on("standby1")

    def start(self):
        super().start()
        self.stop_master()
        self.start_master(rate=20)

    def _standby_hook(self, inv):
        host = inv["all"]["children"]["dirstorage_standbys"]["hosts"]["standby1"]
        host.update(schedule_follow_restart_seconds=1, schedule_minute=self.cron_minute)
        if self.hot:
            host["standby_storages"][0]["service"] = HOT_NAME

    # -- inside the container ---------------------------------------------------------
    def systemctl(self, *args):
        return self.container.run(["systemctl", *args]).stdout.strip()

    def main_pid(self):
        return int(self.systemctl("show", "-p", "MainPID", "--value", UNIT) or 0)

    def journal(self):
        return self.container.run(["journalctl", "-u", UNIT, "--no-pager", "-n", "60"]).stdout

    def exists(self, path):
        return self.container.run(["test", "-e", path]).returncode == 0

    def modes(self):
        """What the standby runs for the storage: {"cron": cron file present, "follow": unit file present
        and active}."""
        return {"cron": self.exists("/etc/cron.d/ds-replica-%s" % NAME),
                "follow": self.exists("/etc/systemd/system/" + UNIT),
                "active": self.systemctl("is-active", UNIT)}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %gs" % (what, timeout))
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ct():
    fleet = ContainerFleet()
    with fleet.running():
        fleet.playbook("provision.yml", "-e", "schedule_mode=cron")
        yield fleet


def test_provisioned_in_cron_mode_inside_the_container(ct):
    assert ct.container.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert ct.modes() == {"cron": True, "follow": False, "active": "inactive"}
    # the container's own /etc: its account and cron file are not the host's
    assert ct.container.run(["id", USER]).returncode == 0 and run(["id", USER]).returncode != 0
    assert not os.path.exists("/etc/cron.d/ds-replica-%s" % NAME)


def test_follow_mode_installs_enables_and_starts_the_unit(ct):
    ct.playbook("schedule.yml", "-e", "schedule_mode=follow")
    wait_for(lambda: ct.systemctl("is-active", UNIT) != "activating", 10, "the unit starting")
    assert ct.modes() == {"cron": False, "follow": True, "active": "active"}, ct.journal()
    assert ct.systemctl("is-enabled", UNIT) == "enabled"
    # the master writes on: the newest transaction now (in its journal until its next flush into A/)
    target = storage.Storage(str(ct.master_home)).newest_tid()
    wait_for(lambda: storage.Storage(str(ct.replica("standby1"))).last_tid() >= target, 90,
             "the follower reaching the master's newest transaction of the switch")


def test_a_killed_follower_is_restarted_by_systemd(ct):
    pid = ct.main_pid()
    assert pid > 0
    ct.container.sh("kill -9 %d" % pid)
    # active (Type=notify): the new follower said READY=1, its SIGTERM handler is in place
    wait_for(lambda: ct.main_pid() not in (0, pid) and ct.systemctl("is-active", UNIT) == "active", 30,
             "systemd restarting the killed follower")
    assert int(ct.systemctl("show", "-p", "NRestarts", "--value", UNIT)) >= 1


def test_the_hardening_is_in_force(ct):
    pid = ct.main_pid()
    uid = ct.container.sh("id -u %s" % USER).strip()
    replica = str(ct.replica("standby1"))

    def write_as_the_service(path):
        """Create `path` as the follower's account inside the follower's own mount namespace."""
        return ct.container.run(["nsenter", "-t", str(pid), "-m", "-S", uid, "-G", uid, "sh", "-c",
                                 "echo probe > %s && rm %s" % (path, path)])

    ok = write_as_the_service(replica + "/misc/ds-probe")
    assert ok.returncode == 0, ok.stderr
    home = ct.container.sh("getent passwd %s | cut -d: -f6" % USER).strip()
    for outside in ("/etc/ds-probe", "/usr/local/ds-probe", home + "/ds-probe", "/var/lib/ds-probe"):
        refused = write_as_the_service(outside)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, \
            (outside, refused.stderr, ct.journal())
    # the same account outside the service writes its home: the unit's sandbox refused it, not the mode bits
    assert ct.container.run(["su", "-s", "/bin/sh", USER, "-c", "touch %s/ds-probe" % home]).returncode == 0


def test_systemctl_stop_ends_it_at_a_transaction_boundary(ct):
    ct.container.sh("systemctl stop %s" % UNIT)  # while the master writes 20 transactions/s
    assert ct.systemctl("is-active", UNIT) == "inactive"
    assert ct.systemctl("show", "-p", "ExecMainStatus", "--value", UNIT) == "0", ct.journal()
    journal = ct.container.sh("journalctl -u %s --no-pager -o cat" % UNIT)
    assert "follow stopped; the replica is at a transaction boundary" in journal, journal[-2000:]
    replica = str(ct.replica("standby1"))
    assert storage.Storage(replica).journal_entries() == []
    verify = subprocess.run([DS_REPLICA, "verify", replica], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    ct.container.sh("systemctl start %s" % UNIT)


def test_switching_back_to_cron_leaves_only_cron(ct):
    ct.playbook("schedule.yml", "-e", "schedule_mode=cron")
    assert ct.modes() == {"cron": True, "follow": False, "active": "inactive"}
    assert ct.systemctl("is-enabled", UNIT) != "enabled"


# ------------------------------------------------------------------ the hot standby's service

def install_hot_service(ct):
    """A real unit serving the replica read-only (testbed/fakes/hot_replica.py: it holds misc/lock and
    answers reads, one line per answer in its log), run as the replica account."""
    hot = ct.base / "standby1" / "hot"  # the standby host's own folder
    hot.mkdir()
    ct.container.sh("chown %s %s" % (USER, hot))
    unit = "\n".join([
        "[Service]", "Type=forking", "User=%s" % USER, "PIDFile=%s/hot.pid" % hot,
        "Environment=PYTHONPATH=%s PYTHONDONTWRITEBYTECODE=1" % ct.master_env()["PYTHONPATH"],
        "ExecStart=/usr/bin/python3 -m testbed.fakes.hot_replica start %s %s/answers.log %s/hot.pid"
        % (ct.replica("standby1"), hot, hot),
        "[Install]", "WantedBy=multi-user.target", ""])
    ct.container.sh("cat > /etc/systemd/system/%s <<'EOF'\n%sEOF\nsystemctl daemon-reload && systemctl start %s"
                    % (HOT, unit, HOT))
    return hot / "answers.log"


def as_replica_account(ct, command):
    return ct.container.run(["su", "-s", "/bin/sh", USER, "-c", command])


def test_a_pull_stops_and_starts_the_hot_service_through_sudo(ct):
    log = install_hot_service(ct)
    ct.hot = True
    ct.playbook("provision.yml", "-e", "schedule_mode=cron")  # the standby role's sudoers drop-in
    assert ct.systemctl("is-active", HOT) == "active"
    before = hot_replica.answers(log)[-1][1]
    cron_line = [ln for ln in ct.container.sh("cat /etc/cron.d/ds-replica-%s" % NAME).splitlines()
                 if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]][0]
    assert "sudo -n /usr/bin/systemctl stop %s" % HOT_NAME in cron_line, cron_line
    started = time.time()
    pull = as_replica_account(ct, cron_line.split(None, 6)[6].replace("\\%", "%"))
    took = time.time() - started
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert ct.systemctl("is-active", HOT) == "active"
    after = hot_replica.answers(log)
    assert after[-1][1] > before  # it serves the new transactions
    silence, _at = hot_replica.longest_silence(log)
    metrics = ct.metrics_dir("standby1") / ("dirstorage_%s.prom" % NAME)
    downtime = float([ln for ln in metrics.read_text().splitlines()
                      if ln.startswith("dirstorage_replication_downtime_seconds")][0].split()[-1])
    # down only for the apply: the service was silent for about the downtime the pull recorded (from
    # its stop command to its start command), and served while the increment was received
    assert 0 < silence <= downtime + 1.0 and downtime < took, (downtime, silence, took)


def test_sudo_allows_exactly_stop_and_start_of_that_unit(ct):
    name = HOT_NAME
    for refused in ("sudo -n /usr/bin/systemctl restart %s" % name, "sudo -n /usr/bin/systemctl stop cron",
                    "sudo -n /usr/bin/systemctl start ssh", "sudo -n /bin/sh -c true"):
        proc = as_replica_account(ct, refused)
        assert proc.returncode != 0, refused
    for allowed in ("sudo -n /usr/bin/systemctl stop %s" % name, "sudo -n /usr/bin/systemctl start %s" % name):
        proc = as_replica_account(ct, allowed)
        assert proc.returncode == 0, (allowed, proc.stderr)
    assert ct.systemctl("is-active", HOT) == "active"


def test_the_hot_follower_under_its_own_unit_stops_the_service_only_to_apply(ct):
    """Follow mode with `service:`: the follower's own unit stops and starts the hot service through the
    same sudo rules; its first increment is applied at once (then at most once per
    --min-apply-interval, 60 s by default), and the service is silent only for about the downtime
    the follower recorded."""
    assert ct.hot
    log = ct.base / "standby1" / "hot" / "answers.log"
    switched = time.time()
    target = storage.Storage(str(ct.master_home)).newest_tid()
    ct.playbook("schedule.yml", "-e", "schedule_mode=follow")
    wait_for(lambda: ct.systemctl("is-active", UNIT) != "activating", 10, "the unit starting")
    assert ct.modes() == {"cron": False, "follow": True, "active": "active"}, ct.journal()
    unit = ct.container.sh("cat /etc/systemd/system/%s" % UNIT)
    assert '"--stop-command" "sudo -n /usr/bin/systemctl stop %s"' % HOT_NAME in unit, unit
    assert "NoNewPrivileges=no" in unit  # sudo is set-uid
    state_file = ct.replica("standby1") / "misc" / "ds-replica-follow.json"

    def applied():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return None
        if state.get("downtime_seconds", 0) > 0 and int(state.get("tid", "0"), 16) >= int.from_bytes(target, "big"):
            return state
        return None

    try:
        wait_for(applied, 90, "the hot follower applying its first increment")
    except AssertionError as e:
        state = state_file.read_text() if state_file.exists() else None
        raise AssertionError("%s; state %s; journal:\n%s" % (e, state, ct.journal())) from None
    downtime = applied()["downtime_seconds"]
    wait_for(lambda: hot_replica.answers(log)[-1][1] >= storage.hex_tid(target), 30,
             "the hot service serving the applied transactions")
    assert ct.systemctl("is-active", HOT) == "active"
    silence, _at = hot_replica.longest_silence(log, since=switched)
    assert 0 < silence <= downtime + 1.0, (silence, downtime)
    ct.playbook("schedule.yml", "-e", "schedule_mode=cron")
    assert ct.modes() == {"cron": True, "follow": False, "active": "inactive"}
    assert ct.systemctl("is-active", HOT) == "active"
