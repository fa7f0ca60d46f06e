# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ways to reach `ds-replica serve` on the master: in-process (a local
master), an OpenSSH command (`-e`), or paramiko (the default).

Each gives a Channel: send() the request, close_input(), read() the answer,
finish() -> (exit status, stderr text), abort().
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
import subprocess
import threading
import time

from . import snapshot
from .errors import DSError, TransportError
from .serve import serve

LOCAL_EXIT_REFUSED = 1


class Channel(object):
    """One connection to a `ds-replica serve` on the master: the request goes
    in on its input, the answer comes back on its output, and the serve's
    exit status and error text when it has ended.

    open_channel() returns one; Session (protocol.py) drives it: send the
    request, close_input(), read the answer, then finish().  abort() instead
    of finish() when the standby gives up early.  Implementations:
    LocalChannel (the serve in a thread of this process), ProcessChannel (an
    OpenSSH command line), ParamikoChannel (a paramiko SSH channel)."""

    def send(self, data):
        """Write `data` (bytes, the request) to the serve's input.  Returns
        nothing.  A serve that has already ended may make it raise OSError
        (BrokenPipeError), or, as ProcessChannel does, be ignored so that the
        answer says why."""
        raise NotImplementedError

    def close_input(self):
        """End the serve's input (it then sees the whole request).  Returns
        nothing; never called twice."""
        raise NotImplementedError

    def read(self, n):
        """Up to `n` bytes of the answer (fewer when fewer are there yet;
        b"" at its end).  Raises OSError or EOFError when the connection
        breaks, TransportError when the master stays silent past the
        channel's read timeout."""
        raise NotImplementedError

    def readline(self, limit):
        """One line of the answer, its b"\\n" included, at most `limit` bytes
        (shorter at the end of the answer; b"" after it).  Raises as read()."""
        raise NotImplementedError

    def finish(self):
        """Wait for the serve to end, after the answer has been read; returns
        (exit status, error text: what the serve wrote to stderr, or for
        LocalChannel its error as one line).  Closes the connection."""
        raise NotImplementedError

    def abort(self):
        """Stop the serve and close the connection at once, whatever the
        answer's state (after a failure, or to stop following).  Returns
        nothing and raises nothing a caller must handle."""
        raise NotImplementedError


class LocalChannel(Channel):
    """Runs the serve code in a thread of this process, on pipes."""

    def __init__(self, home, log=None, **serve_kwargs):
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        self._to_serve = os.fdopen(w_in, "wb", buffering=0)
        self._from_serve = os.fdopen(r_out, "rb", buffering=1 << 16)
        serve_in = os.fdopen(r_in, "rb")
        serve_out = os.fdopen(w_out, "wb", buffering=1 << 16)
        self.status = None
        self.error = ""

        def run():
            try:
                serve(home, serve_in, serve_out, log=log, **serve_kwargs)
                self.status = 0
            except DSError as e:
                self.error = "ds-replica serve: %s" % e
                self.status = LOCAL_EXIT_REFUSED
            except (BrokenPipeError, ValueError, OSError) as e:
                self.error = "ds-replica serve: connection lost (%s)" % e
                self.status = 1
            except Exception as e:  # report, never hang the caller
                self.error = "ds-replica serve: internal error: %r" % (e,)
                self.status = 1
            finally:
                for f in (serve_out, serve_in):
                    try:
                        f.close()
                    except OSError:
                        pass

        self._thread = threading.Thread(target=run, name="ds-replica-serve", daemon=True)
        self._thread.start()

    def send(self, data):
        self._to_serve.write(data)

    def close_input(self):
        self._to_serve.close()

    def read(self, n):
        return self._from_serve.read(n)

    def readline(self, limit):
        return self._from_serve.readline(limit)

    def finish(self):
        self._thread.join()
        self._from_serve.close()
        return self.status, self.error

    def abort(self):
        for f in (self._to_serve, self._from_serve):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        self._thread.join(timeout=30)


