"""What the observe tests read: the chart, its dashboards and alert rules, and the metric names
docs/metrics.md promises."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ondeck"
DASHBOARDS = CHART / "dashboards"
ALERTS = CHART / "files" / "alerts.yaml"
ALERTS_TEST = Path(__file__).resolve().parent / "alerts_test.yaml"
METRICS_DOC = REPO / "docs" / "metrics.md"

# Grafana's time macros: the dashboards' default range (3h), and rate windows wide enough that a
# slow test run still finds its burst of traffic inside them.
GRAFANA_MACROS = {"$__rate_interval": "10m", "$__range": "3h", "$__interval": "15s"}

_METRIC = re.compile(r"\b(ondeck_[a-z0-9_]+)")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
_GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref}"


def dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[Query]:
    out = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for t in panel.get("targets", ()):
                out.append(Query(name, panel["title"], t["refId"], t["expr"]))
    return out


def variable_queries() -> dict[str, str]:
    """Query of each dashboard variable (every dashboard has the same ones)."""
    return {v["name"]: v["query"] for board in dashboards().values()
            for v in board["templating"]["list"] if v["type"] == "query"}


def substitute(expr: str, variables: dict[str, str]) -> str:
    """The PromQL Grafana would send: variables and time macros replaced by values."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    for name, value in variables.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    if "$" in expr:
        raise AssertionError(f"unsubstituted variable in {expr!r}")
    return expr


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def grouping_labels(expr: str) -> list[str]:
    """Labels an expression keeps: those of its ``by (...)`` and ``on (...)`` clauses."""
    labels: list[str] = []
    for clause in _GROUPING.findall(expr):
        labels += [x.strip() for x in clause.split(",") if x.strip() and x.strip() not in labels]
    return labels


def metric_names(expr: str) -> set[str]:
    """Metric families an expression reads (histogram series map to their family)."""
    return {_HISTOGRAM_SUFFIX.sub("", m) for m in _METRIC.findall(expr)}


def documented_metrics() -> set[str]:
    """Every metric name in a table row of docs/metrics.md."""
    names = set()
    for line in METRICS_DOC.read_text().splitlines():
        if line.startswith("| `ondeck_"):
            names.add(line.split("`")[1])
    return names
