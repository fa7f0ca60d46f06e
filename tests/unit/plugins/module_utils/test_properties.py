"""Property-based tests (Hypothesis) of every parser of what the other side
sends (issue 20): the request parser and the master's inventory reader (what
a standby key sends), the answer header, frame and chunk readers, the drop
list and the ustar reader (what a master sends).  Whatever the input, each
gives a result or a one-line refusal (a DSError), never another exception,
and its memory stays under a bound.

A few hundred examples each in `make test`; many more in `make soak` (the
"soak" profile, tests/conftest.py; tests/soak/test_properties_soak.py)."""

from __future__ import annotations

import io
import tracemalloc
import zlib

from hypothesis import given
from hypothesis import strategies as st

from dirstorage_replica import delta, protocol, ustar
from dirstorage_replica.errors import DSError
from dirstorage_replica.storage import LOGICAL_NAME_RE

MEMORY_BOUND = 16 << 20  # bytes a parser may allocate for inputs of a few KiB


def outcome(parse, *args):
    """parse(*args), or the DSError it raised; asserts a one-line message
    and the memory bound."""
    tracemalloc.start()
    try:
        result = parse(*args)
    except DSError as e:
        result = e
        assert "\n" not in str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, "%s allocated %d bytes" % (parse.__name__, peak)
    return result


def mutated(base):
    """`base` with a few bytes replaced, inserted or removed."""
    @st.composite
    def build(draw):
        data = bytearray(draw(base))
        for _unused in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(data)))
            how = draw(st.sampled_from(["replace", "insert", "delete"]))
            byte = draw(st.sampled_from(b" \t\r\n\0:+-.0aFzZ\x80\xff"))
            if how == "insert" or not data:
                data[at:at] = bytes([byte])
            elif how == "replace":
                data[min(at, len(data) - 1)] = byte
            else:
                del data[min(at, len(data) - 1)]
        return bytes(data)
    return build()


# ------------------------------------------------------------ requests

HEX = "0123456789abcdef"
identities = st.text(HEX, min_size=32, max_size=32)
tids = st.binary(min_size=8, max_size=8)
md5s = st.text(HEX, min_size=32, max_size=32)
seconds = st.floats(0, 300, allow_nan=False, allow_infinity=False).map(lambda f: "%g" % f)
option_values = {
    "dry-run": st.just("1"), "compress": st.sampled_from(["none", "gzip"]), "snapshot-timeout": seconds,
    "snapshot-interval": st.floats(0.1, 600).map(lambda f: "%g" % f), "interval": seconds, "heartbeat": seconds,
    "since": st.binary(min_size=8, max_size=8).map(lambda b: b.hex()),
    "chain": st.binary(min_size=8, max_size=8).map(lambda b: b.hex().upper()),
    "chain-complete": st.sampled_from(["yes", "no"]), "identity": identities,
    "inventory-bytes": st.integers(0, 1 << 20).map(str),
    "standby-name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True), "pack-drops": st.just("1"),
    "reseed": st.just("in-place"),
}


@st.composite
def valid_requests(draw):
    kind, version = draw(st.sampled_from(protocol.REQUESTS))
    allowed = protocol.options_of(kind, version)
    keys = draw(st.sets(st.sampled_from(allowed))) if allowed else set()
    options = {k: draw(option_values[k]) for k in keys}
    if kind == "delta":
        options["inventory-bytes"] = draw(option_values["inventory-bytes"])
    return protocol.Request(kind, version, draw(identities), draw(tids), draw(md5s), options)


def read_request(data):
    stream = io.BytesIO(data)
    return protocol.read_request(stream), stream.read()


@given(valid_requests(), st.binary(max_size=64))
def test_every_request_of_the_grammar_reads_back(req, rest):
    got, left = outcome(read_request, req.encode() + rest)
    assert (got.kind, got.version, got.options) == (req.kind, req.version, req.options if req.version else {})
    if req.kind in ("request", "verify"):
        assert (got.identity, got.tid, got.md5) == (req.identity, req.tid, req.md5)
    assert left == rest  # read no further than the request


@given(st.one_of(st.binary(max_size=2048), mutated(valid_requests().map(lambda r: r.encode()))))
def test_any_request_bytes_give_a_request_or_a_refusal(data):
    got = outcome(read_request, data)
    if not isinstance(got, DSError):
        req, _rest = got
        # what was accepted is what encode() writes for it (a tid in upper or
        # lower case: ours and the original tool's)
        assert data.lower().startswith(req.encode().lower())


# ------------------------------------------------- answer header, frames

json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=10)


@given(st.one_of(st.binary(max_size=512), json_like.map(lambda v: protocol.json.dumps(v).encode()),
                 st.integers(1, 40000).map(lambda n: b"[" * n)))
def test_any_answer_header_gives_a_dict_or_a_refusal(data):
    got = outcome(protocol.parse_answer_header, protocol.ANSWER_PREFIX + data + b"\n")
    assert isinstance(got, (dict, DSError))


@given(st.one_of(st.binary(max_size=512), json_like.map(lambda v: protocol.json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["frame", "master_tid", "files"]),
                                 st.sampled_from(["increment", "heartbeat", "zz", 1, None])).map(
                     lambda d: protocol.json.dumps(d).encode())))
def test_any_frame_line_gives_a_frame_or_a_refusal(data):
    got = outcome(protocol.parse_frame, protocol.FRAME_PREFIX + data + b"\n")
    assert isinstance(got, DSError) or got["frame"] in (protocol.INCREMENT, protocol.HEARTBEAT)


