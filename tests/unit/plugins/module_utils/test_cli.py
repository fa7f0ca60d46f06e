"""A storage cannot be pulled into (or cloned over) itself: that is a mistake,
not a busy master, so ds-replica says so at once and exits 1 (not 75, which
cron would retry for ever), touching nothing."""

from __future__ import annotations

import os
import time

import pytest

from dirstorage_replica import cli
from tests.support.treeutil import tree_state


def _spellings(home, tmp_path):
    link = tmp_path / "link-to-storage"
    link.symlink_to(home)
    return {
        "same path": str(home),
        "symlink": str(link),
        "relative": os.path.relpath(home),
        "trailing slash and dot": str(home) + "/./",
    }


@pytest.mark.parametrize("spelling", ["same path", "symlink", "relative", "trailing slash and dot"])
def test_pull_into_itself_is_refused_at_once(unpack_fixture, tmp_path, capsys, spelling):
    home = unpack_fixture("lawn") / "replica"
    master = _spellings(home, tmp_path)[spelling]
    before = tree_state(home)
    t0 = time.monotonic()
    code = cli.main([master, str(home)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert time.monotonic() - t0 < 5
    assert err.splitlines() == ["ds-replica: the master and the replica are the same folder (%s); "
                                "give the replica a folder of its own" % home]
    assert tree_state(home) == before


def test_clone_over_its_own_master_is_refused(unpack_fixture, tmp_path, capsys):
    home = unpack_fixture("lawn") / "master"
    before = tree_state(home)
    code = cli.main(["clone", "--force", str(_spellings(home, tmp_path)["symlink"]), str(home)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.splitlines() == ["ds-replica: the master and the copy are the same folder (%s); "
                                "give the copy a folder of its own" % home]
    assert tree_state(home) == before
