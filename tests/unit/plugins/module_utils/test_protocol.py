"""The wire protocol (plugins/module_utils/protocol.py) as pure functions:
the bytes of a request, parsing it back, the answer header, the version
negotiation and the one-line errors of a failed answer."""

from __future__ import annotations

import io
import json
import re

import pytest

from dirstorage_replica import protocol
from dirstorage_replica.errors import Busy, Corrupt, DSError, Refused, TransportError
from dirstorage_replica.protocol import master_failure

TID = bytes.fromhex("040D44D78EBB2244")
IDENT = "0123456789abcdef0123456789abcdef"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def test_version_0_request_is_the_original_four_lines():
    req = protocol.Request("request", 0, IDENT, TID, MD5, {"ignored": "in version 0"})
    assert req.encode() == ("replica request 0\n%s\n040D44D78EBB2244\n%s\n" % (IDENT, MD5)).encode()


def test_version_1_request_adds_sorted_options_and_a_blank_line():
    req = protocol.Request("request", 1, IDENT, TID, MD5, {"dry-run": "1", "compress": "gzip"})
    assert req.encode().endswith(b"%s\ncompress: gzip\ndry-run: 1\n\n" % MD5.encode())
    assert protocol.Request("clone", 1).encode() == b"replica clone 1\n\n"


@pytest.mark.parametrize("kind,version,options", [
    ("request", 0, {}), ("request", 1, protocol.pull_request_options(True, True, 2.5, 1)),
    ("request", 2, protocol.follow_request_options(0.5, 10, True, 30, 5)), ("verify", 1, {"since": "0" * 16}),
    ("clone", 1, {})])
def test_read_request_reads_back_what_encode_wrote(kind, version, options):
    sent = protocol.Request(kind, version, IDENT, TID, MD5, options)
    stream = io.BytesIO(sent.encode() + b"archive bytes that are not read")
    got = protocol.read_request(stream)
    assert (got.kind, got.version, got.options) == (kind, version, options if version else {})
    if kind != "clone":
        assert (got.identity, got.tid, got.md5) == (IDENT, TID, MD5)
    assert stream.read() == b"archive bytes that are not read"


@pytest.mark.parametrize("data,message", [
    (b"replica request 3\n", "unsupported request version request 3"),
    (b"replica clone 0\n", "unsupported request version clone 0"),
    (b"hello\n", "malformed request: expected 'replica request 0'"),
    (b"replica request 0\n%s\nnot a tid\n" % IDENT.encode(), "malformed request: bad transaction id"),
    (b"replica request 0\n", "malformed request: the request ended early"),
    (b"replica clone 1\nno colon\n\n", "malformed request option 'no colon'"),
    # issue 20, item 11: the grammar is exact
    (b"replica request 01\n", "malformed request: expected"),
    (b"replica request 0 \n", "malformed request: expected"),
    (b"replica  request 0\n", "malformed request: expected"),
    (b"replica request 0\r\n", "malformed request: expected"),
    (b"replica request 0\n %s\n" % IDENT.encode(), "malformed request: bad identity"),
    (b"replica request 0\n%s \n" % IDENT.encode(), "malformed request: bad identity"),
    (b"replica request 0\n%s\n" % IDENT.upper().encode(), "malformed request: bad identity"),
    (b"replica request 0\n%s\n 040D44D78EBB2244\n" % IDENT.encode(), "malformed request: bad transaction id"),
    (b"replica request 0\n%s\n040D44D78EBB2244 \n" % IDENT.encode(), "malformed request: bad transaction id"),
    (b"replica request 0\n%s\n040D44D78EBB2244\n%s \n" % (IDENT.encode(), MD5.encode()),
     "malformed request: bad transaction MD5"),
    (b"replica clone 1\nstage: 0\n\n", "unknown request option 'stage' for replica clone 1"),
    (b"replica verify 1\n%s\n040D44D78EBB2244\n%s\nsince: 0000000000000000\nsince: 0000000000000000\n\n"
     % (IDENT.encode(), MD5.encode()), "duplicate request option 'since'"),
    (b"replica request 1\n%s\n040D44D78EBB2244\n%s\nsnapshot-timeout: nan\n\n" % (IDENT.encode(), MD5.encode()),
     "malformed request option snapshot-timeout"),
    (b"replica request 1\n%s\n040D44D78EBB2244\n%s\nsnapshot-timeout: -inf\n\n" % (IDENT.encode(), MD5.encode()),
     "malformed request option snapshot-timeout"),
    (b"replica request 1\n%s\n040D44D78EBB2244\n%s\nsnapshot-timeout: 3600\n\n" % (IDENT.encode(), MD5.encode()),
     "request option snapshot-timeout: 3600 is outside 0 to 300 seconds"),
    (b"replica request 1\n%s\n040D44D78EBB2244\n%s\ncompress:  gzip\n\n" % (IDENT.encode(), MD5.encode()),
     "malformed request option"),
    (b"replica request 1\n%s\n040D44D78EBB2244\n%s\ninterval: 1\n\n" % (IDENT.encode(), MD5.encode()),
     "unknown request option 'interval' for replica request 1"),
    (b"replica delta 1\nidentity: %s\n\n" % IDENT.encode(), "malformed request: bad inventory-bytes"),
])
def test_read_request_refuses_bad_requests(data, message):
    with pytest.raises(Refused) as err:
        protocol.read_request(io.BytesIO(data))
    assert str(err.value).startswith(message)


