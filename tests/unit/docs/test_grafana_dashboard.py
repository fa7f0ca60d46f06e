"""The Grafana dashboard (docs/grafana/dirstorage-replication.json) reads only the series that
the cron wrapper's metrics files hold (metrics.py), shows each figure of the file per standby
and storage, and filters every panel by its two template variables."""

from __future__ import annotations

import pytest

from dirstorage_replica.metrics import METRICS, PREFIX, RESULT_FIGURES
from testbed import dashboard

WRITTEN = {PREFIX + name for name, _kind, _help in METRICS}


@pytest.fixture(scope="module")
def dash():
    return dashboard.load()


def test_every_query_reads_only_series_the_metrics_files_hold(dash):
    queries = list(dashboard.panel_queries(dash)) + list(dashboard.variable_queries(dash))
    assert queries
    for title, expr in queries:
        names = dashboard.series_names(expr)
        assert names, "%s: no series in %r" % (title, expr)
        assert names <= WRITTEN, "%s: unknown series %s" % (title, sorted(names - WRITTEN))


def test_each_figure_of_the_metrics_file_has_a_panel(dash):
    read = set()
    for _title, expr in dashboard.panel_queries(dash):
        read |= dashboard.series_names(expr)
    # every figure of a result (a hot standby's downtime_seconds included), the last success and result
    wanted = {PREFIX + m for m in RESULT_FIGURES + ("last_success_timestamp_seconds", "last_result")}
    assert wanted <= read, sorted(wanted - read)


def test_every_panel_is_filtered_by_standby_and_storage(dash):
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["instance"]["type"] == names["storage"]["type"] == "query"
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    # the storage list follows the chosen standbys
    assert dict(dashboard.variable_queries(dash))["storage"].count("$instance") == 1
    for title, expr in dashboard.panel_queries(dash):
        assert dashboard.variables_used(expr) == {"instance", "storage"}, title
        assert 'instance=~"$instance"' in expr and 'storage=~"$storage"' in expr, title
    for panel in dashboard.panels(dash):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_it_is_a_grafana_10_dashboard(dash):
    assert dash["schemaVersion"] in (38, 39)  # Grafana 10.0-10.4
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dashboard.panels(dash)]
    assert len(ids) == len(set(ids))
    for panel in dashboard.panels(dash):
        assert panel["type"] in ("timeseries", "stat", "state-timeline", "row"), panel["title"]
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0


@pytest.mark.parametrize("expr,names", [
    ('time() - dirstorage_replication_last_success_timestamp_seconds{instance=~"$instance"}',
     {"dirstorage_replication_last_success_timestamp_seconds"}),
    ('sum by (instance, storage) (sum_over_time(dirstorage_replication_bytes{storage="a b"}[1h]))',
     {"dirstorage_replication_bytes"}),
    ("rate(node_cpu_seconds_total[5m]) * 1e3 > bool 0", {"node_cpu_seconds_total"}),
    ("label_values(dirstorage_replication_last_result, instance)", {"dirstorage_replication_last_result"}),
])
def test_series_names_of_promql(expr, names):
    assert dashboard.series_names(expr) == names
