"""A real OpenSSH ``sshd`` on loopback, for integration tests.

``start_sshd(listen=["127.0.0.1"], port=None)`` starts ``/usr/sbin/sshd -D``
as a child process with its own config, host key and log in a fresh temporary
folder, waits until it answers with an SSH banner on every listen address, and
returns an :class:`Sshd`. Call ``.stop()`` (or use it as a context manager)
to kill it and remove the folder. ``tests/conftest.py`` exposes a
session-scoped ``sshd`` fixture built on it.

Authentication is by public key only, from per-user files
``<workdir>/authorized_keys/<user>`` (``AuthorizedKeysFile .../%u``), so tests
never touch ``~/.ssh``. When run as root, any local account can log in once
authorized (root too, ``PermitRootLogin prohibit-password``); when run as
another user, only that user can.

All files are created world-readable (except private keys) because sshd
reads ``authorized_keys`` with the privileges of the user logging in.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"


class SshdError(RuntimeError):
    pass


def free_port(addresses=("127.0.0.1",)) -> int:
    """A TCP port that is free on all ``addresses`` right now."""
    for _unused in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        ok = True
        for addr in addresses[1:]:
            with socket.socket() as s:
                try:
                    s.bind((addr, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise SshdError(f"no free port on {addresses}")


def make_keypair(directory: os.PathLike | str, name: str = "id_ed25519", comment: str = "") -> tuple[Path, str]:
    """Generate an ed25519 key pair ``directory/name`` (+ ``.pub``); return (private path, public line)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    for p in (key, key.with_name(name + ".pub")):
        if p.exists():
            p.unlink()
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment or name, "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    os.chmod(key, 0o600)
    pub = key.with_name(name + ".pub")
    os.chmod(pub, 0o644)
    return key, pub.read_text().strip()


