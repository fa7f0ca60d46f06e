"""hot.py without processes: the commands' one-line errors and which pulls are hot."""

from __future__ import annotations

import pytest

from dirstorage_replica import cli, hot
from dirstorage_replica.errors import DSError


def test_the_last_line_a_command_printed_names_its_failure():
    assert hot.last_line(b"starting\n\nunit zeo.service not found  \n\n") == "unit zeo.service not found"
    assert hot.last_line(b"") == ""


def test_no_commands_is_a_cold_pull_and_both_make_a_hot_one():
    assert hot.hot_standby(None, None) is None
    standby = hot.hot_standby("stop it", "start it", 5)
    assert (standby.stop_command, standby.start_command, standby.stop_timeout, standby.downtime) == (
        "stop it", "start it", 5.0, 0.0)
    assert hot.hot_standby("a", "b").stop_timeout == hot.STOP_TIMEOUT


@pytest.mark.parametrize("stop, start", [("stop it", None), (None, "start it")])
def test_one_command_without_the_other_is_refused(stop, start):
    with pytest.raises(DSError, match="a hot standby needs both a stop command and a start command"):
        hot.hot_standby(stop, start)


def test_the_command_line_refuses_half_a_hot_standby_in_one_line(tmp_path, capsys):
    assert cli.main(["--stop-command", "true", str(tmp_path / "m"), str(tmp_path / "r")]) == cli.EXIT_FAIL
    err = capsys.readouterr().err.strip()
    assert err.startswith("ds-replica: a hot standby needs both") and "\n" not in err


def test_a_start_that_never_followed_a_stop_does_nothing():
    standby = hot.HotStandby("false", "false")
    standby.start()  # the stop command never ran: nothing to start, no error
    assert standby.downtime == 0.0


def test_failed_commands_say_which_with_exit_status_and_output():
    assert str(hot.stop_failed("systemctl stop zeo", 5, "Access denied")).startswith(
        "the stop command failed (exit 5: Access denied): systemctl stop zeo; the replica is unchanged")
    assert str(hot.start_failed("x", 1, "")).startswith("the start command failed (exit 1): x; the storage process")
