# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Forcing a storage into snapshot mode, as config/snapshot.conf says.

Methods, tried in order: ``http URL ACCESS`` (XML-RPC enterSnapshot /
leaveSnapshot with HTTP basic authentication), ``direct`` (open the files of
a storage that is not running), ``nodirect``.  Afterwards the tool takes
misc/sublock and checks misc/snapshot; while it holds the sublock, the
storage cannot leave snapshot mode.  Leaving: release the sublock first,
then leaveSnapshot.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time
import urllib.parse

from . import durable, journal
from .durable import FileLock, pid_alive
from .errors import Busy, DSError

CODE_PREFIX = "ds-replica"
SHUTDOWN = "shutdown"
# ds-replica processes on one master take turns at snapshot mode: the storage
# can be entered only once, so a second standby pulling at the same moment
# (a fleet run, cron lines on the same minute) waits for the first one's few
# milliseconds instead of failing.  The file lives next to misc/lock.
PEER_LOCK = ".ds-replica-snapshot.lock"
# how long to wait for another ds-replica when no --snapshot-timeout is given;
# below the standby's 60 s read timeout
PEER_WAIT = 30.0


def take_turn(st, wait, log, refuse):
    """Our turn at the storage's snapshot among ds-replica processes (a serve
    holding it in snapshot mode, a pull applying to a replica): the held
    FileLock of PEER_LOCK, after waiting at most `wait` seconds; None when
    misc/ is not writable for this account (no turns then).  When the wait
    runs out, raises `refuse(holder pid, seconds waited)`."""
    lock = FileLock(st.sub("misc", PEER_LOCK))
    t0 = time.monotonic()
    said = []

    def waiting(pid):
        said.append(pid)
        log("waiting for another ds-replica process (pid %s) to leave snapshot mode" % (pid or "unknown"))

    try:
        held = lock.acquire_within(wait, waiting)
    except OSError as e:
        log("cannot take %s (%s); not coordinating with other ds-replica processes" % (PEER_LOCK, e.strerror or e))
        return None
    if not held:
        raise refuse(lock.holder(), time.monotonic() - t0)
    if said:
        log("our turn came after %.1fs" % (time.monotonic() - t0))
    return lock


class Method(object):
    def __init__(self, kind, url=None, access=None, line=0):
        self.kind = kind
        self.url = url
        self.access = access
        self.line = line

    def describe(self):
        if self.kind == "http":
            return "http %s" % redact_url(self.url)
        return self.kind