def read_chunks(data):
    reader = protocol.ChunkReader(io.BytesIO(data).read)
    parts = []
    while True:
        part = reader.read(4096)
        if not part:
            return b"".join(parts)
        parts.append(part)


def chunked(data):
    out = io.BytesIO()
    writer = protocol.ChunkWriter(out)
    writer.write(data)
    writer.close()
    return out.getvalue()


@given(st.one_of(st.binary(max_size=1024),
                 mutated(st.binary(max_size=300).map(chunked))))
def test_any_chunk_stream_gives_an_archive_or_a_refusal(data):
    got = outcome(read_chunks, data)
    assert isinstance(got, (bytes, DSError))


@given(st.binary(max_size=300))
def test_chunks_read_back(data):
    assert read_chunks(chunked(data)) == data


# ------------------------------------------------------- the drop list

names = st.one_of(
    st.just("x.oid"), st.just("x.serial"),
    st.binary(min_size=8, max_size=8).map(lambda t: "t%s.%s" % (t.hex().upper()[:6], t.hex().upper()[6:])),
    st.tuples(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8)).map(
        lambda p: "o%s.%s" % (p[0].hex().upper(), p[1].hex().upper())),
    st.binary(min_size=8, max_size=8).map(lambda o: "o%s.c" % o.hex().upper()))


@given(st.one_of(st.binary(max_size=1024), mutated(st.lists(names, max_size=20).map(protocol.encode_drop))))
def test_any_drop_list_gives_storage_names_or_a_refusal(data):
    got = outcome(protocol.decode_drop, data)
    if not isinstance(got, DSError):
        assert all(LOGICAL_NAME_RE.fullmatch(n) for n in got)


@given(st.lists(names, max_size=50))
def test_drop_lists_read_back(drop):
    assert protocol.decode_drop(protocol.encode_drop(sorted(set(drop)))) == set(drop)


# -------------------------------------------------------- the inventory

digests = st.one_of(st.none(), st.text(HEX, min_size=32, max_size=32),
                    st.text(HEX, min_size=16, max_size=16), st.binary(min_size=56, max_size=56).map(bytes.hex),
                    st.tuples(st.text(HEX, min_size=32, max_size=32), st.lists(
                        st.binary(min_size=8, max_size=8), max_size=3)).map(
                        lambda p: p[0] + "+" + "".join(o.hex().upper() for o in p[1])))
entries = st.lists(st.tuples(names, st.integers(0, 1 << 40), digests), max_size=30)


def inventory_text(rows):
    return "".join("%s %d %s\n" % (n, s, d or "-") for n, s, d in rows).encode("ascii")


def read_inventory(body, max_files=50):
    return delta.read_inventory(io.BytesIO(body), len(body), max_files)


@given(st.one_of(st.binary(max_size=1024).map(zlib.compress), st.binary(max_size=256),
                 mutated(entries.map(inventory_text)).map(zlib.compress),
                 st.integers(1, 1 << 24).map(lambda n: zlib.compress(b"o" * n, 9))))
def test_any_inventory_gives_an_inventory_or_a_refusal(body):
    got = outcome(read_inventory, body)
    if not isinstance(got, DSError):
        assert len(got) <= 50
        assert all(LOGICAL_NAME_RE.fullmatch(n) for n in got)


@given(entries)
def test_inventories_of_storage_names_read_back(rows):
    unique = {n: (s, d) for n, s, d in rows}
    kinds_ok = all(d is None or ("+" in d or len(d) == 32 if n.startswith("t")
                                 else "+" not in d and (len(d) == 112 if n.startswith("o") and not n.endswith(".c")
                                                        else n.endswith(".c") and len(d) <= 64))
                   for n, (s, d) in unique.items())
    got = outcome(read_inventory, zlib.compress(inventory_text([(n, s, d) for n, (s, d) in unique.items()])))
    if kinds_ok:
        assert got == unique
    else:
        assert isinstance(got, DSError)


# ------------------------------------------------------ the ustar reader

def read_archive(data):
    return [(m.name, m.data) for m in ustar.iter_members(io.BytesIO(data).read, max_member=1 << 20)]


def archive(members):
    out = io.BytesIO()
    writer = ustar.Writer(out)
    for name, data in members:
        writer.add_bytes(name, data)
    writer.close()
    return out.getvalue()


members = st.lists(st.tuples(st.text("abcAB/._-", min_size=1, max_size=40), st.binary(max_size=700)), max_size=4)


@st.composite
def resummed(draw):
    """An archive with one header field changed and its checksum made right,
    so that the change reaches the checks after the checksum."""
    data = bytearray(draw(members.filter(bool).map(archive)))
    at = draw(st.integers(0, 511))
    data[at] = draw(st.integers(0, 255))
    block = data[:512]
    block[148:156] = b" " * 8
    block[148:156] = ("%06o" % sum(block)).encode("ascii") + b"\0 "
    return bytes(block) + bytes(data[512:])


@given(st.one_of(st.binary(max_size=2048), mutated(members.map(archive)), resummed()))
def test_any_archive_gives_members_or_a_refusal(data):
    got = outcome(read_archive, data)
    if not isinstance(got, DSError):
        assert all(len(d) <= 1 << 20 for _n, d in got)


@given(members)
def test_archives_read_back(items):
    assert read_archive(archive(items)) == items