def test_the_original_tools_version_0_request_is_accepted_byte_for_byte():
    """replica.py's get_request: identity as config/identity holds it (mkds:
    lower-case hex), then binascii.b2a_hex of x.serial and of the MD5 (lower case)."""
    sent = b"replica request 0\n%s\n040d44d78ebb2244\n%s\n" % (IDENT.encode(), MD5.encode())
    stream = io.BytesIO(sent + b"rest")
    got = protocol.read_request(stream)
    assert (got.kind, got.version, got.identity, got.tid, got.md5, got.options) == (
        "request", 0, IDENT, TID, MD5, {})
    assert stream.read() == b"rest"


def test_every_option_our_standby_sends_is_in_the_grammar():
    """One table (protocol.OPTIONS, one line an option) says what each request takes; what our
    own client sends is accepted, including the delta's chain window."""
    sent = [protocol.Request("request", 1, IDENT, TID, MD5, protocol.pull_request_options(True, True, 300, 600)),
            protocol.Request("request", 2, IDENT, TID, MD5, protocol.follow_request_options(0.05, 60, True, 1e-5, 0.1)),
            protocol.delta_request(IDENT, [("x.oid", 8, None)], {"chain": "0" * 16, "chain-complete": "yes"}),
            protocol.delta_request(IDENT, [("t040D44D7890F0444", 60, "0" * 32 + "+" + "0" * 16)],
                                   {"reseed": "in-place"})]
    for req in sent:
        got = protocol.read_request(io.BytesIO(req.encode()))
        assert got.options == req.options


def test_the_option_table_gives_each_request_its_options():
    assert protocol.options_of("clone", 1) == ["standby-name"] and protocol.options_of("request", 0) == []
    assert protocol.options_of("request", 1) == ["dry-run", "compress", "snapshot-timeout", "snapshot-interval",
                                                 "standby-name"]
    assert protocol.options_of("request", 2) == ["compress", "snapshot-timeout", "snapshot-interval", "interval",
                                                 "heartbeat", "standby-name"]
    assert protocol.options_of("delta", 1) == ["identity", "inventory-bytes", "chain", "chain-complete", "reseed",
                                               "standby-name"]
    assert protocol.options_of("verify", 1) == ["since", "standby-name", "pack-drops"]


def test_answer_header_round_trip():
    out = io.BytesIO()
    protocol.write_answer_header(out, {"transactions": 3, "format": "lawn"})
    line = out.getvalue()
    assert line == b'replica answer 1 {"format": "lawn", "transactions": 3}\n'
    assert protocol.parse_answer_header(line) == {"format": "lawn", "transactions": 3}
    with pytest.raises(Corrupt, match="answer header is not valid"):
        protocol.parse_answer_header(protocol.ANSWER_PREFIX + b"{nope\n")


def test_request_version_needs_1_for_options_only():
    assert protocol.request_version(0, {}) == 0
    assert protocol.request_version(0, protocol.pull_request_options(compress=True)) == 1
    assert protocol.request_version(1, {}) == 1
    assert protocol.pull_request_options(check=True, snapshot_timeout=2.5, snapshot_interval=1) == {
        "dry-run": "1", "snapshot-timeout": "2.5", "snapshot-interval": "1"}


def test_old_master_is_asked_again_with_version_0():
    asked, said = [], []

    def ask(req):
        asked.append(req.version)
        if req.version:
            raise protocol.OldMaster("Traceback: bad request")
        return "answer"

    req = protocol.Request("request", 1, IDENT, TID, MD5)
    assert protocol.ask_with_fallback(ask, req, said.append) == "answer"
    assert asked == [1, 0] and "asking again with version 0" in said[0]
    with pytest.raises(Refused, match="does not speak request version 1"):
        protocol.ask_with_fallback(ask, protocol.Request("request", 1, IDENT, TID, MD5, {"dry-run": "1"}), print)


