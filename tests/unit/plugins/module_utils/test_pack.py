"""The plan of a pack of a replicated master (pack.py, issue 24): never past
the horizon unless forced, the standbys it strands named with their cure, and
the site's command turned into argv without a shell."""

from __future__ import annotations

import pytest

from dirstorage_replica import pack, positions
from dirstorage_replica.errors import Refused
from dirstorage_replica.storage import hex_tid, tid_from_epoch
from testbed.fakes.simulated_storage import create_storage

NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture
def master(tmp_path):
    home = tmp_path / "main"
    create_storage(home)
    for name, tid_days, seen_days in (("near", 0.01, 0.0), ("slow", 10, 0.1), ("gone", 40, 30)):
        positions.Recorder(str(home), name, "pull", clock=lambda s=NOW - seen_days * DAY: s).record(
            tid_from_epoch(NOW - tid_days * DAY))
    return str(home)


def test_the_horizon_holds_a_pack_back_and_names_who(master):
    plan = pack.pack_plan(master, 7, "zeopack -d {days} 127.0.0.1:8100", now=NOW)
    assert plan["held_back_by"] == "gone" and plan["stranded"] == [] and plan["pack"]
    horizon_time = plan["horizon"]["time"]
    assert plan["pack_time"] <= horizon_time - pack.MARGIN < plan["pack_time"] + 1
    assert plan["argv"] == ["zeopack", "-d", "%g" % plan["pack_days"], "127.0.0.1:8100"]
    assert NOW - plan["pack_days"] * DAY <= horizon_time - pack.MARGIN  # {days} reaches no later than the horizon
    assert "held back from 7 days by standby gone, which holds %s" % plan["horizon"]["tid"] in plan["message"]


def test_a_silent_standby_holds_nothing_back_with_max_age_and_is_named_as_stranded(master):
    plan = pack.pack_plan(master, 7, "zeopack -d {days} x:1", max_age_days=7, now=NOW)
    assert plan["held_back_by"] == "slow" and plan["stranded"] == ["gone"]
    assert "this strands standby gone (holding %s): re-seed it with 'ds-replica clone --delta MASTER PATH'" % (
        hex_tid(tid_from_epoch(NOW - 40 * DAY))) in plan["message"]


def test_a_forced_pack_goes_to_the_age_asked_and_names_every_standby_it_strands(master):
    plan = pack.pack_plan(master, 1, "pack --before {time}", force=True, now=NOW)
    assert plan["held_back_by"] is None and plan["forced"] is True
    assert plan["stranded"] == ["gone", "slow"]
    assert plan["argv"] == ["pack", "--before", str(int(NOW - DAY - pack.MARGIN))]
    assert "this strands standby gone, slow" in plan["message"] and "re-seed them" in plan["message"]


def test_a_pack_within_the_horizon_is_not_held_back(master):
    plan = pack.pack_plan(master, 50, "zeopack -d {days} x:1", now=NOW)
    assert (plan["held_back_by"], plan["stranded"]) == (None, [])
    assert 50 + pack.MARGIN / DAY <= float(plan["argv"][2]) <= 50 + pack.MARGIN / DAY + 0.0001


def test_nothing_to_pack_when_the_storage_is_packed_further_already(master, tmp_path):
    from dirstorage_replica.storage import Storage
    st = Storage(master)
    with open(st.path("x.packed"), "wb") as f:
        f.write(tid_from_epoch(NOW - DAY))
    plan = pack.pack_plan(master, 7, None, force=True, now=NOW)
    assert plan["pack"] is False and plan["argv"] is None and "nothing to pack" in plan["message"]


@pytest.mark.parametrize("template,message", [
    ("zeopack -d {days} {host}", "may hold only {days} and {time}, not {host}"),
    ("zeopack -d {days!r}", "may hold only {days} and {time}, not {days}"),
    ("zeopack -d {days:>9}", "may hold only {days} and {time}, not {days}"),
    ("zeopack -d {0}", "may hold only {days} and {time}, not {0}"),
    ("zeopack -d {days", "stray brace"),
    ("zeopack 'unclosed", "cannot be split into words"),
    ("   ", "pack_command is empty"),
])
def test_a_command_with_anything_but_days_and_time_is_refused(master, template, message):
    with pytest.raises(Refused) as err:
        pack.pack_plan(master, 7, template, now=NOW)
    assert message in str(err.value)


def test_the_command_is_split_into_words_and_only_numbers_are_put_in(master):
    plan = pack.pack_plan(master, 1, "sh -c 'echo {days}; rm -rf /' {{literal}}", force=True, now=NOW)
    assert plan["argv"][:2] == ["sh", "-c"] and plan["argv"][2].startswith("echo ")
    assert plan["argv"][2].endswith("; rm -rf /") and plan["argv"][3] == "{literal}"
    with pytest.raises(Refused, match="0 or more"):
        pack.pack_plan(master, -1, None, now=NOW)


def test_the_margin_is_what_the_pack_reaches_further_back_and_cannot_be_negative(master):
    plan = pack.pack_plan(master, 1, "pack --before {time}", force=True, now=NOW, margin=2)
    assert plan["argv"] == ["pack", "--before", str(int(NOW - DAY - 2))]
    with pytest.raises(Refused, match="margin must be 0 seconds or more"):
        pack.pack_plan(master, 1, None, now=NOW, margin=-1)
