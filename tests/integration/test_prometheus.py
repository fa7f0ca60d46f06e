"""The metrics through the real monitoring programs (issue 22): Debian's node_exporter reads the
textfile folders written by the real cron wrapper (`ds-replica-cron`) and by the follower
(`ds-replica follow --metrics`) on two live standbys; Debian's Prometheus scrapes them every second
with the project's alert rules loaded, time compressed by one factor (testbed/harness/monitoring.py,
`compress_rules`: every `for:` and every seconds threshold times FACTOR, nothing else changed).

A standby's follower is stopped and another standby loses its path to a master: the stale and
failing alerts fire for those two (and only those), seen through /api/v1/alerts, and resolve once
both are back and caught up. Then every panel query of the Grafana dashboard is asked through
/api/v1/query_range and answers for every standby and storage; the dashboard is drawn from those
answers (tests/output/prometheus/, as bench/record_dashboard.py draws docs/grafana/).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml

from testbed import dashboard
from testbed.harness.monitoring import RULES, SECONDS_THRESHOLD, Monitored, copy_logs, duration_seconds
from testbed.harness.reliability import ROOT, report

FACTOR = 1 / 200.0  # an hour of the rules is 18 s here
OUT = ROOT / "tests" / "output" / "prometheus"
PAIRS = {("standby1", "main"), ("standby1", "catalog"), ("standby2", "main"), ("standby2", "catalog")}
BROKEN = {("standby2", "main"), ("standby1", "catalog")}  # follower stopped; master's path gone


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The whole story once (about a minute): the rules Prometheus loaded, what it alerted, its
    answers to the dashboard's queries and to its variables."""
    work = tmp_path_factory.mktemp("prometheus")
    try:
        with Monitored(work, factor=FACTOR) as m:
            rules = m.prometheus.alert_rules()
            story = m.run_story()
            answers = m.dashboard_answers()
            variables = {"instance": m.prometheus.label_values(
                "instance", "dirstorage_replication_last_attempt_timestamp_seconds"),
                "storage": m.prometheus.label_values(
                "storage", 'dirstorage_replication_last_attempt_timestamp_seconds{instance=~".*"}')}
            firing = m.prometheus.query_range('ALERTS{alertstate="firing"}', m.start, m.end)
            seen = m.seen
    except BaseException:
        copy_logs(work, OUT / "logs")
        raise
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dashboard-answers.json").write_text(json.dumps(answers) + "\n")
    return {"rules": rules, "story": story, "answers": answers, "variables": variables, "firing": firing,
            "seen": seen}


def test_prometheus_loaded_the_projects_rules_with_time_compressed(run):
    original = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert set(run["rules"]) == set(original)
    for name, (query, duration) in run["rules"].items():
        assert duration == pytest.approx(duration_seconds(original[name].get("for", "0s")) * FACTOR, abs=0.001)
        # the expression as written, only its seconds thresholds times FACTOR
        assert query == " ".join(SECONDS_THRESHOLD.sub(
            lambda m: m.group(1) + "%g" % (float(m.group(2)) * FACTOR), original[name]["expr"]).split())
    assert run["rules"]["DirstorageReplicationStale"][0] == \
        "time() - dirstorage_replication_last_success_timestamp_seconds > 18"
    assert run["rules"]["DirstorageReplicationFailing"][0] == "dirstorage_replication_last_result == 0"


def test_the_stale_and_failing_alerts_fire_for_the_broken_standbys_only_and_resolve(run, request):
    story = run["story"]
    assert ("DirstorageReplicationStale", "standby2", "main", "firing") in story["fired"]
    assert ("DirstorageReplicationFailing", "standby1", "catalog", "firing") in story["fired"]
    # not before an hour (12 s here) without a success: the follower's last success was just before its stop
    assert story["fired_after_s"] >= 3600 * FACTOR - 2, story
    for _t, alerts in run["seen"]:
        for name, instance, storage, _state in alerts:
            if name in ("DirstorageReplicationStale", "DirstorageReplicationFailing"):
                assert (instance, storage) in BROKEN, alerts
    # resolved (wait_for_alerts raised otherwise), with the follower's replica caught up with the master
    assert story["caught_up"]
    stale = {(r["metric"]["instance"], r["metric"]["storage"]) for r in run["firing"]
             if r["metric"]["alertname"] == "DirstorageReplicationStale"}
    assert ("standby2", "main") in stale and stale <= BROKEN
    report(request, "prometheus_alerts", {k: story[k] for k in ("fired_after_s", "resolved_after_s")})


def test_every_dashboard_query_answers_for_every_standby_and_storage(run):
    panels = run["answers"]["panels"]
    queries = list(dashboard.panel_queries(dashboard.load()))
    assert queries and {expr for _t, expr in queries} == set(panels)
    for title, expr in queries:
        series = dashboard.series_of(panels[expr])
        assert set(series) == PAIRS, (title, sorted(series))
        for key, points in series.items():
            assert len(points) >= 20, (title, key, len(points))
    assert sorted(run["variables"]["instance"]) == ["standby1", "standby2"]
    assert sorted(run["variables"]["storage"]) == ["catalog", "main"]
    # the panels show the story: the stopped follower's time since its last success climbs past
    # the stale threshold, then falls back; the cut standby's last result goes 0, then 1 again
    since = dashboard.series_of(panels[
        'time() - dirstorage_replication_last_success_timestamp_seconds{instance=~"$instance", storage=~"$storage"}'])
    ages = [v for _t, v in since[("standby2", "main")]]
    peak = ages.index(max(ages))
    # past the threshold; then fresh again (the heartbeat refreshes it every few seconds, so a
    # sample under 5 s), and under the threshold to the end
    assert ages[peak] > 3600 * FACTOR and min(ages[peak:]) < 5 and ages[-1] < 3600 * FACTOR, ages
    results = dashboard.series_of(panels[
        'dirstorage_replication_last_result{instance=~"$instance", storage=~"$storage"}'])
    cut = [v for _t, v in results[("standby1", "catalog")]]
    assert 0.0 in cut and cut[-1] == 1.0 and cut[0] == 1.0, cut
    assert set(v for _t, v in results[("standby1", "main")]) == {1.0}
    # the hot standby's service was down for each apply (its stop command sleeps 0.2 s)
    down = dashboard.series_of(panels[
        'dirstorage_replication_downtime_seconds{instance=~"$instance", storage=~"$storage"}'])
    assert max(v for _t, v in down[("standby1", "main")]) >= 0.2
    assert set(v for _t, v in down[("standby1", "catalog")]) == {0.0}


def test_the_dashboard_is_drawn_from_prometheus_answers(run):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import plot_dashboard
    finally:
        sys.path.remove(str(ROOT / "bench"))
    out = OUT / "dirstorage-replication.png"
    out.unlink(missing_ok=True)
    plot_dashboard.plot(OUT / "dashboard-answers.json", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a panel with no answer is an error, not an empty drawing
    broken = dict(run["answers"], panels=dict(run["answers"]["panels"]))
    broken["panels"][next(iter(broken["panels"]))] = []
    (OUT / "broken-answers.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="answered nothing"):
        plot_dashboard.plot(OUT / "broken-answers.json", OUT / "broken.png")
    shutil.rmtree(OUT / "logs", ignore_errors=True)