@pytest.mark.parametrize("status,err,first,kind", [
    (1, "Traceback ...\nValueError: bad version\n", b"", protocol.OldMaster),
    (1, "ds-replica serve: replica identity x does not match", b"", Refused),
    (1, "ds-replica serve: master /m cannot enter snapshot mode: busy", b"", Busy),
    (255, "ssh: connect to host m port 22: Connection refused", b"", TransportError),
    (-9, "", b"", TransportError),
    (0, "", b"", Corrupt),
])
def test_refusal_gives_one_clear_error(status, err, first, kind):
    failure = protocol.refusal(status, err, first)
    assert failure.__class__ is kind
    assert "\n" not in str(failure)


def test_only_a_pull_request_may_meet_an_old_master():
    failure = protocol.refusal(1, "unknown command\n", b"", may_be_old=False)
    assert failure.__class__ is Refused and str(failure) == "master refused: unknown command"


class _Channel(object):
    def __init__(self, answer, status=0, err=""):
        self.sent = b""
        self.answer = io.BytesIO(answer)
        self.result = (status, err)
        self.aborted = self.finished = False

    def send(self, data):
        self.sent += data

    def close_input(self):
        pass

    def readline(self, limit):
        return self.answer.readline(limit)

    def finish(self):
        self.finished = True
        return self.result

    def abort(self):
        self.aborted = True


def test_session_reads_the_header_and_finishes():
    chan = _Channel(b'replica answer 1 {"chain": []}\n')
    req = protocol.Request("verify", 1, IDENT, TID, MD5)
    with protocol.Session(chan, req) as session:
        assert session.start() == {"chain": []}
        session.finish_ok()
    assert chan.sent == req.encode() and chan.finished and not chan.aborted


def test_session_turns_a_refusal_into_the_masters_message():
    chan = _Channel(b"", status=1, err="ds-replica serve: storage has been packed since the last replica\n")
    with pytest.raises(Refused, match="^master refused: storage has been packed"):
        with protocol.Session(chan, protocol.Request("request", 1, IDENT, TID, MD5)) as session:
            session.start()
    assert chan.finished and not chan.aborted


def test_leaving_a_session_early_aborts_the_channel():
    chan = _Channel(b'replica answer 1 {}\n')
    with pytest.raises(RuntimeError):
        with protocol.Session(chan, protocol.Request("clone", 1)) as session:
            session.start()
            raise RuntimeError("the caller failed")
    assert chan.aborted


# ----------------------------------------------------------- master_failure

def _line(err):
    text = str(err)
    assert "\n" not in text
    return text


def test_a_lost_connection_says_so_whatever_stderr_holds():
    err = master_failure(-1, "ds-replica serve: cannot enter snapshot mode\n", what="db1")
    assert err.__class__ is TransportError and err.retryable
    assert _line(err) == ("the connection to db1 was lost before the answer was complete; "
                          "check the network and the master; the replica is unchanged")


@pytest.mark.parametrize("status", [0, 1, None])
def test_a_master_that_ends_silently_is_a_transport_error(status):
    err = master_failure(status, "  \n\n", what="db1")
    assert err.__class__ is TransportError
    assert _line(err) == ("db1 ended without an answer (exit status %s); check the network and ds-replica on the "
                          "master; the replica is unchanged" % status)


def test_ssh_exit_255_is_an_ssh_failure_with_its_last_line():
    stderr = "Warning: Permanently added 'db1' (ED25519) to the list of known hosts.\r\n" \
             "ssh: connect to host db1 port 2222: Connection refused\r\n"
    err = master_failure(255, stderr, what="db1")
    assert err.__class__ is TransportError
    assert _line(err) == ("ssh to db1 failed: ssh: connect to host db1 port 2222: Connection refused; "
                          "check the host, user, key and port")


def test_exit_255_after_ds_replica_spoke_is_its_refusal_not_ssh():
    err = master_failure(255, "ds-replica serve: the replica is ahead of the master\n")
    assert err.__class__ is Refused
    assert _line(err) == "master refused: the replica is ahead of the master"


@pytest.mark.parametrize("status,stderr", [
    (127, "bash: line 1: ds-replica: command not found\n"),
    (1, "sh: 1: ds-replica: not found\n"),
])
def test_a_master_without_ds_replica_says_to_install_it(status, stderr):
    err = master_failure(status, stderr)
    assert err.__class__ is DSError and not err.retryable
    assert _line(err) == ("the master could not run ds-replica: %s; install ds-replica on the master or give its "
                          "folder with -d" % stderr.strip())


