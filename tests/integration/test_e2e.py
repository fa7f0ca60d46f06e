"""End to end: the roles and playbooks against one master and two standbys.

Three "machines" are loopback addresses on one dedicated OpenSSH sshd
(127.0.0.2 master, 127.0.0.3 and 127.0.0.4 standbys); Ansible reaches them
over ssh as root with host key checking on. The master account and the two
replica accounts are real local accounts made by the test; the master storage
is a running test master (its own process, as the master account, answering
enterSnapshot/leaveSnapshot over XML-RPC, so the master role's `http` method
and its credentials file are what the pulls use).

From empty standbys: provision.yml -> both replicas read as the master; new
transactions -> replicate.yml pulls them (then nothing); --check reports and
changes nothing; the cron line written by the schedule role, run by hand as
the replica account, advances the replica and writes the metrics file; the
standby's key cannot run anything but `ds-replica serve` on the master.

Root only (real accounts, /etc/cron.d, apt for python3-paramiko).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dirstorage_replica import storage
from tests.support.checks import assert_reads_as, replica_state
from tests.support.sshd import SSHD, ensure_local_user, remove_local_user, start_sshd

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
MASTER_USER = "dse2emaster"
STANDBY_USERS = {"standby1": "dse2eone", "standby2": "dse2etwo"}
STORAGES = {"standby1": "e2e_one", "standby2": "e2e_two"}
SYSTEM_FILES = ["/usr/local/bin/ds-replica", "/usr/local/bin/ds-replica-cron", "/opt/ds-replica"]
GROUP = "dirstorage-metrics"

pytestmark = [
    pytest.mark.ssh,
    # ci-runs: CI is root
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (local accounts, /etc/cron.d)"),  # ci-runs: CI is root
]


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw, check=False)


class E2E:
    """Everything the test made, so that teardown can undo it."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="ds-e2e-"))
        os.chmod(self.base, 0o755)
        self.sshd = None
        self.master_proc = None
        self.master_url = None
        self.password = "e2e-" + os.urandom(8).hex()
        self.xmlrpc_port = None
        self.preexisting = {p for p in SYSTEM_FILES if os.path.exists(p)}
        self.users = []

    # -- the test master, run as the master account ---------------------------------
    def master_env(self):
        pylib = self.base / "pylib"
        if not pylib.exists():
            pylib.mkdir()
            (pylib / "dirstorage_replica").symlink_to(ROOT / "plugins" / "module_utils")
            (pylib / "tests").symlink_to(ROOT / "tests")
            os.chmod(pylib, 0o755)
        return dict(PATH="/usr/bin:/bin", PYTHONPATH=str(pylib), PYTHONDONTWRITEBYTECODE="1", HOME="/tmp")

    def master_argv(self, *args):
        return ["/usr/bin/python3", "-m", "tests.support.simulated_storage", str(self.master_home), *args]

    def write_more(self, seconds=1.0, rate=30, seed=None):
        """Stop the serving master, commit transactions for `seconds`, start it again."""
        self.stop_master()
        proc = _run(self.master_argv("--rate", str(rate), "--duration", str(seconds),
                                     *(["--seed", str(seed)] if seed is not None else [])),
                    user=MASTER_USER, env=self.master_env(), cwd="/tmp", timeout=60)
        assert proc.returncode == 0, proc.stderr
        self.start_master()

    def start_master(self):
        self.master_proc = subprocess.Popen(
            self.master_argv("--xmlrpc-port", str(self.xmlrpc_port), "--user", "replica",
                             "--password", self.password),
            user=MASTER_USER, env=self.master_env(), cwd="/tmp", stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.master_proc.stdout.readline()
        assert line.startswith("READY "), line + self.master_proc.stderr.read()
        self.master_url = line.split()[1]

    def stop_master(self):
        if self.master_proc is not None and self.master_proc.poll() is None:
            self.master_proc.terminate()
            self.master_proc.wait(timeout=30)
        self.master_proc = None

    # -- ansible ------------------------------------------------------------------
    def inventory(self):
        s = self.sshd
        common = " ".join([
            "-F /dev/null", "-o IdentitiesOnly=yes", f"-o UserKnownHostsFile={s.known_hosts_path}",
            "-o GlobalKnownHostsFile=/dev/null", "-o StrictHostKeyChecking=yes", "-o BatchMode=yes",
        ])
        standbys = {}
        for i, (host, user) in enumerate(STANDBY_USERS.items()):
            standbys[host] = {
                "ansible_host": HOSTS[i + 1],
                "standby_user": user,
                "standby_storages": [{
                    "name": STORAGES[host],
                    "master_path": str(self.master_home),
                    "path": str(self.replica(host)),
                }],
            }
        inv = {"all": {
            "vars": {
                "ansible_connection": "ssh",
                "ansible_user": "root",
                "ansible_port": s.port,
                "ansible_ssh_private_key_file": str(s.client_key_path),
                "ansible_ssh_common_args": common,
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_pipelining": True,
                "ansible_become_method": "su",
                "schedule_textfile_dir": str(self.metrics_dir),
                "schedule_minute": "*/30",
            },
            "children": {
                "dirstorage_masters": {"hosts": {"master": {
                    "ansible_host": HOSTS[0],
                    "master_user": MASTER_USER,
                    # the test sshd reads keys from its own folder (AuthorizedKeysFile)
                    "master_authorized_keys_file": str(s.authorized_keys_path(MASTER_USER)),
                    # the master's own host key file, which the standbys pin
                    "master_host_key_file": str(s.workdir / "ssh_host_ed25519_key.pub"),
                    "master_storages": [{
                        "name": "main",
                        "path": str(self.master_home),
                        "snapshot": [
                            {"http": {"url": self.master_url, "user": "replica", "password": self.password}},
                            "nodirect",
                        ],
                    }],
                }}},
                "dirstorage_standbys": {"hosts": standbys},
            },
        }}
        path = self.base / "inventory.json"
        path.write_text(json.dumps(inv, indent=2))
        return path

    def playbook(self, name, *extra, check_rc=True):
        env = dict(os.environ)
        env.update(ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.base / "cp"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOST_KEY_CHECKING="True")
        argv = [str(PLAYBOOK), "-i", str(self.inventory()), str(ROOT / "playbooks" / name), *extra]
        proc = _run(argv, cwd=ROOT, env=env, timeout=300)
        if check_rc:
            assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        return proc

    def replicate(self, *extra):
        report = self.base / "report.json"
        report.unlink(missing_ok=True)
        proc = self.playbook("replicate.yml", "-e", f"dirstorage_replicate_report={report}", *extra)
        return proc, json.loads(report.read_text())

    # -- paths --------------------------------------------------------------------
    @property
    def master_home(self):
        return self.base / "master" / "storage"

    @property
    def metrics_dir(self):
        return self.base / "metrics"

    def replica(self, host):
        return self.base / host / "replica"

    def key(self, host):
        home = pwd.getpwnam(STANDBY_USERS[host]).pw_dir
        return Path(home) / ".ssh" / f"ds-replica-{STORAGES[host]}"

    # -- teardown -------------------------------------------------------------------
    def cleanup(self):
        self.stop_master()
        if self.sshd is not None:
            self.sshd.stop()
        for name in STORAGES.values():
            Path(f"/etc/cron.d/ds-replica-{name}").unlink(missing_ok=True)
            Path(f"/run/lock/ds-replica-{name}.lock").unlink(missing_ok=True)
        for user in self.users:
            remove_local_user(user)
        _run(["groupdel", GROUP])
        for p in SYSTEM_FILES:
            if p not in self.preexisting:
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.exists(p):
                    os.unlink(p)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def e2e():
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} missing: run `make deps` as root", pytrace=False)
    env = E2E()
    try:
        env.sshd = start_sshd(listen=HOSTS)
        env.sshd.authorize("root", env.sshd.client_pub_line)
        for user in [MASTER_USER, *STANDBY_USERS.values()]:
            existed = True
            try:
                pwd.getpwnam(user)
            except KeyError:
                existed = False
            ensure_local_user(user)
            if not existed:
                env.users.append(user)
        # the master account's storage, with some history
        master_parent = env.master_home.parent
        master_parent.mkdir()
        entry = pwd.getpwnam(MASTER_USER)
        os.chown(master_parent, entry.pw_uid, entry.pw_gid)
        from tests.support.sshd import free_port
        env.xmlrpc_port = free_port()
        proc = _run(env.master_argv("--create", "bushy", "--rate", "40", "--duration", "1", "--seed", "1"),
                    user=MASTER_USER, env=env.master_env(), cwd="/tmp", timeout=60)
        assert proc.returncode == 0, proc.stderr
        env.start_master()
        yield env
    finally:
        env.cleanup()


