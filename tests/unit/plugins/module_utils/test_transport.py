"""Pure functions of the transports: reading the master argument."""

from __future__ import annotations

import pytest

from dirstorage_replica.transport import parse_master

# ------------------------------------------------------------- parse_master


@pytest.mark.parametrize("spec,expected", [
    ("zope@db1:/srv/zodb/main", ("zope", "db1", "/srv/zodb/main")),
    ("db1:/srv/zodb/main", (None, "db1", "/srv/zodb/main")),
    ("db1.example.org:relative/storage", (None, "db1.example.org", "relative/storage")),
    ("192.0.2.7:/srv/s", (None, "192.0.2.7", "/srv/s")),
    ("[::1]:/srv/s", (None, "::1", "/srv/s")),
    ("zope@[fe80::1%eth0]:/srv/s", ("zope", "fe80::1%eth0", "/srv/s")),
    ("db1:/srv/odd:name", (None, "db1", "/srv/odd:name")),       # colons after the first belong to the path
])
def test_parse_master_reads_a_remote_master(spec, expected):
    assert parse_master(spec) == expected


@pytest.mark.parametrize("spec", [
    "/srv/zodb/main",
    "/srv/odd:name",          # absolute path with a colon
    "./db1:/srv/s",           # ./ makes a host-looking name a local path
    "../masters/db1:copy",
    ".old:copy",              # a hidden folder whose name has a colon
    "storage",                # relative, no colon
    "masters/db1:copy",       # a slash before the colon: a path
    "db1:",                   # nothing after the colon
])
def test_parse_master_keeps_a_local_path_as_it_is(spec):
    assert parse_master(spec) == (None, None, spec)