def test_not_found_in_ds_replicas_own_message_is_a_refusal():
    err = master_failure(2, "ds-replica serve: transaction 040D44D78AA51655 not found on the master\n")
    assert err.__class__ is Refused
    assert _line(err) == "master refused: transaction 040D44D78AA51655 not found on the master"


def test_a_master_in_snapshot_mode_is_busy():
    stderr = "ds-replica serve: cannot enter snapshot mode: /srv/s is in snapshot mode (user/backup); retry later\n"
    err = master_failure(75, stderr)
    assert err.__class__ is Busy and err.retryable
    assert _line(err) == "master refused: cannot enter snapshot mode: /srv/s is in snapshot mode (user/backup); " \
                         "retry later"


def test_any_other_message_is_a_refusal_with_the_last_ds_replica_line():
    stderr = ("ds-replica serve: note: snapshot taken\n"
              "ds-replica: /srv/s has another identity than the replica\n"
              "Connection to db1 closed.\n")
    err = master_failure(2, stderr)
    assert err.__class__ is Refused and not err.retryable
    assert _line(err) == "master refused: /srv/s has another identity than the replica"


def test_a_refusal_without_a_ds_replica_line_quotes_the_last_line():
    err = master_failure(1, "Traceback (most recent call last):\n  ...\nPermissionError: [Errno 13] denied\n")
    assert err.__class__ is Refused
    assert _line(err) == "master refused: PermissionError: [Errno 13] denied"


# ------------------------------------------------------ follow (version 2)

def test_version_2_is_a_pull_request_with_follow_options():
    options = protocol.follow_request_options(0.5, 10, compress=True)
    sent = protocol.Request("request", protocol.FOLLOW_VERSION, IDENT, TID, MD5, options)
    got = protocol.read_request(io.BytesIO(sent.encode()))
    assert (got.kind, got.version, got.tid) == ("request", 2, TID)
    assert got.options == {"interval": "0.5", "heartbeat": "10", "compress": "gzip"}


@pytest.mark.parametrize("first", [b"replica clone 2\n", b"replica verify 2\n"])
def test_version_2_is_only_for_pull_requests(first):
    with pytest.raises(Refused, match="unsupported request version .* 2: this master speaks versions 0 to 2"):
        protocol.read_request(io.BytesIO(first))


@pytest.mark.parametrize("size", [0, 1, protocol.CHUNK - 1, protocol.CHUNK, 3 * protocol.CHUNK + 17])
def test_chunked_archive_reads_back_and_leaves_the_next_frame(size):
    out = io.BytesIO()
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    writer = protocol.ChunkWriter(out)
    for i in range(0, len(payload), 1000):
        writer.write(payload[i:i + 1000])
    writer.close()
    protocol.write_frame(out, protocol.HEARTBEAT, {"master_tid": "00" * 8})
    stream = io.BytesIO(out.getvalue())
    reader = protocol.ChunkReader(stream.read)
    got = b"".join(iter(lambda: reader.read(777), b""))
    assert got == payload
    assert reader.read(10) == b""  # stays at its end
    assert protocol.parse_frame(stream.readline()) == {"frame": "heartbeat", "master_tid": "00" * 8}


def test_chunked_archive_cut_short_is_an_eof():
    out = io.BytesIO()
    writer = protocol.ChunkWriter(out)
    writer.write(b"a" * 5000)
    writer.close()
    reader = protocol.ChunkReader(io.BytesIO(out.getvalue()[:3000]).read)
    with pytest.raises(EOFError):
        while reader.read(1024):
            pass


@pytest.mark.parametrize("line,message", [
    (b"replica answer 1 {}\n", "not a frame"),
    (b"replica frame 2 {\n", "frame is not valid"),
    (b'replica frame 2 {"frame": "party"}\n', "unknown follow frame"),
    (b'replica frame 2 {"frame": "increment"}', "not a frame"),  # cut before its end of line
])
def test_bad_frames_are_corrupt(line, message):
    with pytest.raises(Corrupt, match=message):
        protocol.parse_frame(line)


class EndedChannel(object):
    """A channel whose serve already ended with `status` and `err`."""

    def __init__(self, status, err, out=b""):
        self.status, self.err, self.out = status, err, io.BytesIO(out)

    def readline(self, limit):
        return self.out.readline(limit)

    def finish(self):
        return self.status, self.err

    def abort(self):
        pass


