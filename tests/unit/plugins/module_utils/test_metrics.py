"""The metrics file of node_exporter's textfile collector (plugins/module_utils/metrics.py):
its text as Prometheus reads it, reading it back, replacing it atomically, and the values
after a successful or a failed pull."""

from __future__ import annotations

import os
import stat

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dirstorage_replica import metrics

ALL = {name: float(i + 1) for i, (name, _kind, _help) in enumerate(metrics.METRICS)}


def parsed(text):
    """{full metric name: (labels, value)} and the documentation of each family, as Prometheus parses `text`."""
    samples, docs = {}, {}
    for family in text_string_to_metric_families(text):
        docs[family.name] = (family.type, family.documentation)
        for sample in family.samples:
            samples[sample.name] = (sample.labels, sample.value)
    return samples, docs


def test_every_metric_is_a_documented_gauge_labelled_with_the_storage():
    samples, docs = parsed(metrics.format_metrics("main", ALL))
    assert samples == {metrics.PREFIX + name: ({"storage": "main"}, value) for name, value in ALL.items()}
    assert {name: kind for name, (kind, _doc) in docs.items()} == {metrics.PREFIX + n: "gauge" for n in ALL}
    assert all(doc for _kind, doc in docs.values())


def test_only_the_values_given_are_written():
    text = metrics.format_metrics("main", {"last_result": 0, "last_attempt_timestamp_seconds": 12.5})
    samples, _docs = parsed(text)
    assert samples == {"dirstorage_replication_last_attempt_timestamp_seconds": ({"storage": "main"}, 12.5),
                       "dirstorage_replication_last_result": ({"storage": "main"}, 0.0)}
    # in METRICS order, whatever the order of the dict
    assert text.index("last_attempt_timestamp_seconds") < text.index("last_result")


@pytest.mark.parametrize("name", ['say "hi"', "C:\\new", "two\nlines", "plain-name_1.x"])
def test_label_escaping_reads_back_as_the_same_name(name):
    samples, _docs = parsed(metrics.format_metrics(name, {"last_result": 1}))
    assert samples["dirstorage_replication_last_result"] == ({"storage": name}, 1.0)


def test_escape_label():
    assert metrics.escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_values_read_back_exactly():
    values = dict(ALL, last_attempt_timestamp_seconds=1700000000.123456789, bytes=12345678901234.0)
    assert metrics.parse_metrics(metrics.format_metrics("main", values)) == values


def test_parse_skips_comments_foreign_metrics_and_garbage():
    text = ("# HELP dirstorage_replication_bytes x\n"
            "node_load1 3\n"
            "dirstorage_replication_bytes{storage=\"main\"} 42\n"
            "dirstorage_replication_transactions{storage=\"main\"} not-a-number\n"
            "dirstorage_replication_lag_seconds\n")
    assert metrics.parse_metrics(text) == {"bytes": 42.0}


def test_read_metrics_of_a_missing_or_unreadable_file_is_empty(tmp_path):
    assert metrics.read_metrics(str(tmp_path / "none.prom")) == {}
    (tmp_path / "binary.prom").write_bytes(b"\xff\xfe\x00")
    assert metrics.read_metrics(str(tmp_path / "binary.prom")) == {}


def test_write_then_read(tmp_path):
    path = metrics.metrics_path(str(tmp_path), "main")
    assert path == str(tmp_path / "dirstorage_main.prom")
    metrics.write_metrics(path, "main", ALL)
    assert metrics.read_metrics(path) == ALL
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    metrics.write_metrics(path, "main", {"last_result": 0})
    assert metrics.read_metrics(path) == {"last_result": 0.0}
    assert os.listdir(tmp_path) == ["dirstorage_main.prom"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = metrics.metrics_path(str(tmp_path), "main")
    metrics.write_metrics(path, "main", ALL)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        metrics.write_metrics(path, "main", {"last_result": 0})
    assert metrics.read_metrics(path) == ALL
    assert os.listdir(tmp_path) == ["dirstorage_main.prom"]


def test_after_success_sets_the_times_the_result_and_the_figures():
    standby_only = {k: v for k, v in ALL.items() if k not in metrics.MASTER_METRICS}
    previous = dict(standby_only, last_result=0)
    result = {"lag_seconds": 1.5, "transactions": 7, "bytes": 4096, "snapshot_seconds": None, "files": 9}
    values = metrics.after_success(previous, started=100.0, finished=103.0, result=result)
    assert values == {"last_attempt_timestamp_seconds": 100.0, "last_success_timestamp_seconds": 103.0,
                      "last_result": 1, "lag_seconds": 1.5, "transactions": 7.0, "bytes": 4096.0,
                      "snapshot_seconds": 0.0, "downtime_seconds": 0.0}
    assert previous == dict(standby_only, last_result=0)  # not modified


def test_after_failure_keeps_the_last_success_and_its_figures():
    previous = dict(ALL, last_result=1)
    values = metrics.after_failure(previous, started=200.0)
    assert values == dict(ALL, last_result=0, last_attempt_timestamp_seconds=200.0)


def test_a_first_run_that_fails_says_never_succeeded():
    assert metrics.after_failure({}, started=200.0) == {
        "last_attempt_timestamp_seconds": 200.0, "last_result": 0, "last_success_timestamp_seconds": 0}


def test_a_followers_heartbeat_is_a_success_without_lag_that_keeps_the_last_applys_figures():
    previous = dict(ALL, last_result=0, lag_seconds=4.0, downtime_seconds=0.25, transactions=3)
    values = metrics.up_to_date(previous, when=300.0)
    assert values == dict(previous, last_attempt_timestamp_seconds=300.0, last_success_timestamp_seconds=300.0,
                          last_result=1, lag_seconds=0.0)  # a hot standby's downtime stays on the dashboard
    assert previous["lag_seconds"] == 4.0  # not modified


def test_a_masters_horizon_values_count_silent_standbys_and_the_oldest_position():
    now = 1_700_000_000.0
    report = {"standbys": [
        {"name": "gone", "tid_time": now - 10 * 86400, "seen_age_seconds": 3 * 86400.0, "silent": True},
        {"name": "near", "tid_time": now - 60, "seen_age_seconds": 5.0, "silent": False}]}
    assert metrics.horizon_values(report, now) == {"standbys": 2, "silent_standbys": 1,
                                                   "horizon_age_seconds": 10 * 86400.0,
                                                   "horizon_holder_silence_seconds": 3 * 86400.0}
    assert metrics.horizon_values({"standbys": []}, now) == {"standbys": 0, "silent_standbys": 0}