def _last_tid(path):
    return storage.hex_tid(storage.Storage(str(path)).last_tid())


def _cron_command(name):
    """The command of the entry the schedule role wrote into /etc/cron.d."""
    text = Path(f"/etc/cron.d/ds-replica-{name}").read_text()
    jobs = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(jobs) == 1, text
    fields = jobs[0].split(None, 6)
    return fields[5], fields[6].replace("\\%", "%")


def _recap_hosts(stdout):
    """The host lines of the PLAY RECAP of an ansible-playbook run."""
    recap = stdout.split("PLAY RECAP", 1)[1]
    return [ln for ln in recap.splitlines() if re.match(r"^\S+\s+: ok=", ln)]


def _recap_hosts_named(proc):
    names = [ln.split()[0] for ln in _recap_hosts(proc.stdout)]
    assert len(names) == 1 + len(STANDBY_USERS), proc.stdout[-3000:]  # the master and the standbys
    return names


def assert_nothing_changed(proc, hosts):
    """Idempotency: each of `hosts` has a recap line, and every one says
    changed=0 (not just one of them)."""
    lines = {ln.split()[0]: ln for ln in _recap_hosts(proc.stdout)}
    assert set(hosts) <= set(lines), (hosts, proc.stdout[-3000:])
    assert all(re.search(r"\bchanged=0\s", lines[h]) for h in hosts), proc.stdout[-3000:]