class ProcessChannel(Channel):
    """An OpenSSH (or any) command whose stdin/stdout reach the serve."""

    def __init__(self, argv):
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=1 << 16)
        except OSError as e:
            raise DSError("cannot run %s (%s)" % (argv[0], e.strerror), "check the -e/ssh_command option")
        self._err = []
        self._err_thread = threading.Thread(target=self._drain, daemon=True)
        self._err_thread.start()

    def _drain(self):
        for chunk in iter(lambda: self.proc.stderr.read(4096), b""):
            if sum(len(c) for c in self._err) < 1 << 20:
                self._err.append(chunk)

    def send(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the answer (an error) will say why

    def close_input(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def read(self, n):
        return self.proc.stdout.read1(n) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(n)

    def readline(self, limit):
        return self.proc.stdout.readline(limit)

    def finish(self):
        self.proc.stdout.close()
        status = self.proc.wait()
        self._err_thread.join()
        return status, b"".join(self._err).decode("utf-8", "replace")

    def abort(self):
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()


class ParamikoChannel(Channel):
    def __init__(self, client, chan, io_timeout=None):
        self.client = client
        self.chan = chan
        self._buf = b""
        self.io_timeout = io_timeout  # once the answer has begun

    def send(self, data):
        self.chan.sendall(data)

    def close_input(self):
        self.chan.shutdown_write()

    def read(self, n):
        if self._buf:
            data, self._buf = self._buf[:n], self._buf[n:]
            return data
        try:
            return self.chan.recv(n)
        except socket.timeout:
            raise TransportError("the master stopped answering (timeout)", "check the network and the master")

    def readline(self, limit):
        while b"\n" not in self._buf and len(self._buf) < limit:
            try:
                chunk = self.chan.recv(4096)
            except socket.timeout:
                raise TransportError("the master stopped answering (timeout)", "check the network and the master")
            if not chunk:
                break
            self._buf += chunk
        idx = self._buf.find(b"\n")
        cut = len(self._buf) if idx < 0 else idx + 1
        cut = min(cut, limit)
        line, self._buf = self._buf[:cut], self._buf[cut:]
        if self.io_timeout:
            self.chan.settimeout(self.io_timeout)
        return line

    def finish(self):
        status = self.chan.recv_exit_status()
        err = []
        while self.chan.recv_stderr_ready():
            err.append(self.chan.recv_stderr(65536))
        self.chan.close()
        self.client.close()
        return status, b"".join(err).decode("utf-8", "replace")

    def abort(self):
        try:
            self.chan.close()
        finally:
            self.client.close()


def remote_command(master_path, remote_command=None, remote_dir=None, verb="serve"):
    """The command line the master runs: quoted, never built unquoted."""
    if remote_command:
        exe = remote_command
    else:
        exe = os.path.join(remote_dir, "ds-replica") if remote_dir else "ds-replica"
    return " ".join(shlex.quote(w) for w in (exe, verb, master_path))


def openssh_argv(ssh_command, user, host, command, port=None, key_file=None, known_hosts_file=None,
                 accept_new_host_key=False, timeout=None):
    """The argv that runs `command` on the master through an OpenSSH client
    command line; explicit options become OpenSSH flags after the command's own
    (never through a shell).  `timeout` bounds connecting (ConnectTimeout: the
    TCP connection, the SSH handshake and key exchange), in whole seconds."""
    argv = shlex.split(ssh_command)
    if not argv:
        raise DSError("the ssh command is empty", "give a command such as 'ssh -p 2222'")
    if port:
        argv += ["-p", str(port)]
    if key_file:
        argv += ["-i", key_file]
    if known_hosts_file:
        argv += ["-o", "UserKnownHostsFile=%s" % known_hosts_file]
    if accept_new_host_key:
        argv += ["-o", "StrictHostKeyChecking=accept-new"]
    if timeout:
        argv += ["-o", "ConnectTimeout=%d" % max(1, math.ceil(timeout))]
    dest = "%s@%s" % (user, host) if user else host
    return argv + ["--", dest, command]


def openssh(ssh_command, user, host, command, **options):
    """Run `command` on the master through an OpenSSH client (see openssh_argv)."""
    return ProcessChannel(openssh_argv(ssh_command, user, host, command, **options))


def paramiko_connect(host, command, user=None, port=None, key_file=None, known_hosts_file=None,
                     accept_new_host_key=False, timeout=30.0, read_timeout=None):
    """`timeout` bounds connecting; `read_timeout` (default: the same) how long
    the master may stay silent, which must cover its wait for snapshot mode."""
    try:
        import paramiko
    except ImportError:
        raise DSError("paramiko is not installed", "install it (pip install paramiko) or use -e ssh")
    cfg = _ssh_config(paramiko, host)
    real_host = cfg.get("hostname", host)
    port = int(port or cfg.get("port", 22))
    user = user or cfg.get("user") or None
    if key_file is None and cfg.get("identityfile"):
        key_file = [os.path.expanduser(p) for p in cfg["identityfile"]]
    client = paramiko.SSHClient()
    kh = _load_host_keys(paramiko, client, known_hosts_file, accept_new_host_key)
    where = "%s%s:%d" % (user + "@" if user else "", real_host, port)
    try:
        client.connect(real_host, port=port, username=user, key_filename=key_file, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
    except Exception as e:
        client.close()
        raise _connect_error(paramiko, e, where, kh)
    if accept_new_host_key:
        try:
            client.save_host_keys(kh)
        except OSError:
            pass
    try:
        chan = client.get_transport().open_session(timeout=timeout)
        chan.settimeout(read_timeout or timeout)
        chan.exec_command(command)
    except (paramiko.SSHException, OSError) as e:
        client.close()
        raise TransportError("cannot start the replication command on %s (%s)" % (where, e))
    return ParamikoChannel(client, chan, io_timeout=timeout)


def _ssh_config(paramiko, host):
    """The ~/.ssh/config entry of `host` ({} if none or unreadable)."""
    user_config = os.path.expanduser("~/.ssh/config")
    if not os.path.exists(user_config):
        return {}
    try:
        return paramiko.SSHConfig.from_path(user_config).lookup(host)
    except (OSError, paramiko.SSHException):
        return {}


def _load_host_keys(paramiko, client, known_hosts_file, accept_new_host_key):
    """Load the known host keys (creating the file when new keys may be
    recorded) and set the policy for unknown ones; returns the file's path."""
    kh = os.path.expanduser(known_hosts_file or "~/.ssh/known_hosts")
    try:
        if os.path.exists(kh):
            client.load_host_keys(kh)
        elif accept_new_host_key:
            os.makedirs(os.path.dirname(kh) or ".", mode=0o700, exist_ok=True)
            open(kh, "a").close()
            client.load_host_keys(kh)
        if known_hosts_file is None and os.path.exists("/etc/ssh/ssh_known_hosts"):
            client.load_system_host_keys("/etc/ssh/ssh_known_hosts")
    except (OSError, paramiko.SSHException) as e:
        raise DSError("cannot read known hosts file %s (%s)" % (kh, e))
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept_new_host_key else paramiko.RejectPolicy())
    return kh


def _connect_error(paramiko, e, where, kh):
    """One clear error for a failed ssh connection (unexpected ones pass through)."""
    if isinstance(e, paramiko.BadHostKeyException):
        return DSError("the host key of %s has CHANGED since it was recorded in %s: refusing to connect (possible "
                       "man-in-the-middle)" % (where, kh),
                       "if the master was reinstalled, verify its new key and replace the old one "
                       "(ssh-keygen -R)")
    if isinstance(e, paramiko.AuthenticationException):
        return DSError("ssh authentication to %s failed" % where, "check the key file and the master's "
                       "authorized_keys")
    if isinstance(e, paramiko.SSHException):
        if "not found in known_hosts" in str(e):
            return DSError("the host key of %s is unknown (not in %s): refusing to connect" % (where, kh),
                           "add the master's key to known_hosts (the standby role pins it), or accept it once "
                           "with --accept-new-host-key")
        return TransportError("ssh to %s failed: %s" % (where, str(e).splitlines()[0] if str(e) else e))
    if isinstance(e, (OSError, socket.timeout)):
        return TransportError("cannot reach the master %s (%s)" % (where, getattr(e, "strerror", None) or e),
                              "check the host name, port and network")
    return e


def parse_master(spec):
    """'[user@]host:path' -> (user, host, path); a plain path -> (None, None, path)."""
    m = re.match(r"^(?:([^@/:]+)@)?(\[[^\]]+\]|[^/:@]+):(.+)$", spec)
    if not m or spec.startswith("/") or spec.startswith("."):
        return None, None, spec
    return m.group(1), m.group(2).strip("[]"), m.group(3)


def same_folder(master, folder):
    """Whether `master` is a local path naming `folder` itself (symlinks
    and spellings resolved)."""
    _user, host, path = parse_master(master)
    if host is not None:
        return False
    try:
        return os.path.samefile(path, folder)
    except OSError:
        return False


def refuse_same_folder(master, folder, what="replica"):
    """A storage cannot be its own master: say so at once, not as a busy
    master that a retry would never cure."""
    if same_folder(master, folder):
        raise DSError("the master and the %s are the same folder (%s)" % (what, os.path.abspath(folder)),
                      "give the %s a folder of its own" % what)


def open_channel(master, opts, log, verb="serve", prepare=0.0):
    """`prepare`: seconds the master may need beyond its snapshot waits before
    it answers (a clone stages the whole tree first)."""
    user, host, path = parse_master(master)
    if host is None:
        return LocalChannel(path, log=log, snapshot_timeout=0.0)
    command = remote_command(path, opts.remote_command, opts.remote_dir, verb)
    log("connecting to %s and running: %s" % (host, command))
    if opts.ssh_command:
        return openssh(opts.ssh_command, user or opts.user, host, command, port=opts.port,
                       key_file=opts.key_file, known_hosts_file=opts.known_hosts_file,
                       accept_new_host_key=opts.accept_new_host_key, timeout=opts.timeout)
    return paramiko_connect(host, command, user=user or opts.user, port=opts.port,
                            key_file=opts.key_file, known_hosts_file=opts.known_hosts_file,
                            accept_new_host_key=opts.accept_new_host_key, timeout=opts.timeout,
                            read_timeout=answer_timeout(opts) + prepare)


def answer_timeout(opts):
    """How long the master may take before its first byte: the I/O timeout plus
    its waits for snapshot mode (its turn among ds-replica processes, then the
    --snapshot-timeout retries)."""
    st = max(0.0, opts.snapshot_timeout or 0.0)
    return opts.timeout + max(st, snapshot.PEER_WAIT) + st


class Throttle(object):
    """A read(n) that keeps to `kib_per_second` on the wire (--bwlimit)."""

    def __init__(self, read, kib_per_second):
        self._read = read
        self.rate = kib_per_second * 1024.0
        self.start = time.monotonic()
        self.total = 0

    def read(self, n):
        data = self._read(min(n, max(4096, int(self.rate / 10))))
        self.total += len(data)
        ahead = self.total / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)
        return data
