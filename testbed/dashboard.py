# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Grafana dashboard docs/grafana/dirstorage-replication.json, read by its test
(tests/unit/docs/test_grafana_dashboard.py) and by its renderer (bench/plot_dashboard.py).

- ``panels``, ``panel_queries``, ``variable_queries``: what the dashboard asks Prometheus;
- ``series_names``: the series a PromQL expression reads (its identifiers that are not
  functions, keywords, label names or strings);
- ``with_all`` and ``series_of``: a panel query as Grafana sends it to Prometheus with every
  variable at "All", and Prometheus' answer to it (/api/v1/query_range) as the renderer draws it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "dirstorage-replication.json"

# PromQL words that are not series names (functions are recognised by the "(" that follows them)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGE = re.compile(r"\[[^\]]*\]")
VARIABLE = re.compile(r"\$(?:\{(\w+)[^}]*\}|(\w+))")


def load(path=DASHBOARD):
    with open(path) as f:
        return json.load(f)


def panels(dashboard):
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard):
    """(panel title, PromQL expression) of every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel.get("title", ""), target.get("expr", "")


def variable_queries(dashboard):
    """(variable name, query) of the dashboard's query variables."""
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            yield var["name"], query.get("query", "") if isinstance(query, dict) else query


def variables_used(expr):
    """Names of the $variables an expression uses ($name and ${name...})."""
    return {a or b for a, b in VARIABLE.findall(expr)}


def series_names(expr):
    """The series an expression reads: its identifiers outside strings, label matchers and
    range brackets that are neither functions nor keywords (grouping labels are skipped too)."""
    text = STRING.sub('""', expr)
    text = re.sub(r"\blabel_values\((.*),\s*\w+\s*\)", r"label_values(\1)", text)  # Grafana's: (series, label)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = RANGE.sub(" ", MATCHERS.sub(" ", text))
    names = set()
    for m in IDENTIFIER.finditer(text):
        word = m.group(0)
        if word.lower() in KEYWORDS or text[m.end():].lstrip().startswith("("):
            continue
        if re.fullmatch(r"\d[\w]*", word) or text[max(m.start() - 1, 0):m.start()].isdigit():
            continue  # durations and numbers: 5m, 1e3
        names.add(word)
    return names


# ------------------------------------------------------------------ answers

def with_all(expr, dashboard=None):
    """`expr` as Grafana sends it with every variable at "All": each $variable replaced by the
    dashboard's allValue for it (`.*`)."""
    values = {var["name"]: var.get("allValue") for var in (dashboard or load())["templating"]["list"]}

    def value(m):
        name = m.group(1) or m.group(2)
        if not values.get(name):
            raise ValueError("variable $%s has no allValue in the dashboard" % name)
        return values[name]

    return VARIABLE.sub(value, expr)


def series_of(result):
    """{(instance, storage): [(t, value)...]} of a Prometheus range-query answer (a matrix)."""
    return {(r["metric"]["instance"], r["metric"]["storage"]): [(float(t), float(v)) for t, v in r["values"]]
            for r in result}
