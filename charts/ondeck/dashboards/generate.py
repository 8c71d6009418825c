#!/usr/bin/env python3
"""Writes ondeck's Grafana dashboards (rollout.json, model-health.json) next to this file.

The dashboards are data, but hand-written dashboard JSON is mostly repetition (datasource blocks,
grid positions, legend options) in which a typo hides well. Here each panel is one line of intent:
a title, its PromQL, a unit. The chart ships the generated JSON as ConfigMaps for Grafana's
dashboard sidecar; tests/observe checks that the JSON is what this script writes, and runs every
query against a Prometheus that scraped real ondeck processes.

Metric names: docs/metrics.md. Usage: ``generate.py`` (rewrite) or ``generate.py --check`` (exit 1
if a file is out of date). Standard library only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}

# Label matchers every query starts from. Rollout series are per model (their variant is always the
# canary), so rollout panels filter by model only; everything else by variant as well.
MODEL = 'namespace=~"$namespace", model=~"$model"'
VARIANT = MODEL + ', variant=~"$variant"'
RATE = "[$__rate_interval]"

COLORS = {"Successful": "green", "Failed": "red", "Inconclusive": "yellow"}


# --- panels ------------------------------------------------------------------------------------


def target(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend or "__auto"}


def timeseries(title: str, description: str, targets: list[dict], unit: str = "short", *,
               bars: bool = False, overrides: list[dict] | None = None, max_value: float | None = None) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
              "showPoints": "never", "spanNulls": False, "stacking": {"mode": "normal" if bars else "none"}}
    defaults = {"unit": unit, "custom": custom}
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "type": "timeseries", "title": title, "description": description, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, targets: list[dict], unit: str = "short", *, text_mode: str = "auto",
         thresholds: list[tuple[float | None, str]] | None = None) -> dict:
    return {
        "type": "stat", "title": title, "description": description,
        "targets": [dict(t, instant=True, range=False) for t in targets],
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": _thresholds(thresholds or [(None, "blue")])},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "textMode": text_mode, "colorMode": "value", "graphMode": "none", "justifyMode": "auto"},
    }


def bargauge(title: str, description: str, targets: list[dict], unit: str = "short", *,
             thresholds: list[tuple[float | None, str]] | None = None) -> dict:
    return {
        "type": "bargauge", "title": title, "description": description,
        "targets": [dict(t, instant=True, range=False) for t in targets],
        "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                     "thresholds": _thresholds(thresholds or [(None, "blue")])},
                        "overrides": []},
        "options": {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def _thresholds(steps: list[tuple[float | None, str]]) -> dict:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def color_by_name(names: dict[str, str]) -> list[dict]:
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}
            for name, color in names.items()]


def dashed(regex: str) -> list[dict]:
    return [{"matcher": {"id": "byRegexp", "options": regex},
             "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                            {"id": "custom.fillOpacity", "value": 0}]}]


def ratio(numerator: str, denominator: str, by: str) -> str:
    return f"sum by ({by}) ({numerator})\n  / sum by ({by}) ({denominator})"


def quantile(q: float, bucket: str, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({bucket}{{{selector}}}{RATE})))"


# --- layout ------------------------------------------------------------------------------------


def layout(rows: list[tuple[str, list[tuple[int, int, dict]]]]) -> list[dict]:
    """Place (width, height, panel) rows on Grafana's 24-column grid, left to right."""
    panels, y, next_id = [], 0, 1
    for title, row in rows:
        panels.append({"type": "row", "title": title, "collapsed": False, "panels": [], "id": next_id,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        next_id, y = next_id + 1, y + 1
        x, line_height = 0, 0
        for w, h, panel in row:
            if x + w > 24:
                x, y, line_height = 0, y + line_height, 0
            panel = dict(panel, id=next_id, datasource=DS, gridPos={"h": h, "w": w, "x": x, "y": y})
            panel["targets"] = [dict(t, datasource=DS, refId=chr(ord("A") + i)) for i, t in enumerate(panel["targets"])]
            panels.append(panel)
            next_id, x, line_height = next_id + 1, x + w, max(line_height, h)
        y += line_height
    return panels


def variable(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": query, "definition": query,
            "refresh": 2, "sort": 1, "regex": "", "hide": 0, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": []}


TEMPLATING = {"list": [
    {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "regex": "",
     "hide": 0, "refresh": 1, "multi": False, "includeAll": False, "current": {}, "options": []},
    # ondeck_model_info: one series per served model, so these lists show what is running.
    variable("namespace", "Namespace", "label_values(ondeck_model_info, namespace)"),
    variable("model", "Model", 'label_values(ondeck_model_info{namespace=~"$namespace"}, model)'),
    variable("variant", "Variant", 'label_values(ondeck_model_info{namespace=~"$namespace", model=~"$model"}, variant)'),
]}


def dashboard(uid: str, title: str, description: str, rows) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["ondeck"],
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-3h", "to": "now"}, "timezone": "", "id": None,
        "links": [{"title": "ondeck dashboards", "type": "dashboards", "tags": ["ondeck"], "asDropdown": False,
                   "includeVars": True, "keepTime": True}],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": TEMPLATING,
        "panels": layout(rows),
    }


# --- the dashboards ----------------------------------------------------------------------------


def rollout() -> dict:
    server_requests = f"rate(ondeck_requests_total{{{VARIANT}}}{RATE})"
    return dashboard("ondeck-rollout", "ondeck / Rollout",
                     "A canary in flight: the controller's step, weights and analysis verdicts next to what each "
                     "variant serves (requests, errors, latency).", [
        ("Rollout", [
            (6, 4, stat("Phase", "The rollout's current phase (status.phase).",
                        [target(f"ondeck_rollout_phase{{{MODEL}}} == 1", "{{model}}: {{phase}}")], text_mode="name")),
            (6, 4, stat("Step", "Index of the canary step in progress (0-based).",
                        [target(f"ondeck_rollout_step{{{MODEL}}}", "{{model}}")])),
            (6, 4, stat("Canary weight", "Percent of traffic the controller gives the canary.",
                        [target(f"ondeck_rollout_canary_weight{{{MODEL}}}", "{{model}} {{version}}")], "percent")),
            (6, 4, stat("Rollbacks", "Rollouts aborted in the selected time range (by analysis or ondeck abort).",
                        [target(f"sum by (model) (increase(ondeck_rollout_aborts_total{{{MODEL}}}[$__range]))",
                                "{{model}}")], thresholds=[(None, "green"), (1, "red")])),
            (12, 8, timeseries("Traffic weights",
                               "What the router applies per variant (solid) and the controller's canary target (dashed).",
                               [target(f"ondeck_router_weight{{{VARIANT}}}", "router: {{variant}} {{version}}"),
                                target(f"ondeck_rollout_canary_weight{{{MODEL}}}", "controller: canary {{version}}")],
                               "percent", max_value=100, overrides=dashed("^controller:.*"))),
            (6, 8, timeseries("Canary step", "Index of the canary step over time.",
                              [target(f"ondeck_rollout_step{{{MODEL}}}", "{{model}} {{version}}")])),
            (6, 8, timeseries("Analysis measurements", "Analysis measurements of the canary, by verdict.",
                              [target(f"sum by (result) (increase(ondeck_analysis_measurements_total{{{MODEL}}}{RATE}))",
                                      "{{result}}")], bars=True, overrides=color_by_name(COLORS))),
        ]),
        ("Per variant", [
            (8, 8, timeseries("Requests through the router", "Requests answered to clients, by the variant that served them.",
                              [target(f"sum by (variant, version) (rate(ondeck_router_requests_total{{{VARIANT}}}{RATE}))",
                                      "{{variant}} {{version}}")], "reqps")),
            (8, 8, timeseries("Error ratio", "Share of inference requests answered with a server error (5xx) or "
                                             "rejected as bad input (4xx), per variant.",
                              [target(ratio(f"rate(ondeck_requests_total{{{VARIANT}, code=~\"5..\"}}{RATE})",
                                            server_requests, "variant, version"), "5xx {{variant}} {{version}}"),
                               target(ratio(f"rate(ondeck_requests_total{{{VARIANT}, code=~\"4..\"}}{RATE})",
                                            server_requests, "variant, version"), "4xx {{variant}} {{version}}")],
                              "percentunit")),
            (8, 8, timeseries("Latency through the router", "p50 and p99 of client-side latency, per variant.",
                              [target(quantile(q, "ondeck_router_request_duration_seconds_bucket", VARIANT, "variant, version"),
                                      f"p{round(q * 100)} {{{{variant}}}} {{{{version}}}}") for q in (0.5, 0.99)], "s")),
            (8, 8, timeseries("Server latency", "p99 of the time from request parsed to response written, in the server.",
                              [target(quantile(0.99, "ondeck_request_duration_seconds_bucket", VARIANT, "variant, version"),
                                      "p99 {{variant}} {{version}}")], "s")),
            (8, 8, timeseries("Rows per model run", "Mean rows per model run (adaptive batching).",
                              [target(ratio(f"rate(ondeck_batch_size_sum{{{VARIANT}}}{RATE})",
                                            f"rate(ondeck_batch_size_count{{{VARIANT}}}{RATE})", "variant, version"),
                                      "{{variant}} {{version}}")])),
            (8, 8, timeseries("Upstream failures", "The router's failed attempts per variant and kind, and endpoint ejections.",
                              [target(f"sum by (variant, kind) (rate(ondeck_router_upstream_errors_total{{{VARIANT}}}{RATE}))",
                                      "{{variant}} {{kind}}"),
                               target(f"sum by (variant, endpoint) (increase(ondeck_router_endpoint_ejections_total{{{VARIANT}}}{RATE}))",
                                      "ejected: {{variant}} {{endpoint}}")])),
        ]),
    ])


def model_health() -> dict:
    feedback_1h = ratio(f"increase(ondeck_feedback_correct_total{{{VARIANT}}}[1h])",
                        f"increase(ondeck_feedback_total{{{VARIANT}}}[1h])", "variant, version")

    def shares(output: str, window: str, fn: str) -> str:
        counts = f"{fn}(ondeck_prediction_bin_total{{{VARIANT}, output=\"{output}\"}}{window})"
        return (f"sum by (model, variant, bin) ({counts})\n"
                f"  / on (model, variant) group_left sum by (model, variant) ({counts})")

    return dashboard("ondeck-model-health", "ondeck / Model health",
                     "Is the model still right? Live accuracy and staleness, per-feature drift, the prediction "
                     "distribution, rejected input, the payload log and shadow agreement.", [
        ("Quality", [
            (6, 4, stat("Live accuracy", "Live accuracy over the controller's feedback window.",
                        [target(f"ondeck_live_accuracy{{{VARIANT}}}", "{{variant}} {{version}}")], "percentunit")),
            (6, 4, stat("Accuracy bar", "monitoring.staleness.accuracyBar of the ModelDeployment.",
                        [target(f"ondeck_live_accuracy_bar{{{VARIANT}}}", "{{variant}} {{version}}")], "percentunit")),
            (6, 4, stat("Time to accuracy bar", "Forecast time until live accuracy falls below the bar "
                                                "(0: below it now; infinite: not falling).",
                        [target(f"ondeck_staleness_seconds_to_bar{{{VARIANT}}}", "{{variant}} {{version}}")], "s",
                        thresholds=[(None, "red"), (86400, "yellow"), (7 * 86400, "green")])),
            (6, 4, stat("Drifted columns", "Features (and prediction outputs) the drift test finds drifted now.",
                        [target(f"sum by (variant, version) (ondeck_drift_detected{{{VARIANT}}})", "{{variant}} {{version}}")],
                        thresholds=[(None, "green"), (1, "red")])),
            (12, 8, timeseries("Accuracy over time", "The controller's live accuracy, the raw share of correct feedback "
                                                "over the last hour, and the bar (dashed).",
                               [target(f"ondeck_live_accuracy{{{VARIANT}}}", "controller: {{variant}} {{version}}"),
                                target(feedback_1h, "feedback 1h: {{variant}} {{version}}"),
                                target(f"ondeck_live_accuracy_bar{{{VARIANT}}}", "bar: {{variant}} {{version}}")],
                               "percentunit", overrides=dashed("^bar:.*"))),
            (12, 8, timeseries("Feedback", "Feedback items joined to a served prediction, and ids that matched none.",
                               [target(f"sum by (variant, version) (rate(ondeck_feedback_total{{{VARIANT}}}{RATE}))",
                                       "joined: {{variant}} {{version}}"),
                                target(f"sum by (variant, version) (rate(ondeck_feedback_unmatched_total{{{VARIANT}}}{RATE}))",
                                       "unmatched: {{variant}} {{version}}")], "ops")),
        ]),
        ("Drift", [
            (12, 9, bargauge("Drift effect size by column", "Chi distance (Cohen's w) between live and reference bin "
                                                            "shares, now; red from the default minEffect (0.1).",
                             [target(f"max by (feature) (ondeck_drift_effect_size{{{VARIANT}}})", "{{feature}}")],
                             thresholds=[(None, "green"), (0.1, "red")])),
            (12, 9, timeseries("Drift evidence by column", "The drift test's evidence against 'no drift', per column.",
                               [target(f"ondeck_drift_statistic{{{VARIANT}}}", "{{variant}} {{feature}}")])),
        ]),
        ("Predictions", [
            (12, 8, bargauge("Prediction score distribution", "Share of predictions per reference bin of the score, "
                                                              "over the selected time range, per variant.",
                             [target(shares("score", "[$__range]", "increase"), "{{variant}} bin {{bin}}")],
                             "percentunit")),
            (12, 8, timeseries("Predicted class shares", "Share of predictions per class over time, per variant.",
                               [target(shares("class", RATE, "rate"), "{{variant}} class {{bin}}")], "percentunit")),
        ]),
        ("Data path", [
            (8, 8, timeseries("Rows scored", "Rows predicted per second.",
                              [target(f"sum by (variant, version) (rate(ondeck_inference_rows_total{{{VARIANT}}}{RATE}))",
                                      "{{variant}} {{version}}")], "rowsps")),
            (8, 8, timeseries("Rejected requests by reason", "Requests rejected before the model ran (only reasons seen).",
                              [target(f"sum by (reason) (rate(ondeck_validation_errors_total{{{VARIANT}}}{RATE})) > 0",
                                      "{{reason}}")], "reqps")),
            (8, 8, timeseries("Payload log", "Request/response pairs written to the payload log, and pairs dropped "
                                             "because its queue was full.",
                              [target(f"sum by (variant, version) (rate(ondeck_payload_log_records_total{{{VARIANT}}}{RATE}))",
                                      "written: {{variant}} {{version}}"),
                               target(f"sum by (variant, version) (rate(ondeck_payload_log_dropped_total{{{VARIANT}}}{RATE}))",
                                      "dropped: {{variant}} {{version}}")], "ops")),
        ]),
        ("Shadow", [
            (8, 8, timeseries("Shadow agreement", "Share of compared requests where shadow and primary predicted the same class.",
                              [target(ratio(f"rate(ondeck_shadow_agreement_total{{{MODEL}}}{RATE})",
                                            f"rate(ondeck_shadow_requests_total{{{MODEL}, outcome=\"compared\"}}{RATE})",
                                            "primary, shadow"), "{{shadow}} vs {{primary}}")], "percentunit")),
            (8, 8, timeseries("Shadow requests by outcome", "Mirrored requests: compared, dropped (queue full), error, timeout.",
                              [target(f"sum by (shadow, outcome) (rate(ondeck_shadow_requests_total{{{MODEL}}}{RATE}))",
                                      "{{shadow}} {{outcome}}")], "reqps")),
            (8, 8, timeseries("Shadow score difference", "p50 and p90 of |primary score - shadow score| per compared pair.",
                              [target(quantile(q, "ondeck_shadow_abs_diff_bucket", MODEL, "shadow"),
                                      f"p{round(q * 100)} {{{{shadow}}}}") for q in (0.5, 0.9)])),
        ]),
    ])


DASHBOARDS = {"rollout.json": rollout, "model-health.json": model_health}


def render(make) -> str:
    return json.dumps(make(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: generate.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for name, make in DASHBOARDS.items():
        path, text = HERE / name, render(make)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run {Path(__file__).name})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
