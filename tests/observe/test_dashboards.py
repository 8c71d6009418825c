"""The dashboards' JSON: what generate.py writes, reading only documented metrics, laid out on
Grafana's grid, filtered by the namespace, model and variant pickers. (Their queries run against a
real Prometheus in test_dashboards_live.py.)"""
from __future__ import annotations

import subprocess
import sys

from tests.observe import sources

ROLLOUT_TOPICS = ("weights", "step", "analysis", "requests", "error", "latency")
HEALTH_TOPICS = ("drift", "prediction", "accuracy", "time to accuracy bar", "payload log", "shadow agreement")


def test_json_is_what_the_generator_writes() -> None:
    proc = subprocess.run([sys.executable, str(sources.DASHBOARDS / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_dashboards_cover_the_issue() -> None:
    titles = {name: " | ".join(p["title"].lower() for p in board["panels"]) for name, board in sources.dashboards().items()}
    assert set(titles) == {"rollout", "model-health"}
    for topic in ROLLOUT_TOPICS:
        assert topic in titles["rollout"], topic
    for topic in HEALTH_TOPICS:
        assert topic in titles["model-health"], topic


def test_queries_read_documented_metrics() -> None:
    documented = sources.documented_metrics()
    for q in sources.panel_queries():
        names = sources.metric_names(q.expr)
        assert names, f"{q.id} reads no ondeck metric"
        assert names <= documented, f"{q.id} reads undocumented {names - documented}"


def test_every_query_is_filtered_by_the_pickers() -> None:
    for q in sources.panel_queries():
        assert 'namespace=~"$namespace"' in q.expr and 'model=~"$model"' in q.expr, q.id


def test_panels_sit_on_the_grid_without_overlapping() -> None:
    for name, board in sources.dashboards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        taken: set[tuple[int, int]] = set()
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, (name, p["title"])
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & taken, (name, p["title"])
            taken |= cells
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, p["title"])
        variables = [v["name"] for v in board["templating"]["list"]]
        assert variables == ["datasource", "namespace", "model", "variant"], name
