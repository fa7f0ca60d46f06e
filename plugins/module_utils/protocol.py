# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wire protocol between a standby and `ds-replica serve`, in one place.

A request is a few ASCII lines on the serve's stdin:

    replica KIND VERSION          KIND: request, clone or verify
    IDENTITY                      (request and verify only)
    TID                           16 hex digits: the replica's newest transaction
    MD5                           hex MD5 of that transaction file
    key: value                    (versions 1 and 2) options, up to a blank line
    INVENTORY                     (delta only) `inventory-bytes` bytes: delta.read_inventory

Version 0 is the original replica.py's `replica request 0` (four lines); its
answer is a plain ustar archive.  A version 1 answer starts with one line
``replica answer 1 {json}`` (the answer header), then the archive if any.

The client side: `Session` sends a request, reads and checks the answer
header, and turns any failure of the master into one clear error
(`master_failure`); `ask_with_fallback` asks an old master (which refuses
version 1) again with version 0 when the request allows it.

Version 2 (`ds-replica follow`) is a pull request that stays open: the
standby keeps the serve's stdin open (its end tells the serve to stop), and
the answer is a sequence of frames, each one line ``replica frame 2 {json}``
(the first increment is sent unasked, each later one after a ``next`` line
from the standby, so that a standby applying less often is not flooded):
``{"frame": "increment", ...}`` (the fields of a version 1 answer header)
followed by its archive in chunks (`ChunkWriter`: a 4-byte big-endian
length, then that many bytes; a zero length ends the archive), or
``{"frame": "heartbeat", ...}`` while nothing is new.

Where the standby stands, so that a master is never packed past what a
standby still needs: requests of version 1 and later name
their standby (option `standby-name`); every pull answer header and follow
frame carries the master's x.packed (`packed_tid`), and a `verify` request
with the option `pack-drops: 1` asks for the names the master's packs set
aside (packmirror.py), once per pack.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import zlib

from .errors import Busy, Corrupt, DSError, Refused, TransportError
from .storage import FORMATS, LOGICAL_NAME_RE, ZERO_TID, hex_tid, tid_from_hex

KINDS = ("request", "clone", "verify", "delta")
FOLLOW_VERSION = 2  # `replica request 2`: a pull that stays open (ds-replica follow)
MAX_REQUEST = 64 * 1024
ANSWER_PREFIX = b"replica answer 1 "
HEADER_LIMIT = 65536  # the longest answer header a client reads
DROP_MEMBER = "delta/drop"  # first member of a delta answer
STANDBY_NAME = "standby-name"  # request option (versions >= 1): who asks (the master records where it stands)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


# ---------------------------------------------------------------- request

class Request(object):
    def __init__(self, kind, version, identity=None, tid=ZERO_TID, md5=None, options=None, body=b""):
        self.kind = kind  # one of KINDS
        self.version = version
        self.identity = identity
        self.tid = tid
        self.md5 = md5
        self.options = options or {}
        self.body = body  # delta only: the compressed inventory

    def encode(self):
        lines = ["replica %s %d" % (self.kind, self.version)]
        if self.kind in ("request", "verify"):
            lines += [self.identity, hex_tid(self.tid), self.md5]
        if self.version >= 1:
            lines += ["%s: %s" % (k, v) for k, v in sorted(self.options.items())]
            lines.append("")
        return ("\n".join(lines) + "\n").encode("ascii") + self.body


