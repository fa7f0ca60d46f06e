"""A fleet on loopback for end-to-end tests of the roles and playbooks.

``Fleet`` is one master and some standbys. With ``containers=True`` each host
is a container of its own (testbed/harness/container.py: this machine's
Debian booted by ``systemd-nspawn``, systemd as PID 1) with its own
``/etc/passwd``, ``/etc/group``, ``/etc/cron.d``, ``/usr/local`` and
``/opt``, as on a real fleet, and its own OpenSSH sshd on its own loopback
address (127.0.0.0/8; the containers share this machine's network). A host
shares only its folder ``base/<host>/`` with this machine (its storage or
replica, its sshd's folder, its metrics), and the fleet's python path read-only.
The fleet's accounts and processes live in their host: ``fleet.on(host)``
runs a command there (``run``, ``popen``, as any of its accounts), tells an
account's ids (``account``) and where this machine sees one of its files
(``path``). Ansible reaches every host as root, with host key checking on.

A container that cannot be booted falls back to loopback, loudly (a
``LoopbackFallbackWarning`` in pytest's summary and a banner on stderr),
never silently (``fallback=False``: it fails instead): every host is then an address of one sshd on this machine,
sharing its accounts and files (``containers=False`` asks for that). The
master account and the replica accounts are real accounts made by the
fleet; the master storage is the simulated storage process
(``testbed/fakes/simulated_storage.py``) run as the master account on the
master host, answering enterSnapshot/leaveSnapshot over XML-RPC with basic
auth, so the master role's ``http`` snapshot method is what the pulls use.

Several E2E test files can use it without colliding (as long as they use
other names): everything a fleet makes is named after its ``prefix`` (the
accounts, the metrics groups) or its storages (the cron files), and with
``own_paths=True`` ds-replica, its library and the cron wrapper are installed
under ``/opt/<prefix>/`` (the collection-level ``dirstorage_replication_bin``
and ``dirstorage_replication_lib_dir``) instead of the default system paths.
``cleanup()`` removes all of it. ``role_packages=False`` tells the roles to install no
Debian package (``standby_paramiko: none``, ``schedule_install_cron: false``): a
fleet that applies the roles many times leaves that to another test.

On loopback the "hosts" share one /etc/group, which a real fleet never does:
two hosts creating the same metrics group at once raced (``groupadd: group
'dsfo-metrics' already exists``). So there each host gets its own metrics group
(``metrics_group(host)``), set on every host of the inventory after
``inventory_hook``: no two hosts ever create or chgrp the same thing. The cron
wrapper names its host's metrics folder, so each host but the first standby
gets its own wrapper too (``wrapper_path(host)``). The first standby keeps the
role's default group and wrapper when ``own_paths`` is false, so the default
is still what one host runs. In containers every host keeps the defaults.
Every host has its own metrics folder (``metrics_dir(host)``).

    fleet = Fleet("dsfo", master_ip="127.0.0.2",
                  standbys={"standby1": ("127.0.0.3", "dsfoone", "fo_one")}, own_paths=True)
    with fleet.running():   # sshd, accounts, a master storage with some history
        fleet.playbook("provision.yml")
        fleet.write_more(seconds=1.0)
        proc, report = fleet.replicate()

``inventory_hook(inventory_dict)`` (an attribute) may change the inventory
before each run, e.g. to make a standby the master of another.

Several masters over time (failover tests): ``start_storage(home, user)``
runs the simulated storage on any folder as any account (e.g. a promoted
standby's replica, with the master role's snapshot.conf), ``write_on(home,
user)`` writes more there, and ``commit_on(home, user, descriptions)``
commits one named transaction per description on a stopped storage; each on
the host whose folder holds ``home``.

Root only (real accounts, containers, /etc/cron.d).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from dirstorage_replica import storage
from testbed.harness.container import Account, BootedHost, ContainerError
from testbed.harness.sshd import SSHD, ensure_local_user, free_port, remove_local_user, start_sshd

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
DEFAULT_SYSTEM_FILES = ["/usr/local/bin/ds-replica", "/usr/local/bin/ds-replica-cron", "/opt/ds-replica"]
DEFAULT_GROUP = "dirstorage-metrics"


def run(argv, **kw):
    """A command's CompletedProcess (text, no stdin, never raises on its exit status)."""
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw, check=False)


def last_tid(path):
    return storage.hex_tid(storage.Storage(str(path)).last_tid())