def test_provision_replicate_schedule(e2e):
    t0 = time.monotonic()
    master = e2e.master_home

    # -- provision from empty standbys ---------------------------------------------
    e2e.playbook("provision.yml")
    for host in STANDBY_USERS:
        assert_reads_as(e2e.replica(host), master)
        assert os.stat(e2e.replica(host) / "A").st_uid == pwd.getpwnam(STANDBY_USERS[host]).pw_uid
    conf = (master / "config" / "snapshot.conf").read_text()
    assert f"http {e2e.master_url} snapshot-access-1" in conf and "nodirect" in conf
    access = master / "config" / "snapshot-access-1"
    assert access.read_text().strip() == f"replica:{e2e.password}"
    assert access.stat().st_mode & 0o777 == 0o600
    keys = e2e.sshd.authorized_keys_path(MASTER_USER).read_text()
    assert keys.count(f'restrict,command="/usr/local/bin/ds-replica serve {master}"') == 2, keys
    # provisioning again changes nothing
    again = e2e.playbook("provision.yml")
    assert_nothing_changed(again, hosts=_recap_hosts_named(again))

    # -- new transactions; one pull on every standby ---------------------------------
    e2e.write_more(seconds=1.0, seed=2)
    newest = _last_tid(master)
    _unused, report = e2e.replicate()
    for host in STANDBY_USERS:
        (result,) = report[host]
        assert result["changed"] is True and result["transactions"] > 0 and result["bytes"] > 0, result
        assert result["after_tid"] == newest
        assert_reads_as(e2e.replica(host), master)
    # nothing new: nothing changes
    proc, report = e2e.replicate()
    for host in STANDBY_USERS:
        (result,) = report[host]
        assert result["changed"] is False and result["transactions"] == 0, result
    # (its localhost play rewrites the report file, which e2e.replicate() removed first)
    assert_nothing_changed(proc, hosts=STANDBY_USERS)

    # -- check mode reports what would come and changes nothing ------------------------
    e2e.write_more(seconds=0.7, seed=3)
    before = {h: replica_state(e2e.replica(h)) for h in STANDBY_USERS}
    _unused, report = e2e.replicate("--check")
    announced = {h: report[h][0]["transactions"] for h in STANDBY_USERS}
    for host in STANDBY_USERS:
        (result,) = report[host]
        assert result["changed"] is True and result["transactions"] > 0, result
        assert replica_state(e2e.replica(host)) == before[host]

    # -- the cron entry, run by hand as the replica account ------------------------------
    host = "standby1"
    name = STORAGES[host]
    user, command = _cron_command(name)
    assert user == STANDBY_USERS[host]
    assert command.startswith("flock -n"), command
    run = _run(["su", "-s", "/bin/sh", user, "-c", command], timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == "", (run.stdout, run.stderr)  # cron mails nothing
    assert_reads_as(e2e.replica(host), master)
    _check_metrics(e2e, host, name, ok=True, transactions=announced[host])

    # a failing run (master unreachable) keeps the last success and reports the failure
    # (a wrong master path would not do: the forced command serves its one storage whatever is asked)
    prom = e2e.metrics_dir / f"dirstorage_{name}.prom"
    last_success = _metrics(prom)["dirstorage_replication_last_success_timestamp_seconds"]
    broken = command.replace(f" -p {e2e.sshd.port} ", " -p 9 ")
    assert broken != command, command
    run = _run(["su", "-s", "/bin/sh", user, "-c", broken], timeout=120)
    assert run.returncode != 0 and run.stderr, "a failed pull must exit non-zero with a message (cron mails it)"
    values = _metrics(prom)
    assert values["dirstorage_replication_last_result"] == 0
    assert values["dirstorage_replication_last_success_timestamp_seconds"] == last_success

    # -- the standby's key only runs `ds-replica serve <storage>` on the master ----------
    ssh = e2e.sshd.ssh_argv("cat", "/etc/passwd", user=MASTER_USER, host=HOSTS[0], key=e2e.key(host))
    proc = _run(ssh, timeout=60)
    assert "root:" not in proc.stdout, proc.stdout
    # the forced command ran instead: a serve that got no request (not an ssh failure, 255)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "ds-replica serve: malformed request: the request ended early" in proc.stderr, proc.stderr

    # -- schedule state=absent removes the entries and metrics ---------------------------
    e2e.playbook("schedule.yml", "-e", "schedule_state=absent")
    for n in STORAGES.values():
        assert not Path(f"/etc/cron.d/ds-replica-{n}").exists()
        assert not (e2e.metrics_dir / f"dirstorage_{n}.prom").exists()

    print(f"e2e took {time.monotonic() - t0:.1f}s", file=sys.stderr)


def _metrics(prom):
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(prom.read_text()):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values


def _check_metrics(e2e, host, name, ok, transactions):
    from prometheus_client.parser import text_string_to_metric_families

    prom = e2e.metrics_dir / f"dirstorage_{name}.prom"
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
