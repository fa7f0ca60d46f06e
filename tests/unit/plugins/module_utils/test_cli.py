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


def test_horizon_names_the_oldest_position_and_flags_silent_standbys(tmp_path, capsys):
    import json

    from dirstorage_replica.positions import Recorder
    from dirstorage_replica.storage import hex_tid, tid_from_epoch
    from testbed.fakes.simulated_storage import create_storage

    master = tmp_path / "main"
    create_storage(master)
    now = time.time()
    for name, tid_age, seen_age in (("near", 60, 5), ("slow", 3 * 86400, 3600), ("gone", 40 * 86400, 30 * 86400)):
        Recorder(str(master), name, "follow", clock=lambda s=now - seen_age: s).record(tid_from_epoch(now - tid_age))
    assert cli.main(["horizon", "--max-age", "7", str(master)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("horizon: %s (" % hex_tid(tid_from_epoch(now - 3 * 86400)))
    assert lines[0].endswith("3.0 days ago), held by standby slow")
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == ["gone", "slow", "near"]
    assert lines[1].endswith("last seen 30.0 days ago: SILENT, not heard from within 7 days")
    assert "SILENT" not in lines[2] + lines[3]
    assert cli.main(["horizon", "--json", str(master)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["horizon"]["standby"] == "gone" and report["silent_behind"] == []
    assert cli.main(["horizon", "-q", str(master)]) == 0 and capsys.readouterr().out == ""
    empty = tmp_path / "empty"
    create_storage(empty)
    assert cli.main(["horizon", str(empty)]) == 0
    assert capsys.readouterr().out == "horizon: none (no standby recorded in misc/standbys)\n"
    assert cli.main(["horizon", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