class LoopbackFallbackWarning(UserWarning):
    """A fleet's hosts could not be containers: they are loopback addresses of this machine."""


class LocalHost:
    """This machine as a fleet host (the loopback fallback): the calls of a container host
    (testbed/harness/container.py's BootedHost) on this machine's own accounts and files."""

    name = "localhost"

    @staticmethod
    def run(argv, user=None, env=None, cwd=None, **kw):
        return run(argv, user=user, env=env, cwd=cwd, **kw)

    @staticmethod
    def popen(argv, user=None, env=None, cwd=None, **kw):
        if user is not None:
            account = LocalHost.account(user)
            kw.update(user=account.uid, group=account.gid, extra_groups=[])
        return subprocess.Popen(argv, env=env, cwd=cwd, **kw)

    @staticmethod
    def account(user):
        entry = pwd.getpwnam(user)
        return Account(entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @staticmethod
    def ensure_user(user):
        ensure_local_user(user)
        return LocalHost.account(user)

    @staticmethod
    def path(path):
        return Path(path)

    def stop(self):
        pass


def cron_command(name, host=LocalHost):
    """(user, command) of the entry the schedule role wrote into /etc/cron.d for storage `name` on
    `host` (a fleet host: ``fleet.on(name)``)."""
    text = host.path(f"/etc/cron.d/ds-replica-{name}").read_text()
    jobs = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(jobs) == 1, text
    fields = jobs[0].split(None, 6)
    return fields[5], fields[6].replace("\\%", "%")


def recap_hosts(stdout):
    """The host lines of the PLAY RECAP of an ansible-playbook run."""
    recap = stdout.split("PLAY RECAP", 1)[1]
    return [ln for ln in recap.splitlines() if re.match(r"^\S+\s+: ok=", ln)]


def recap_counts(stdout):
    """{host: {"ok": n, "changed": n, "unreachable": n, "failed": n, ...}} of the PLAY RECAP."""
    return {ln.split()[0]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", ln)} for ln in recap_hosts(stdout)}


def task_outcomes(stdout, task, prefix=False):
    """[(status, host, item label or None)] of every run of the task named `task` (its name
    without the role, or its start if `prefix`): e.g. ("changed", "master", "fo_old: ...")."""
    found, inside = [], False
    for line in stdout.splitlines():
        header = re.match(r"^TASK \[(?:[^\]:]+ : )?(.*?)\] \**$", line)
        if header or line.startswith(("PLAY ", "PLAY RECAP")):
            inside = bool(header) and (header.group(1).startswith(task) if prefix else header.group(1) == task)
            continue
        m = re.match(r"^(ok|changed|skipping|failed|fatal): \[([^\]]+)\](?: => \(item=(.*?)\))?", line)
        if inside and m:
            found.append((m.group(1), m.group(2), m.group(3)))
    return found


def assert_nothing_changed(proc, hosts):
    """Idempotency: each of `hosts` has a recap line, and every one says
    changed=0 (not just one of them)."""
    lines = {ln.split()[0]: ln for ln in recap_hosts(proc.stdout)}
    assert set(hosts) <= set(lines), (hosts, proc.stdout[-3000:])
    assert all(re.search(r"\bchanged=0\s", lines[h]) for h in hosts), changed_tasks(proc.stdout)


def changed_tasks(stdout):
    """The task headers and "changed:" lines of a playbook's output (what broke idempotency)."""
    kept, header = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            header = line
        elif line.startswith("changed: ") and header is not None:
            if header not in kept:
                kept.append(header)
            kept.append(line)
    return "\n".join(kept) or stdout[-3000:]


class Fleet:
    """One master and its standbys on loopback (see the module docstring).

    `standbys`: {inventory name: (address, replica account, storage name)}.
    """

    def __init__(self, prefix, master_ip, standbys, own_paths=False, master_storage="main", role_packages=True,
                 containers=True, fallback=True):
        self.prefix = prefix
        self.role_packages = role_packages
        self.master_ip = master_ip
        self.standbys = dict(standbys)
        self.master_user = prefix + "master"
        self.master_storage = master_storage
        self.own_paths = own_paths
        self.containers = containers
        self.fallback = fallback  # to loopback if a container cannot be booted; if False, that fails
        self.opt = Path("/opt") / prefix
        self.system_files = [str(self.opt)] if own_paths else list(DEFAULT_SYSTEM_FILES)
        # not under /tmp: a unit with PrivateTmp=yes (the follower's) does not see a replica there
        self.base = Path(tempfile.mkdtemp(prefix=f"ds-{prefix}-", dir="/srv" if containers else None))
        os.chmod(self.base, 0o755)
        self.sshd = None  # the master host's (on loopback: every host's)
        self.sshds = {}  # {inventory host: its sshd}, in containers
        self.hosts_on = {}  # {inventory host: BootedHost}, in containers
        self.port = None
        self.master_proc = None
        self.master_url = None
        self.password = prefix + "-" + os.urandom(8).hex()
        self.xmlrpc_port = None
        self.preexisting = {p for p in self.system_files if os.path.exists(p)}
        self.users = []
        self.groups = set()
        self.inventory_hook = None

    # -- paths --------------------------------------------------------------------
    @property
    def hosts(self):
        return [self.master_ip] + [ip for ip, _user, _name in self.standbys.values()]

    @property
    def names(self):
        """The inventory names of the hosts: the master first."""
        return ["master", *self.standbys]

    def address(self, host):
        return self.master_ip if host == "master" else self.standbys[host][0]

    @property
    def master_home(self):
        return self.base / "master" / "storage"

    def on(self, host):
        """Inventory host `host`: its container, or this machine on loopback (see the module docstring)."""
        return self.hosts_on.get(host, LocalHost)

    def host_of(self, path):
        """The host whose folder (base/<host>/) holds `path`."""
        return self.on(Path(path).relative_to(self.base).parts[0])

    def sshd_of(self, host):
        """The sshd of inventory host `host` (on loopback, the one sshd of every host)."""
        return self.sshds.get(host, self.sshd)

    @property
    def known_hosts(self):
        """The known_hosts file with every host's key, as Ansible checks them."""
        return self.base / "known_hosts" if self.sshds else self.sshd.known_hosts_path

    def metrics_dir(self, host):
        """The textfile collector folder of inventory host `host` (its own: see the module docstring)."""
        return self.base / host / "metrics"

    def metrics_group(self, host):
        """The metrics group of inventory host `host`: its own on loopback, so that no two hosts create it at
        once; the role's default in a container, which has its own /etc/group."""
        if self.hosts_on or (not self.own_paths and host == next(iter(self.standbys))):
            return DEFAULT_GROUP
        return f"{self.prefix}-{host}-metrics"[:32]

    @property
    def bin(self):
        """Path of ds-replica on every host."""
        return str(self.opt / "bin" / "ds-replica") if self.own_paths else DEFAULT_SYSTEM_FILES[0]

    def replica(self, host):
        return self.base / host / "replica"

    def user(self, host):
        return self.standbys[host][1]

    def storage_name(self, host):
        return self.standbys[host][2]

    def key(self, host):
        """Where this machine reads the private key `host`'s replica account pulls with."""
        home = self.on(host).account(self.user(host)).home
        return self.on(host).path(Path(home) / ".ssh" / f"ds-replica-{self.storage_name(host)}")

    def cron_file(self, host, name=None):
        """Where this machine reads the cron file of storage `name` (`host`'s own by default) on `host`."""
        return self.on(host).path(f"/etc/cron.d/ds-replica-{name or self.storage_name(host)}")

    def cron_command(self, host, name=None):
        """(user, command) of that cron file's entry."""
        return cron_command(name or self.storage_name(host), self.on(host))

    # -- setting up -----------------------------------------------------------------
    @contextlib.contextmanager
    def running(self):
        """sshd, the accounts and a master storage with some history; cleaned up on exit."""
        if not os.path.exists(SSHD):
            pytest.fail(f"{SSHD} missing: run `make deps` as root", pytrace=False)
        try:
            self.start()
            yield self
        finally:
            self.cleanup()

    def start(self):
        self.master_env()  # its python path, which every host reads
        (self.base / "master").mkdir(mode=0o755)
        if self.containers:
            for host in self.standbys:  # shared with its container (on loopback the standby role makes it)
                (self.base / host).mkdir(mode=0o755)
            self.containers = self._boot_hosts()
        if self.containers:
            self._start_sshds()
        else:
            self._start_loopback_sshd()
        for host in self.names:
            for user in [self.master_user] if host == "master" else [self.user(host)]:
                self._make_user(host, user)
        if self.own_paths:  # the install role writes ds-replica into an existing folder
            for host in self.names:
                self.on(host).run(["mkdir", "-p", str(self.opt / "bin")])
        self._own_folders()
        self.xmlrpc_port = free_port()
        self.run_master("--create", "bushy", "--rate", "40", "--duration", "1", "--seed", "1")
        self.start_master()

    def _boot_hosts(self):
        """A container per host; False, loudly, if one cannot be booted (the loopback fallback)."""
        try:
            for host in self.names:
                booted = BootedHost(f"{self.prefix}-{host}", self.base / "containers" / host,
                                    binds=[self.base / host], binds_ro=[ROOT, self.base / "pylib"])
                self.hosts_on[host] = booted.start()
                # root's shell startup files of this machine (pyenv) are not the host's business
                booted.sh("rm -f /root/.bashrc /root/.profile; mkdir -p /run/sshd")
        except ContainerError as e:
            for booted in self.hosts_on.values():
                booted.stop()
            self.hosts_on = {}
            if not self.fallback:
                raise
            what = (f"E2E fleet {self.prefix}: a container could not be booted, its hosts are LOOPBACK ADDRESSES "
                    f"of this machine sharing its accounts and files: {str(e).splitlines()[0]}")
            print("\n" + "!" * 78 + "\n" + what + "\n" + "!" * 78, file=sys.stderr)
            warnings.warn(LoopbackFallbackWarning(what), stacklevel=2)
            return False
        return True

    def _start_loopback_sshd(self):
        self.sshd = start_sshd(listen=self.hosts)
        self.sshd.authorize("root", self.sshd.client_pub_line)
        self.port = self.sshd.port

    def _start_sshds(self):
        """Each host's own sshd in its container, on its address and the fleet's one port, with its own host
        key; root logs in with the master's client key everywhere."""
        self.port = free_port(self.hosts)
        for host in self.names:
            self.sshds[host] = start_sshd([self.address(host)], port=self.port, inside=self.on(host),
                                          tmpdir=str(self.base / host))
        self.sshd = self.sshds["master"]
        for sshd in self.sshds.values():
            sshd.authorize("root", self.sshd.client_pub_line)
        self.known_hosts.write_text("".join(s.known_hosts_path.read_text() for s in self.sshds.values()))

    def _make_user(self, host, user):
        if not self.containers:
            try:
                pwd.getpwnam(user)
            except KeyError:
                self.users.append(user)
        return self.on(host).ensure_user(user)

    def _own_folders(self):
        """The master's folder is the master account's; a standby's folder made for its container (bound
        before the role could make it) is its replica account's, as the standby role would make it."""
        self._chown(self.base / "master", "master", self.master_user)
        for host in self.standbys:
            if (self.base / host).is_dir():
                self._chown(self.base / host, host, self.user(host))

    def _chown(self, path, host, user):
        account = self.on(host).account(user)
        os.chown(path, account.uid, account.gid)

    # -- the master storage, run as the master account --------------------------------
    def master_env(self):
        pylib = self.base / "pylib"
        if not pylib.exists():
            pylib.mkdir()
            (pylib / "dirstorage_replica").symlink_to(ROOT / "plugins" / "module_utils")
            (pylib / "testbed").symlink_to(ROOT / "testbed")
            os.chmod(pylib, 0o755)
        return dict(PATH="/usr/bin:/bin", PYTHONPATH=str(pylib), PYTHONDONTWRITEBYTECODE="1", HOME="/tmp")

    def master_argv(self, *args):
        return self.storage_argv(self.master_home, *args)

    def run_master(self, *args, timeout=60):
        """Run the simulated storage on the master's folder once (it must not be serving)."""
        self._run_storage(self.master_home, self.master_user, *args, timeout=timeout)

    def write_more(self, seconds=1.0, rate=30, seed=None):
        """Stop the serving master, commit transactions for `seconds`, start it again."""
        self.stop_master()
        self.run_master("--rate", str(rate), "--duration", str(seconds),
                        *(["--seed", str(seed)] if seed is not None else []))
        self.start_master()

    def start_master(self, rate=0):
        """The master serving its snapshot toolkit, committing `rate` transactions per second (0: none)."""
        self.master_proc, self.master_url = self.start_storage(self.master_home, self.master_user, self.xmlrpc_port,
                                                               rate=rate)

    def stop_master(self):
        self.stop_storage(self.master_proc)
        self.master_proc = None

    def master_host_down(self):
        """The master host goes down: its storage process ends, and its address refuses ssh (its sshd,
        or on loopback the fleet's, stops listening there and ends the sessions open to it)."""
        self.stop_master()
        self.sshd.listen_on([h for h in self.sshd.hosts if h != self.master_ip])

    def master_host_up(self):
        """The master host is back: its address answers ssh again (its storage process is not started)."""
        self.sshd.listen_on([self.master_ip] if self.sshds else self.hosts)

    # -- storages on any folder (failover: several masters over time) ----------------
    def storage_argv(self, home, *args):
        return ["/usr/bin/python3", "-m", "testbed.fakes.simulated_storage", str(home), *args]

    def _run_storage(self, home, user, *args, timeout=60):
        """The simulated storage run once on `home` (stopped) as `user`, on the host that holds it."""
        proc = self.host_of(home).run(self.storage_argv(home, *args), user=user, env=self.master_env(), cwd="/tmp",
                                      timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def start_storage(self, home, user, port, rate=0):
        """The simulated storage serving `home` as `user` on the host that holds it, its toolkit on
        `port`, committing `rate` transactions per second (0: none): (process, toolkit url). The
        process's `pid` is the one its host sees."""
        proc = self.host_of(home).popen(
            self.storage_argv(home, "--xmlrpc-port", str(port), "--user", "replica", "--password", self.password,
                              "--rate", str(rate)),
            user=user, env=self.master_env(), cwd="/tmp", stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline()
        assert line.startswith("READY "), line + proc.stderr.read()
        return proc, line.split()[1]

    @staticmethod
    def stop_storage(proc):
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)

    def write_on(self, home, user, seconds=1.0, rate=30, seed=None):
        """Commit transactions for `seconds` on the stopped storage `home`, as `user`."""
        self._run_storage(home, user, "--rate", str(rate), "--duration", str(seconds),
                          *(["--seed", str(seed)] if seed is not None else []))

    def commit_on(self, home, user, descriptions):
        """One transaction per description on the stopped storage `home`, as `user`; their tids (hex)."""
        code = ("import sys; from testbed.fakes.simulated_storage import SimulatedStorage; "
                "from dirstorage_replica.storage import hex_tid\n"
                "with SimulatedStorage(sys.argv[1]) as s:\n"
                "    for d in sys.argv[2:]:\n"
                "        print(hex_tid(s.commit({s.new_oid(): d.encode()}, user=b'fo', description=d.encode())))")
        proc = self.host_of(home).run(["/usr/bin/python3", "-c", code, str(home), *descriptions], user=user,
                                      env=self.master_env(), cwd="/tmp", timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    # -- ansible ------------------------------------------------------------------
    def ssh_common_args(self):
        return " ".join([
            "-F /dev/null", "-o IdentitiesOnly=yes", f"-o UserKnownHostsFile={self.known_hosts}",
            "-o GlobalKnownHostsFile=/dev/null", "-o StrictHostKeyChecking=yes", "-o BatchMode=yes",
        ])

    def group_vars(self):
        s = self.sshd
        gv = {
            "ansible_connection": "ssh",
            "ansible_user": "root",
            "ansible_port": self.port,
            "ansible_ssh_private_key_file": str(s.client_key_path),
            "ansible_ssh_common_args": self.ssh_common_args(),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_pipelining": True,
            "ansible_become_method": "su",
            "schedule_minute": "*/30",
        }
        if not self.role_packages:
            # the roles' apt tasks take 3-10 s per playbook on this one machine (its hosts wait on
            # one dpkg lock); the packages are installed by `make deps` and other E2E tests run them
            gv.update(standby_paramiko="none", schedule_install_cron=False)
        if self.own_paths:
            gv.update(dirstorage_replication_bin=self.bin,
                      dirstorage_replication_lib_dir=str(self.opt / "lib"),
                      schedule_bin=str(self.opt / "bin" / "ds-replica-cron"))
        return gv

    def wrapper_path(self, host):
        """Where inventory host `host`'s cron wrapper goes on loopback: the wrapper holds its host's
        metrics folder, so two hosts of this one machine writing one file would undo each other at
        every run. The first standby keeps the group's (the role's default when ``own_paths`` is
        false), and so does every host in a container."""
        if self.hosts_on or host == next(iter(self.standbys)):
            return None
        return self.base / "wrappers" / host / "ds-replica-cron"

    def _own_metrics(self, inv):
        """Each host of `inv` its own metrics folder, and on loopback its own group and the cron
        wrapper that names that folder (unless the test set them)."""
        for group in inv["all"]["children"].values():
            for host, hvars in group.get("hosts", {}).items():
                hvars.setdefault("schedule_textfile_group", self.metrics_group(host))
                hvars.setdefault("schedule_textfile_dir", str(self.metrics_dir(host)))
                self.groups.add(hvars["schedule_textfile_group"])
                wrapper = self.wrapper_path(host)
                if wrapper is not None and "schedule_bin" not in hvars:
                    wrapper.parent.mkdir(parents=True, exist_ok=True)
                    hvars["schedule_bin"] = str(wrapper)

    def master_access_vars(self, host, user):
        """The master role's variables of inventory host `host` serving as `user`: where its sshd
        reads that account's keys (the test sshd's own folder, AuthorizedKeysFile) and its own host
        key file, which its standbys pin."""
        s = self.sshd_of(host)
        return {"master_user": user, "master_authorized_keys_file": str(s.authorized_keys_path(user)),
                "master_host_key_file": str(s.workdir / "ssh_host_ed25519_key.pub")}

    def master_vars(self):
        return {
            "ansible_host": self.master_ip,
            **self.master_access_vars("master", self.master_user),
            "master_storages": [{
                "name": self.master_storage,
                "path": str(self.master_home),
                "snapshot": [
                    {"http": {"url": self.master_url, "user": "replica", "password": self.password}},
                    "nodirect",
                ],
            }],
        }

    def standby_vars(self, host):
        ip, user, name = self.standbys[host]
        return {
            "ansible_host": ip,
            "standby_user": user,
            # on loopback the "hosts" share one host name, which a standby's name defaults to: the
            # master would record them all as one standby (misc/standbys), as real hosts never are
            "standby_name": host,
            "standby_storages": [{"name": name, "master_path": str(self.master_home), "path": str(self.replica(host))}],
        }

    def inventory(self):
        inv = {"all": {
            "vars": self.group_vars(),
            "children": {
                "dirstorage_masters": {"hosts": {"master": self.master_vars()}},
                "dirstorage_standbys": {"hosts": {h: self.standby_vars(h) for h in self.standbys}},
            },
        }}
        if self.inventory_hook is not None:
            self.inventory_hook(inv)
        self._own_metrics(inv)
        path = self.base / "inventory.json"
        path.write_text(json.dumps(inv, indent=2))
        return path

    def playbook(self, name, *extra, check_rc=True, timeout=900):
        """Run playbooks/NAME against the fleet's inventory (the timeout is generous: a loaded
        2-core machine took over 5 minutes for provision.yml)."""
        env = dict(os.environ)
        env.update(ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.base / "cp"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOST_KEY_CHECKING="True")
        argv = [str(PLAYBOOK), "-i", str(self.inventory()), str(ROOT / "playbooks" / name), *extra]
        proc = run(argv, cwd=ROOT, env=env, timeout=timeout)
        if check_rc:
            assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        return proc

    def replicate(self, *extra, check_rc=True, timeout=300):
        """replicate.yml; returns (process, its report: {host: [result per storage]})."""
        report = self.base / "report.json"
        report.unlink(missing_ok=True)
        proc = self.playbook("replicate.yml", "-e", f"dirstorage_replicate_report={report}", *extra,
                             check_rc=check_rc, timeout=timeout)
        return proc, json.loads(report.read_text()) if report.exists() else {}

    # -- teardown -------------------------------------------------------------------
    def cleanup(self):
        self.stop_master()
        for sshd in {id(s): s for s in [self.sshd, *self.sshds.values()] if s is not None}.values():
            sshd.stop()
        for booted in self.hosts_on.values():  # their accounts, cron files and installed files with them
            booted.stop()
        if not self.hosts_on:
            self._clean_this_machine()
        shutil.rmtree(self.base, ignore_errors=True)

    def _clean_this_machine(self):
        for _ip, _user, name in self.standbys.values():
            Path(f"/etc/cron.d/ds-replica-{name}").unlink(missing_ok=True)
            Path(f"/run/lock/ds-replica-{name}.lock").unlink(missing_ok=True)
        for user in self.users:
            remove_local_user(user)
        for group in self.groups:
            run(["groupdel", group])
        for p in self.system_files:
            if p not in self.preexisting:
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.exists(p):
                    os.unlink(p)