@pytest.mark.parametrize("status,err,kind,retryable", [
    (143, "ds-replica serve: terminated by signal 15; the replica is unchanged or complete (never half-written)\n",
     TransportError, True),
    (-9, "", TransportError, True),
    (0, "", TransportError, True),
    (1, "ds-replica serve: replica identity a does not match master identity b: the replica is a copy of another "
        "storage\n", Refused, False),
    (75, "ds-replica serve: master m cannot enter snapshot mode: busy\n", Busy, True),
])
def test_a_follow_answer_that_ends_says_whether_to_retry(status, err, kind, retryable):
    session = protocol.Session(EndedChannel(status, err), None)
    with pytest.raises(DSError) as caught:
        session.next_frame()
    assert caught.value.__class__ is kind and caught.value.retryable is retryable


# ---------------------------------------------------------------- standby name (issue 24)

def test_the_standby_name_goes_with_version_1_only():
    named = protocol.standby_name_option("st-1.dc2")
    assert protocol.Request("request", 0, IDENT, TID, MD5, named).encode() == (
        "replica request 0\n%s\n040D44D78EBB2244\n%s\n" % (IDENT, MD5)).encode()
    assert protocol.Request("clone", 1, options=named).encode() == b"replica clone 1\nstandby-name: st-1.dc2\n\n"
    got = protocol.read_request(io.BytesIO(protocol.Request("request", 1, IDENT, TID, MD5, named).encode()))
    assert protocol.request_standby_name(got) == "st-1.dc2"
    v0 = protocol.read_request(io.BytesIO(protocol.Request("request", 0, IDENT, TID, MD5, named).encode()))
    assert protocol.request_standby_name(v0) is None


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "a b", "x" * 65, "é"])
def test_a_bad_standby_name_is_refused_on_both_sides(name):
    if name:
        with pytest.raises(Refused, match="bad standby name"):
            protocol.standby_name_option(name)
    req = protocol.Request("request", 1, IDENT, TID, MD5, {"standby-name": name})
    with pytest.raises(Refused, match="malformed request: bad standby-name"):
        protocol.request_standby_name(req)


def test_the_default_standby_name_is_the_host_name_made_valid(monkeypatch):
    monkeypatch.setattr(protocol.socket, "gethostname", lambda: "db-2.example.org")
    assert protocol.standby_name_option() == {"standby-name": "db-2.example.org"}
    monkeypatch.setattr(protocol.socket, "gethostname", lambda: "_weird host/é")
    assert protocol.standby_name_option("") == {"standby-name": "weird-host--"}
    monkeypatch.setattr(protocol.socket, "gethostname", lambda: "")
    assert protocol.standby_name_option() == {"standby-name": "standby"}


def test_an_old_master_is_asked_again_with_version_0_despite_the_standby_name():
    asked = []

    def ask(req):
        asked.append((req.version, req.encode()))
        if req.version:
            raise protocol.OldMaster("usage: replica.py")
        return {"ok": True}

    req = protocol.Request("request", 1, IDENT, TID, MD5, protocol.standby_name_option("st1"))
    assert protocol.ask_with_fallback(ask, req, lambda m: None) == {"ok": True}
    assert [v for v, _unused in asked] == [1, 0] and b"standby-name" not in asked[1][1]


@pytest.mark.parametrize("info,message", [
    ([1, 2], "answer header is not a JSON object"),
    ({"master_tid": "zz"}, 'bad master_tid: "zz"'),
    ({"master_newest_tid": 5}, "bad master_newest_tid: 5"),
    ({"transactions": True}, "bad transactions: true"),
    ({"bytes": 1.5}, "bad bytes: 1.5"),
    ({"snapshot_seconds": -1}, "bad snapshot_seconds: -1"),
    ({"format": "../etc"}, 'bad format: "../etc"'),
    ({"chain": [["00" * 8, "x"]]}, "bad chain"),
    ({"dry_run": "yes"}, 'bad dry_run: "yes"'),
])
def test_an_answer_header_with_a_bad_field_is_refused_in_one_line(info, message):
    line = protocol.ANSWER_PREFIX + json.dumps(info).encode("ascii") + b"\n"
    with pytest.raises(Corrupt, match=re.escape(message)) as e:
        protocol.parse_answer_header(line)
    assert "\n" not in str(e.value)


def test_an_answer_header_with_good_and_unknown_fields_passes():
    info = {"master_tid": "0123456789ABCDEF", "chain": [["0123456789ABCDEF", "0" * 32]], "files": 0,
            "snapshot_seconds": 0.25, "format": "lawn", "compress": "gzip", "staged": True, "later": {"x": 1}}
    assert protocol.parse_answer_header(protocol.ANSWER_PREFIX + json.dumps(info).encode("ascii") + b"\n") == info