# The exact grammar of a request.  REQUESTS: the kinds and versions a
# master answers.  OPTIONS, one line an option: the pattern its value must
# match whole, and the requests that take it (a new option is one line here);
# any other option is refused.  What our own standby sends: replica.py
# (pull_request_options), follow.py (follow_request_options), info.py
# (verify: since), reseed.py (delta_request: identity, inventory-bytes, the
# chain window), reseed_inplace.py (reseed: in-place), packmirror.py (verify:
# pack-drops); every request but info.py's names its standby (standby-name).
REQUESTS = (("request", 0), ("request", 1), ("request", 2), ("clone", 1), ("verify", 1), ("delta", 1))
_PULL = (("request", 1), ("request", 2))
_FOLLOW = (("request", 2),)
_DELTA = (("delta", 1),)
_SECONDS = r"[0-9]{1,9}(?:\.[0-9]{1,9})?(?:e[-+][0-9]{1,3})?"  # no sign, nan or inf
_TID = r"[0-9A-Fa-f]{16}"
OPTIONS = {
    "dry-run": (r"1", (("request", 1),)),
    "compress": (r"none|gzip", _PULL),
    "snapshot-timeout": (_SECONDS, _PULL),
    "snapshot-interval": (_SECONDS, _PULL),
    "interval": (_SECONDS, _FOLLOW),
    "heartbeat": (_SECONDS, _FOLLOW),
    "since": (_TID, (("verify", 1),)),
    "identity": (r"[0-9a-f]{32}", _DELTA),
    "inventory-bytes": (r"[0-9]{1,10}", _DELTA),
    "chain": (_TID, _DELTA),
    "chain-complete": (r"yes|no", _DELTA),
    "reseed": (r"in-place", _DELTA),  # the in-place re-seed's request (its inventory: the chain window only)
    # who asks (positions.py: the master records where each standby stands, for the pack horizon),
    # and the names a pack set aside (packmirror.py: the standby packs as its master did)
    "standby-name": (r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", _PULL + (("clone", 1), ("verify", 1)) + _DELTA),
    "pack-drops": (r"1", (("verify", 1),)),
}
# the retries a request may ask for: past this a standby is refused, not
# held in line (the master keeps the ds-replica turn while it retries)
MAX_SNAPSHOT_TIMEOUT = 300.0
SECONDS_LIMITS = {"snapshot-timeout": (0.0, MAX_SNAPSHOT_TIMEOUT), "snapshot-interval": (0.1, 600.0),
                  "interval": (0.0, 3600.0), "heartbeat": (0.0, 3600.0)}


def options_of(kind, version):
    """The options a request of `kind` and `version` may carry."""
    return [key for key, (_pattern, takers) in OPTIONS.items() if (kind, version) in takers]


_FIRST_LINE = re.compile(r"replica (request|clone|verify|delta) (0|[1-9][0-9]{0,2})")
_OPTION_LINE = re.compile(r"([a-z][a-z0-9-]{0,39}): (\S(?:.*\S)?)")
_REFERENCE = (("identity", re.compile(r"[0-9a-f]{32}")), ("transaction id", re.compile(r"[0-9A-Fa-f]{16}")),
              ("transaction MD5", re.compile(r"[0-9a-f]{32}")))


def _read_line(stream):
    data = stream.readline(1024)
    if len(data) == 1024 and not data.endswith(b"\n"):
        raise Refused("malformed request: a line is too long")
    if not data.endswith(b"\n"):
        raise Refused("malformed request: the request ended early")
    try:
        return data[:-1].decode("ascii")
    except UnicodeDecodeError:
        raise Refused("malformed request: not ASCII")


def _read_first_line(stream):
    m = _FIRST_LINE.fullmatch(_read_line(stream))
    if not m:
        raise Refused("malformed request: expected 'replica request 0'")
    kind, version = m.group(1), int(m.group(2))
    if (kind, version) not in REQUESTS:
        raise Refused("unsupported request version %s %d: this master speaks versions 0 to %d"
                      % (kind, version, FOLLOW_VERSION))
    return Request(kind, version)


def _read_reference(stream, req):
    """Identity, tid and MD5, one line each, exactly as the original tool sends them."""
    values = []
    for what, pattern in _REFERENCE:
        text = _read_line(stream)
        if not pattern.fullmatch(text):
            raise Refused("malformed request: bad %s" % what)
        values.append(text)
    req.identity, req.tid, req.md5 = values[0], tid_from_hex(values[1]), values[2]


def check_option(kind, version, key, value):
    """Refuse an option the request kind and version does not take, or a
    value that is not of its form."""
    pattern, takers = OPTIONS.get(key, (None, ()))
    if (kind, version) not in takers:
        raise Refused("unknown request option %r for replica %s %d" % (key[:40], kind, version))
    if not re.fullmatch(pattern, value):
        raise Refused("malformed request option %s: %r" % (key, value[:40]))
    if key in SECONDS_LIMITS:
        low, high = SECONDS_LIMITS[key]
        if not low <= float(value) <= high:
            raise Refused("request option %s: %s is outside %g to %g seconds" % (key, value, low, high),
                          "ask for less" if float(value) > high else None)


def _read_options(stream, req):
    total = 0
    while True:
        text = _read_line(stream)
        total += len(text)
        if total > MAX_REQUEST:
            raise Refused("malformed request: too long")
        if not text:
            return
        m = _OPTION_LINE.fullmatch(text)
        if not m:
            raise Refused("malformed request option %r" % text[:80])
        key, value = m.groups()
        if key in req.options:
            raise Refused("duplicate request option %r" % key)
        check_option(req.kind, req.version, key, value)
        req.options[key] = value


def read_request(stream):
    """Parse a request from a binary stream, reading no further than needed
    (a delta's inventory stays in the stream: read_inventory)."""
    req = _read_first_line(stream)
    if req.kind in ("request", "verify"):
        _read_reference(stream, req)
    if req.version >= 1:
        _read_options(stream, req)
    if req.kind == "delta" and "inventory-bytes" not in req.options:
        raise Refused("malformed request: bad inventory-bytes")
    return req


# ------------------------------------------------------ delta inventory

def delta_request(identity, entries, options=None):
    """A `replica delta 1` request carrying `entries` ((name, size, digest))
    and further `options` (delta.py: the chain window)."""
    text = "".join("%s %d %s\n" % (name, size, digest or "-") for name, size, digest in entries)
    body = zlib.compress(text.encode("ascii"), 1)
    opts = dict(options or {}, identity=identity)
    opts["inventory-bytes"] = str(len(body))
    return Request("delta", 1, options=opts, body=body)


def encode_drop(names):
    return "".join(n + "\n" for n in names).encode("ascii")


def decode_drop(data):
    """The names of a drop list: storage names (storage.LOGICAL_NAME_RE), one
    a line; Corrupt for anything else (a hostile master names no path)."""
    if not data:
        return set()
    if not data.endswith(b"\n"):
        raise Corrupt("the master's drop list does not end with a newline")
    names = set()
    for line in data[:-1].split(b"\n"):
        text = line.decode("ascii", "replace")
        if not LOGICAL_NAME_RE.fullmatch(text):
            raise Corrupt("the master's drop list holds something that is not a storage name: %r" % text[:60])
        names.add(text)
    return names


# ------------------------------------------------------ version negotiation

def pull_request_options(check=False, compress=False, snapshot_timeout=0.0, snapshot_interval=5.0):
    """The version 1 options of a pull request."""
    options = {}
    if check:
        options["dry-run"] = "1"
    if compress:
        options["compress"] = "gzip"
    if snapshot_timeout:
        options["snapshot-timeout"] = "%g" % snapshot_timeout
        options["snapshot-interval"] = "%g" % snapshot_interval
    return options


def valid_standby_name(name):
    """A standby name: 1 to 64 letters, digits and `._-`, starting with a
    letter or digit (it names a file on the master)."""
    return isinstance(name, str) and _NAME.match(name) is not None


def host_standby_name():
    """This host's name, as a valid standby name (the default)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")[:64]
    return name or "standby"


def standby_name_option(name=None):
    """The request option naming the standby: `name`, else this host's name."""
    name = host_standby_name() if name is None or name == "" else name
    if not valid_standby_name(name):
        raise Refused("bad standby name %r" % name,
                      "give --standby-name (standby_name) 1 to 64 letters, digits, '.', '_' or '-'")
    return {STANDBY_NAME: name}


def request_standby_name(req):
    """The name a request gives its standby (None: version 0, or a client
    that does not send one); a bad name is refused."""
    if req.version < 1 or STANDBY_NAME not in req.options:
        return None
    name = req.options[STANDBY_NAME]
    if not valid_standby_name(name):
        raise Refused("malformed request: bad standby-name %r" % name[:80])
    return name


def request_version(protocol, options):
    """The version a pull request needs: 1 when asked for or when it carries
    options (version 0 has none), else 0."""
    return 1 if (protocol >= 1 or options) else 0


class OldMaster(DSError):
    """A master that is not ds-replica refused a version 1 request."""

    def __init__(self, text):
        self.text = text
        super().__init__("the master refused request version 1: %s" % text)


def ask_with_fallback(ask, req, log):
    """`ask(req)`; when an old master (the original replica.py) refuses
    version 1, ask again with version 0, which it speaks, unless the request
    needs version 1 options (the standby's name alone is dropped: version 0 has none)."""
    try:
        return ask(req)
    except OldMaster as e:
        if set(req.options) - {STANDBY_NAME}:
            raise Refused("the master does not speak request version 1 (%s)" % e.text,
                          "drop --check/--compress/--snapshot-timeout for this master, or upgrade it")
        log("the master does not speak request version 1 (%s); asking again with version 0" % e.text)
        req.version = 0
        return ask(req)


# ------------------------------------------------------------ answer header

def write_answer_header(stream, info):
    """The first line of every version 1 answer."""
    stream.write(ANSWER_PREFIX + json.dumps(info, sort_keys=True).encode("ascii") + b"\n")


_INVALID = object()


def _json(data):
    """The JSON value `data` holds; _INVALID when it is not ASCII JSON (or
    nested too deep for the parser: RecursionError)."""
    try:
        return json.loads(data.decode("ascii"))
    except (ValueError, RecursionError):
        return _INVALID


def parse_answer_header(line):
    """The JSON of an answer header line (which starts with ANSWER_PREFIX)."""
    info = _json(line[len(ANSWER_PREFIX):])
    if info is _INVALID:
        raise Corrupt("the master's answer header is not valid")
    return check_answer_fields(info, "answer header")


def require_fields(info, names):
    """`info` (a checked answer header) once it holds every field of
    `names` that the caller reads; Corrupt in one line otherwise."""
    missing = [name for name in names if name not in info]
    if missing:
        raise Corrupt("the master's answer header lacks %s" % ", ".join(missing),
                      "check ds-replica on the master (the same version on both sides)")
    return info


_TID_RE = re.compile(r"^[0-9A-Fa-f]{16}\Z")
_MD5_RE = re.compile(r"^[0-9a-f]{32}\Z")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _is_seconds(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9


def _is_chain(value):
    return isinstance(value, list) and all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and _TID_RE.match(pair[0])
        and isinstance(pair[1], str) and _MD5_RE.match(pair[1]) for pair in value)


_FIELD_CHECKS = dict(
    [(name, lambda v: isinstance(v, str) and _TID_RE.match(v)) for name in
     ("master_tid", "master_newest_tid", "packed_tid", "anchor")]
    + [(name, _is_count) for name in ("transactions", "files", "bytes", "kept", "dropped", "absent", "drops_bytes")]
    + [(name, lambda v: isinstance(v, bool)) for name in ("dry_run", "staged", "waiting")]
    + [("snapshot_seconds", _is_seconds), ("chain", _is_chain),
       ("format", lambda v: v in FORMATS), ("compress", lambda v: v in ("none", "gzip")),
       ("retry", lambda v: isinstance(v, str)), ("frame", lambda v: v in (INCREMENT, HEARTBEAT)),
       ("method", lambda v: v in ("in-place", "tree")), ("reason", lambda v: isinstance(v, str))])


def check_answer_fields(info, what):
    """`info` (an answer header's or a frame's JSON) once every field a
    standby reads from it has the type and form it must have (fields it
    does not know are left alone: a newer master may add some); Corrupt in
    one line otherwise."""
    if not isinstance(info, dict):
        raise Corrupt("the master's %s is not a JSON object" % what)
    for name, value in info.items():
        check = _FIELD_CHECKS.get(name)
        if check is not None and not check(value):
            raise Corrupt("the master's %s has a bad %s: %s" % (what, name, json.dumps(value)[:60]),
                          "check ds-replica on the master; the replica is unchanged")
    return info


def master_failure(status, err, what="the master"):
    """Turn a failed serve (exit status and stderr) into one clear line."""
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    if status is not None and status < 0:
        # an ssh client killed by a signal, or (paramiko) no exit status at all
        return TransportError("the connection to %s was lost before the answer was complete" % what,
                              "check the network and the master; the replica is unchanged")
    if not lines:
        return TransportError("%s ended without an answer (exit status %s)" % (what, status),
                              "check the network and ds-replica on the master; the replica is unchanged")
    served = [ln for ln in lines if ln.startswith("ds-replica serve:") or ln.startswith("ds-replica:")]
    text = (served or lines)[-1]
    text = re.sub(r"^ds-replica( serve)?:\s*", "", text)
    if status == 255 and not served:
        return TransportError("ssh to %s failed: %s" % (what, text), "check the host, user, key and port")
    if status == 127 or "not found" in text and not served:
        return DSError("%s could not run ds-replica: %s" % (what, text),
                       "install ds-replica on the master or give its folder with -d")
    if "cannot enter snapshot mode" in text:
        return Busy("master refused: %s" % text)
    return Refused("master refused: %s" % text)


def refusal(status, err, first, may_be_old=True):
    """The error for an answer that does not start with the header: the
    master's message (stderr, else what it wrote instead of the header), as
    OldMaster when it may be and looks like an old tool refusing version 1."""
    if status == 0 and not first:
        return Corrupt("the master sent no answer")
    text = err if err.strip() else first.decode("utf-8", "replace")
    failure = master_failure(status or 1, text)
    # an old tool answers with its own message and a plain failure status; a
    # killed ssh client (status < 0), a missing command (127) or ssh's own
    # failure (255) are not an old master
    if (may_be_old and status is not None and 0 < status < 126 and text.strip() and "ds-replica serve:" not in text
            and not isinstance(failure, TransportError)):
        return OldMaster(" ".join(text.split())[:200] or "no message")
    return failure


# ------------------------------------------------------------------ client

class Session(object):
    """One request and its answer on a transport channel, as a context
    manager: leaving it before `finish()` aborts the channel."""

    def __init__(self, chan, req):
        self.chan = chan
        self.req = req
        self.finished = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.finished:
            self.chan.abort()

    def start(self, limit=HEADER_LIMIT):
        """Send the request, close its input, read and check the answer
        header; returns its dict ({} for version 0, which has none)."""
        self.chan.send(self.req.encode())
        if self.req.version >= FOLLOW_VERSION:
            return {}  # frames follow (next_frame); the input stays open: its end stops the serve
        self.chan.close_input()
        if self.req.version < 1:
            return {}
        first = self.chan.readline(limit)
        if not first.startswith(ANSWER_PREFIX):
            status, err = self.finish()
            # only a pull request has a version 0 an old master would take
            raise refusal(status, err, first, may_be_old=self.req.kind == "request")
        return parse_answer_header(first)

    def next_frame(self, limit=HEADER_LIMIT):
        """The next frame of a version 2 answer (its dict); when the serve
        ended or refused instead, its failure."""
        line = self.chan.readline(limit)
        if line.startswith(FRAME_PREFIX):
            return parse_frame(line)
        status, err = self.finish()
        if not line and status in SIGNALLED:
            raise TransportError("the master's serve was stopped by a signal (exit status %d)" % status,
                                 "the master restarting or shutting down; the replica is unchanged")
        if not line and not err.strip():
            status = -1  # the serve or the connection went away between frames
        raise refusal(status, err, line, may_be_old=False)

    def ask_next(self):
        """Tell the serve that the standby is ready for the next increment."""
        self.chan.send(NEXT)

    def finish(self):
        """(exit status, stderr text) of the serve; the channel is done."""
        self.finished = True
        return self.chan.finish()

    def finish_ok(self):
        """Finish, raising the master's failure unless it exited 0."""
        status, err = self.finish()
        if status != 0:
            raise master_failure(status, err)


# ------------------------------------------------------ follow (version 2)

FRAME_PREFIX = b"replica frame 2 "
SIGNALLED = (130, 143)  # `ds-replica serve` ended by SIGINT, or by SIGTERM/SIGHUP (cli.py)
NEXT = b"next\n"  # the standby, on the open input: "send the next increment when there is one"
INCREMENT, HEARTBEAT = "increment", "heartbeat"
CHUNK = 1 << 16
_LENGTH = struct.Struct(">I")


def follow_request_options(interval, heartbeat, compress=False, snapshot_timeout=0.0, snapshot_interval=5.0):
    """The options of a version 2 request: a pull's, plus how often the
    master looks for a new transaction and sends a heartbeat when idle."""
    options = pull_request_options(False, compress, snapshot_timeout, snapshot_interval)
    options.update(interval="%g" % interval, heartbeat="%g" % heartbeat)
    return options


def write_frame(stream, kind, info):
    """One frame line: `kind` is INCREMENT (its archive follows) or HEARTBEAT."""
    stream.write(FRAME_PREFIX + json.dumps(dict(info, frame=kind), sort_keys=True).encode("ascii") + b"\n")


def parse_frame(line):
    """The JSON of a frame line; Corrupt unless it is one."""
    if not line.startswith(FRAME_PREFIX) or not line.endswith(b"\n"):
        raise Corrupt("the master's follow answer is not a frame: %r" % line[:60])
    info = _json(line[len(FRAME_PREFIX):])
    if info is _INVALID:
        raise Corrupt("the master's follow frame is not valid")
    if not isinstance(info, dict) or info.get("frame") not in (INCREMENT, HEARTBEAT):
        raise Corrupt("the master sent an unknown follow frame %s"
                      % json.dumps(info.get("frame") if isinstance(info, dict) else info)[:60])
    if "master_tid" not in info:
        raise Corrupt("the master's %s frame has no master_tid" % info["frame"],
                      "check ds-replica on the master; the replica is unchanged")
    return check_answer_fields(info, "%s frame" % info["frame"])


class ChunkWriter(object):
    """A file-like writer that frames what it is given as length-prefixed
    chunks; close() writes the end chunk (the underlying stream stays open)."""

    def __init__(self, out):
        self.out = out
        self.buf = bytearray()

    def write(self, data):
        self.buf += data
        while len(self.buf) >= CHUNK:
            self._emit(bytes(self.buf[:CHUNK]))
            del self.buf[:CHUNK]
        return len(data)

    def flush(self):
        pass

    def _emit(self, data):
        self.out.write(_LENGTH.pack(len(data)) + data)

    def close(self):
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf = bytearray()
        self.out.write(_LENGTH.pack(0))
        self.out.flush()


class ConnectionEnded(TransportError, EOFError):
    """The connection ended inside a chunked archive (an EOFError too, for
    the callers that turn one into their own message)."""


class ChunkReader(object):
    """read(n) of one chunked archive from `read`; b"" once its end chunk
    has been read."""

    def __init__(self, read):
        self._read = read
        self.left = 0
        self.done = False

    def _exact(self, n):
        parts = []
        while n:
            data = self._read(n)
            if not data:
                raise ConnectionEnded("the connection ended inside a follow frame")
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def read(self, n=-1):
        if self.done:
            return b""
        if not self.left:
            (self.left,) = _LENGTH.unpack(self._exact(_LENGTH.size))
            if not self.left:
                self.done = True
                return b""
        data = self._read(min(n if n and n > 0 else CHUNK, self.left))
        if not data:
            raise ConnectionEnded("the connection ended inside a follow frame")
        self.left -= len(data)
        return data