def ensure_local_user(name: str, home: os.PathLike | str | None = None, shell: str = "/bin/bash"):
    """Create local account ``name`` if missing (root only) and return its ``pwd`` entry.

    The password field is set to ``*`` (no password, but *not* locked): with
    ``UsePAM no`` sshd refuses accounts whose password starts with ``!``, which is
    what a plain ``useradd`` leaves. Remove it with ``remove_local_user(name)``."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise SshdError(f"cannot create local user {name!r}: not root") from None
        cmd = ["useradd", "--create-home", "--shell", shell, "--password", "*"]
        if home is not None:
            cmd += ["--home-dir", str(home)]
        subprocess.run(cmd + [name], check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return pwd.getpwnam(name)
    if os.geteuid() == 0:
        subprocess.run(["usermod", "--password", "*", name], check=True, capture_output=True)
    return entry


def remove_local_user(name: str) -> None:
    """Delete a local account made by :func:`ensure_local_user`, with its home (root only)."""
    subprocess.run(["userdel", "--remove", name], capture_output=True, stdin=subprocess.DEVNULL, check=False)


def _known_host_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class Sshd:
    """A running sshd. Attributes:

    - ``host``: first listen address (``"127.0.0.1"``); ``hosts``: all of them
    - ``port``
    - ``host_key_pub_line``: ``"ssh-ed25519 AAAA..."`` (no host name)
    - ``known_hosts_path``: file with ``[host]:port <key>`` for every listen address
    - ``client_key_path`` / ``client_pub_line``: a client key pair; ``user`` is
      already authorized with it
    - ``user``: name of the user running the tests
    - ``log_path``: sshd's log (``LogLevel VERBOSE``); ``log_text()`` reads it
    - ``workdir``: the temporary folder holding all of this
    """

    def __init__(self, workdir: Path, hosts: list[str], port: int, proc: subprocess.Popen, extra_config: str = "",
                 inside=None):
        self.workdir = workdir
        self.extra_config = extra_config
        self.inside = inside
        self.hosts = list(hosts)
        self.host = self.hosts[0]
        self.port = port
        self.proc = proc
        self.config_path = workdir / "sshd_config"
        self.log_path = workdir / "sshd.log"
        self.pid_path = workdir / "sshd.pid"
        self.host_key_path = workdir / "ssh_host_ed25519_key"
        self.host_key_pub_line = " ".join((workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        self.known_hosts_path = workdir / "known_hosts"
        self.client_key_path = workdir / "client" / "id_ed25519"
        self.client_pub_line = (workdir / "client" / "id_ed25519.pub").read_text().strip()
        self.user = getpass.getuser()

    # -- authorization -------------------------------------------------------

    def authorized_keys_path(self, user: str) -> Path:
        return self.workdir / "authorized_keys" / user

    def authorize(self, user: str, pubkey_line: str, options: str = "", append: bool = False) -> Path:
        """Write ``user``'s authorized_keys with one key (``options`` as in
        ``command="...",restrict``). ``append=True`` adds a line instead of replacing."""
        path = self.authorized_keys_path(user)
        line = f"{options} {pubkey_line}".strip() + "\n"
        with open(path, "a" if append else "w") as f:
            f.write(line)
        os.chmod(path, 0o644)
        return path

    @contextlib.contextmanager
    def authorized(self, user: str, pubkey_line: str, options: str = "", append: bool = False):
        """Like :meth:`authorize`, restoring the previous file afterwards (the
        ``sshd`` fixture is session-scoped, so tests that change access should use this)."""
        path = self.authorized_keys_path(user)
        old = path.read_bytes() if path.exists() else None
        self.authorize(user, pubkey_line, options=options, append=append)
        try:
            yield path
        finally:
            if old is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(old)

    # -- clients -------------------------------------------------------------

    def ssh_options(self, key: os.PathLike | str | None = None) -> list[str]:
        """``ssh`` options for strict, config-free connections to this server."""
        return [
            "-F", "/dev/null",
            "-i", str(key or self.client_key_path),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR",
            "-p", str(self.port),
        ]  # fmt: skip

    def ssh_argv(
        self, *command: str, user: str | None = None, host: str | None = None, key: os.PathLike | str | None = None
    ) -> list[str]:
        """argv for ``ssh ... user@host command...``."""
        return ["ssh", *self.ssh_options(key), f"{user or self.user}@{host or self.host}", *command]

    def ssh_command_string(self, key: os.PathLike | str | None = None) -> str:
        """A shell command line like ``ssh -F /dev/null -i KEY ... -p PORT`` (for ``-e SSHCMD``)."""
        return " ".join(["ssh", *self.ssh_options(key)])

    # -- state ---------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self._end_listener()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _end_listener(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def listen_on(self, hosts: list[str], timeout: float = 10.0) -> None:
        """Listen on ``hosts`` only, as before otherwise (port, host key, authorized keys): the
        listener is restarted, and every session open to an address left out is ended (an ssh
        client's multiplexed connection, as Ansible keeps, included). An address left out then
        refuses connections, as a host that is down; ``listen_on`` with it again brings it back.
        With no address at all, no listener is started (the only host of the sshd is down)."""
        dropped = set(self.hosts) - set(hosts)
        self._end_listener()
        for host in dropped:
            for pid in session_pids(host, self.port):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.hosts = list(hosts)
        if hosts:
            self.config_path.write_text(_config_text(self.workdir, list(hosts), self.port) + self.extra_config)
            self.proc = _launch(self.workdir, list(hosts), self.port, timeout, self.inside)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<Sshd {','.join(self.hosts)}:{self.port} pid={self.proc.pid}>"


def _config_text(workdir: Path, hosts: list[str], port: int) -> str:
    lines = [f"Port {port}"]
    lines += [f"ListenAddress {h}" for h in hosts]
    lines += [
        f"HostKey {workdir / 'ssh_host_ed25519_key'}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}/%u",
        "AuthorizedPrincipalsFile none",
        "StrictModes no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AuthenticationMethods publickey",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PermitUserEnvironment no",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "LoginGraceTime 30",
        "LogLevel VERBOSE",
        # ansible's ssh connection transfers files over sftp
        "Subsystem sftp internal-sftp",
    ]
    return "\n".join(lines) + "\n"


def _banner_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(
    listen: list[str] | tuple[str, ...] = ("127.0.0.1",),
    port: int | None = None,
    timeout: float = 10.0,
    extra_config: str = "",
    inside=None,
    tmpdir: str | None = None,
) -> Sshd:
    """Start a real OpenSSH sshd listening on ``listen`` (loopback addresses) and ``port``
    (a free one if None). Raises :class:`SshdError` with sshd's log if it does not come up
    within ``timeout`` seconds. ``extra_config`` is appended to sshd_config. ``inside``, a booted
    container (testbed/harness/container.py), runs sshd in it; its folder is then made in ``tmpdir``
    (a folder the container shares)."""
    if not os.path.exists(SSHD):
        raise SshdError(f"{SSHD} not found: install Debian's openssh-server (make deps, as root)")
    hosts = list(listen)
    if os.geteuid() == 0:
        # privilege separation directory, normally created by the service unit
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    attempts = 1 if port is not None else 3
    last_error = None
    for _unused in range(attempts):
        use_port = port if port is not None else free_port(hosts)
        workdir = Path(tempfile.mkdtemp(prefix="ds-sshd-", dir=tmpdir))
        os.chmod(workdir, 0o755)
        try:
            server = _start_once(workdir, hosts, use_port, timeout, extra_config, inside)
        except SshdError as e:
            last_error = e
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        return server
    raise last_error


def _start_once(workdir: Path, hosts: list[str], port: int, timeout: float, extra_config: str,
                inside=None) -> Sshd:
    make_keypair(workdir, "ssh_host_ed25519_key", comment="ds-test-host")
    host_pub = " ".join((workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    (workdir / "known_hosts").write_text("".join(f"{_known_host_name(h, port)} {host_pub}\n" for h in hosts))
    os.chmod(workdir / "known_hosts", 0o644)

    (workdir / "authorized_keys").mkdir(mode=0o755)
    os.chmod(workdir / "authorized_keys", 0o755)
    make_keypair(workdir / "client", "id_ed25519", comment="ds-test-client")
    os.chmod(workdir / "client", 0o755)

    config = workdir / "sshd_config"
    config.write_text(_config_text(workdir, hosts, port) + extra_config)

    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise SshdError(f"sshd -t rejected {config}:\n{check.stderr}\n--- config ---\n{config.read_text()}")
    proc = _launch(workdir, hosts, port, timeout, inside)
    server = Sshd(workdir, hosts, port, proc, extra_config, inside)
    server.authorize(server.user, server.client_pub_line)
    return server


def _launch(workdir: Path, hosts: list[str], port: int, timeout: float, inside=None):
    """Start sshd on its config in `workdir` (in the container `inside`, if given) and wait until
    every address answers with its banner."""
    config, log = workdir / "sshd_config", workdir / "sshd.log"
    stderr_path = workdir / "sshd.stderr"
    popen = inside.popen if inside is not None else subprocess.Popen
    with open(stderr_path, "wb") as stderr:
        proc = popen(
            [SSHD, "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    pending = list(hosts)
    while pending:
        if proc.poll() is not None:
            err = stderr_path.read_text(errors="replace")
            log_text = log.read_text(errors="replace") if log.exists() else ""
            raise SshdError(f"sshd exited with {proc.returncode} on port {port}:\n{err}{log_text}")
        if _banner_ok(pending[0], port):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            log_text = log.read_text(errors="replace") if log.exists() else ""
            raise SshdError(f"sshd did not answer on {pending[0]}:{port} within {timeout}s; log:\n{log_text}")
        time.sleep(0.05)
    return proc


def session_pids(host: str, port: int) -> list[int]:
    """The processes holding a TCP connection established to ``host``:``port`` (this machine's
    sshd sessions to that address), read from /proc/net/tcp and each process's open files."""
    a, b, c, d = (int(x) for x in host.split("."))
    local = "%02X%02X%02X%02X:%04X" % (d, c, b, a, port)
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "01":  # ESTABLISHED
                inodes.add("socket:[%s]" % fields[9])
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink("/proc/%s/fd/%s" % (entry, fd)) in inodes for fd in os.listdir("/proc/%s/fd" % entry)):
                pids.append(int(entry))
    return pids
