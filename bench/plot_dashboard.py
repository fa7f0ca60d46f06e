# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draw the Grafana dashboard (docs/grafana/dirstorage-replication.json) with matplotlib,
without a Grafana: each panel is drawn from a running Prometheus' answer to the panel's own
query (/api/v1/query_range, recorded by bench/record_dashboard.py or by
tests/integration/test_prometheus.py), at the panel's place on the dashboard's 24-column grid,
with the panel's title, unit and value mappings. A panel whose query has no answer is an error.

    .venv/bin/python bench/plot_dashboard.py [ANSWERS] [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed import dashboard  # noqa: E402

DEFAULT_ANSWERS = ROOT / "docs" / "grafana" / "dashboard-answers.json"
DEFAULT_OUT = ROOT / "docs" / "grafana" / "dirstorage-replication.png"
ROW_HEIGHT = 0.42  # inches per grid row
COLORS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9")
BACKGROUND, PANEL, TEXT = "#111217", "#181b1f", "#ccccdc"


def scale(unit, values):
    """(factor, label) to show values of a Grafana unit readably."""
    top = max([abs(v) for v in values] or [0])
    if unit == "bytes":
        for factor, label in ((2 ** 20, "MiB"), (2 ** 10, "KiB")):
            if top >= factor:
                return factor, label
        return 1, "B"
    if unit == "s":
        return (60, "min") if top >= 600 else (1, "s")
    return 1, ""


def mapping_of(panel):
    """{value: (text, color)} of the panel's value mappings."""
    out = {}
    for mapping in panel["fieldConfig"]["defaults"].get("mappings", []):
        for value, spec in mapping.get("options", {}).items():
            out[float(value)] = (spec["text"], spec.get("color", "grey"))
    return out


def stat_color(panel, value):
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    color = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            color = step["color"]
    return {"green": "#37872d", "orange": "#c4751b", "red": "#c4162a"}.get(color, color)


def draw_stat(ax, panel, series):
    keys = sorted(series)
    mapping = mapping_of(panel)
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    for i, key in enumerate(keys):
        value = series[key][-1][1]
        text = mapping.get(value, (None,))[0]
        if text is None:
            factor, label = scale(unit, [value])
            text = "%.0f %s" % (value / factor, label)
        x0 = i / len(keys)
        ax.add_patch(_box(x0 + 0.005, 0.04, 1 / len(keys) - 0.01, 0.92, stat_color(panel, value), ax))
        ax.text(x0 + 0.5 / len(keys), 0.68, "%s %s" % key, ha="center", va="center", color="white", fontsize=7)
        ax.text(x0 + 0.5 / len(keys), 0.35, text, ha="center", va="center", color="white", fontsize=13,
                fontweight="bold")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")


def _box(x, y, w, h, color, ax):
    import matplotlib.patches

    return matplotlib.patches.Rectangle((x, y), w, h, color=color, transform=ax.transAxes)


def draw_state_timeline(ax, panel, series, t0):
    mapping = mapping_of(panel)
    keys = sorted(series, reverse=True)
    for row, key in enumerate(keys):
        points = series[key]
        for (t, value), (t_next, _v) in zip(points, points[1:] + [(points[-1][0], None)], strict=True):
            text, color = mapping.get(value, ("?", "grey"))
            color = {"green": "#37872d", "red": "#c4162a"}.get(color, color)
            ax.barh(row, (t_next - t) / 60, left=(t - t0) / 60, height=0.8, color=color, linewidth=0)
        ax.text(0.005, row, "%s %s" % key, transform=ax.get_yaxis_transform(), va="center", color="white",
                fontsize=7, fontweight="bold")
    ax.set_yticks([])
    ax.set_xlabel("minutes", fontsize=7, color=TEXT)


def draw_timeseries(ax, panel, series, t0):
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    factor, label = scale(unit, [v for points in series.values() for _t, v in points])
    for i, key in enumerate(sorted(series)):
        t = [(p[0] - t0) / 60 for p in series[key]]
        v = [p[1] / factor for p in series[key]]
        ax.plot(t, v, color=COLORS[i % len(COLORS)], linewidth=1.2, label="%s %s" % key,
                drawstyle="steps-post")
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    for step in steps[1:]:
        if step["value"] / factor < ax.get_ylim()[1]:
            ax.axhline(step["value"] / factor, color="#c4162a", linestyle="--", linewidth=0.8)
    ax.set_ylim(bottom=0)
    if label:
        ax.set_ylabel(label, fontsize=7, color=TEXT)
    ax.set_xlabel("minutes", fontsize=7, color=TEXT)
    ax.legend(fontsize=6, loc="upper left", ncol=2, facecolor=PANEL, edgecolor=PANEL, labelcolor=TEXT)


def style(ax, title):
    ax.set_facecolor(PANEL)
    ax.set_title(title, fontsize=9, color=TEXT, loc="left")
    ax.tick_params(colors=TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color("#2c3235")
    ax.grid(True, color="#2c3235", linewidth=0.5)


def plot(answers_path=DEFAULT_ANSWERS, out=DEFAULT_OUT):
    """Draw the dashboard from the answers recorded in `answers_path` ({"start", "panels": {expr:
    Prometheus matrix}}) into the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = dashboard.load()
    with open(answers_path) as f:
        answers = json.load(f)
    t0 = answers["start"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard.panels(dash))
    fig = plt.figure(figsize=(15, rows * ROW_HEIGHT + 0.6), dpi=90, facecolor=BACKGROUND)
    fig.suptitle("%s (each panel drawn from Prometheus' answer to its query)" % dash["title"],
                 color=TEXT, fontsize=11, x=0.01, ha="left")
    for panel in dashboard.panels(dash):
        pos = panel["gridPos"]
        ax = fig.add_axes([pos["x"] / 24 + 0.035, 1 - (pos["y"] + pos["h"]) / (rows + 1.5),
                           pos["w"] / 24 - 0.05, pos["h"] / (rows + 1.5) - 0.045])
        series = dashboard.series_of(answers["panels"][panel["targets"][0]["expr"]])
        if not series:
            raise ValueError("Prometheus answered nothing to the panel %r" % panel["title"])
        style(ax, panel["title"])
        if panel["type"] == "stat":
            draw_stat(ax, panel, series)
        elif panel["type"] == "state-timeline":
            draw_state_timeline(ax, panel, series, t0)
        else:
            draw_timeseries(ax, panel, series, t0)
    fig.savefig(out, facecolor=BACKGROUND)
    print("wrote %s" % out)


if __name__ == "__main__":
    plot(*sys.argv[1:3])