def redact_url(url):
    """The URL without any user:password part (never log credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<bad url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += ":%d" % parts.port
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_conf(text, conf_dir):
    """Parse snapshot.conf -> (methods, problems).  `direct` is appended last
    unless listed or `nodirect` is given."""
    methods, problems = [], []
    nodirect = False
    direct_listed = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words == ["direct"]:
            direct_listed = True
            methods.append(Method("direct", line=number))
        elif words == ["nodirect"]:
            nodirect = True
        elif words[0] == "http" and len(words) == 3 and re.match(r"^https?://", words[1]):
            methods.append(Method("http", url=words[1], access=os.path.join(conf_dir, words[2]), line=number))
        else:
            problems.append("config/snapshot.conf line %d is not understood (%s); skipped"
                            % (number, words[0] if words[0] != "http" else "http needs URL and ACCESS file"))
    if nodirect:
        methods = [m for m in methods if m.kind != "direct"]
    elif not direct_listed:
        methods.append(Method("direct", line=0))
    return methods, problems


def load_methods(st):
    conf = st.sub("config", "snapshot.conf")
    try:
        with open(conf, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    return parse_conf(text, os.path.dirname(conf))


def read_access(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError as e:
        raise DSError("cannot read the snapshot access file %s (%s)" % (path, e.strerror),
                      "check config/snapshot.conf and the file's owner and mode")
    user, sep, password = first.partition(":")
    if not sep:
        raise DSError("snapshot access file %s does not hold user:password on its first line" % path)
    return user, password


def _auth_transport(secure, user, password, timeout):
    """An xmlrpc transport with HTTP basic authentication and a timeout
    (credentials go in a header, never in the URL, so no message shows them).
    xmlrpc.client (with http.client and ssl) is imported only here: a pull or
    a serve through the `direct` or `none` method does not pay for it."""
    import xmlrpc.client  # pylint: disable=import-outside-toplevel
    base = xmlrpc.client.SafeTransport if secure else xmlrpc.client.Transport
    token = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")

    class BasicAuthTransport(base):
        def make_connection(self, host):
            conn = super().make_connection(host)
            conn.timeout = timeout
            return conn

        def send_headers(self, connection, headers):
            super().send_headers(connection, list(headers) + [("Authorization", "Basic " + token)])

    return BasicAuthTransport()


def xmlrpc_call(method, name, code, timeout=30.0):
    """Call enterSnapshot/leaveSnapshot; returns None or raises DSError with a
    message that never contains credentials."""
    import xmlrpc.client  # only here and in _auth_transport  # pylint: disable=import-outside-toplevel
    user, password = read_access(method.access)
    parts = urllib.parse.urlsplit(method.url)
    clean = redact_url(method.url)
    transport = _auth_transport(parts.scheme == "https", user, password, timeout)
    proxy = xmlrpc.client.ServerProxy(clean, transport=transport, allow_none=True)
    try:
        getattr(proxy, name)(code)
    except xmlrpc.client.Fault as e:
        lines = str(e.faultString).strip().splitlines() or ["(no reason given)"]
        raise DSError("%s refused %s: %s" % (clean, name, lines[-1].strip()))
    except xmlrpc.client.ProtocolError as e:
        hint = "check the user and password in the access file" if e.errcode == 401 else None
        raise DSError("%s answered HTTP %d %s to %s" % (clean, e.errcode, e.errmsg, name), hint)
    except (OSError, socket.timeout, xmlrpc.client.Error) as e:
        raise DSError("cannot reach %s for %s (%s)" % (clean, name, getattr(e, "strerror", None) or e))


def make_code():
    return "%s-%s-%d" % (CODE_PREFIX, socket.gethostname(), os.getpid())


def stale_code(marker):
    """If misc/snapshot names a ds-replica of this host whose process is gone,
    return its code."""
    if not marker or not marker.startswith("user/"):
        return None
    code = marker[5:]
    m = re.match(r"^%s-(.+)-(\d+)$" % re.escape(CODE_PREFIX), code)
    if not m or m.group(1) != socket.gethostname():
        return None
    pid = int(m.group(2))
    if pid == os.getpid() or pid_alive(pid):
        return None  # alive: its owner will leave the snapshot
    return code


class Snapshot(object):
    """Holds a storage in snapshot mode: use as a context manager.

    `timeout` seconds of retrying (with `interval` pauses) when the storage is
    busy (already in snapshot mode for someone else, packing...)."""

    def __init__(self, st, timeout=0.0, interval=5.0, log=None, code=None, warn=None):
        self.st = st
        self.warn = warn or log or (lambda msg: None)
        self.timeout = timeout
        self.interval = interval
        self.log = log or (lambda msg: None)
        self.code = code or make_code()
        self.entered = None  # Method used to enter, if we must leave it
        self.sublock = None
        self.seconds = 0.0
        self._t0 = None
        self.method = None
        self.peer = None  # our turn among ds-replica processes (a FileLock)

    def __enter__(self):
        self.enter()
        return self

    def __exit__(self, *exc):
        self.leave()

    def enter(self):
        deadline = time.monotonic() + max(0.0, self.timeout)
        methods, problems = load_methods(self.st)
        for p in problems:
            self.warn(p)
        self._take_turn(max(self.timeout, PEER_WAIT))
        try:
            self._enter(methods, deadline)
        except BaseException:
            self._release_peer()
            raise

    def _take_turn(self, wait):
        """Wait (at most `wait` seconds) for any other ds-replica process
        holding this storage in snapshot mode to be done."""
        def refuse(pid, waited):
            return Busy("master %s cannot enter snapshot mode: another ds-replica process (pid %s) has held "
                        "it for %.0fs" % (self.st.home, pid or "unknown", waited),
                        "retry later, or allow more time with --snapshot-timeout")

        self.peer = take_turn(self.st, wait, self.log, refuse)

    def _release_peer(self):
        if self.peer is not None:
            self.peer.release()
            self.peer = None

    def _enter(self, methods, deadline):
        while True:
            reasons = []
            self._t0 = time.monotonic()
            try:
                if self._try(methods, reasons):
                    return
            except BaseException:
                self._cleanup()
                raise
            self._cleanup()
            if time.monotonic() + self.interval > deadline:
                raise Busy("master %s cannot enter snapshot mode: %s" % (self.st.home, "; ".join(reasons)),
                           "retry later, or allow more time with --snapshot-timeout")
            self.log("snapshot mode not available yet (%s); retrying in %gs" % ("; ".join(reasons), self.interval))
            time.sleep(self.interval)

    def _try(self, methods, reasons):
        st = self.st
        marker = st.snapshot_code()
        stale = stale_code(marker)
        if stale:
            self._leave_stale(methods, stale, reasons)
        for method in methods:
            if method.kind == "http":
                try:
                    xmlrpc_call(method, "enterSnapshot", self.code)
                except DSError as e:
                    reasons.append(str(e))
                    continue
                self.entered = method
                self.method = method.describe()
                self.log("entered snapshot mode through %s" % method.describe())
                break
            if method.kind == "direct":
                if self._direct(reasons):
                    self.method = "direct"
                    break
        sub = st.sublock()
        if not sub.acquire():
            reasons.append("misc/sublock is held (by the running storage, or by another tool reading its "
                           "snapshot)")
            return False
        self.sublock = sub
        code = st.snapshot_code()
        if code is None:
            reasons.append("misc/snapshot is missing: the storage is not a snapshot")
            return False
        mine = self.entered is not None and code == "user/" + self.code
        if not mine and code != SHUTDOWN:
            # someone else's snapshot (a backup, a pack): theirs to end, and A/
            # may be theirs to change; respect it and retry later
            reasons.append("the storage is in snapshot mode for someone else (%s)" % code)
            return False
        if self.method is None:
            self.method = "stopped storage"
        self.log("holding snapshot (%s)" % code)
        return True

    def _direct(self, reasons):
        st = self.st
        lock = st.lock()
        if not lock.acquire():
            reasons.append("direct: misc/lock is held (the storage is running)")
            return False
        try:
            sub = st.sublock()
            if not sub.acquire():
                reasons.append("direct: misc/sublock is held")
                return False
            try:
                report = journal.recover(st, apply_pending=False)
                if journal.recombine(st):
                    st.remove_snapshot_marker()
                    durable.Durability(st.home, st.sync).commit()
                if st.snapshot_code() != SHUTDOWN:
                    # not running, recovered: a stopped storage, whatever
                    # snapshot code a crashed process left behind
                    st.write_snapshot_marker(SHUTDOWN)
                if report["rolled_forward"] or report["rolled_back"]:
                    self.log("direct: recovered the journal (%d rolled forward, %d rolled back)"
                             % (report["rolled_forward"], report["rolled_back"]))
            finally:
                sub.release()
        finally:
            lock.release()
        return True

    def _leave_stale(self, methods, code, reasons):
        for method in methods:
            if method.kind != "http":
                continue
            try:
                xmlrpc_call(method, "leaveSnapshot", code)
                self.log("left a snapshot abandoned by %s" % code)
                return True
            except DSError as e:
                reasons.append("could not leave abandoned snapshot %s: %s" % (code, e))
        return False

    def _cleanup(self):
        if self.sublock is not None:
            self.sublock.release()
            self.sublock = None
        if self.entered is not None:
            method, self.entered = self.entered, None
            try:
                xmlrpc_call(method, "leaveSnapshot", self.code)
            except DSError as e:
                self.log("could not leave snapshot mode: %s" % e)
        self.method = None

    def leave(self):
        """Release the sublock first, then leaveSnapshot (the order matters)."""
        if self._t0 is not None:
            self.seconds = time.monotonic() - self._t0
            self._t0 = None
        self._cleanup()
        self._release_peer()
