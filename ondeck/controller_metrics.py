"""The controllers' metrics (docs/metrics.md, "Controllers"), as exposition text, and a server for it.

:func:`exposition` is a pure function of the controllers' state, so the text always says what the
state says: ``ondeck run`` renders it from ``state.json`` after every tick, the operator from every
ModelDeployment's rollout and monitor state (one :class:`ControllerView` each, with its namespace).
:class:`Exporter` is a small HTTP server in a thread handing out the latest text.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

PHASES = ("Pending", "Progressing", "Healthy", "Degraded", "Paused", "Promoting", "RolledBack")
VERDICTS = ("Successful", "Failed", "Inconclusive")


@dataclass(frozen=True)
class ControllerView:
    """What one deployment's controllers know: rollout state (:mod:`ondeck.rollout`), monitor state
    (:mod:`ondeck.monitor`) and the counters since the controller started watching it."""

    model: str
    rollout: dict[str, Any] | None = None
    monitor: dict[str, Any] | None = None
    monitor_variant: str = ""
    measurements: dict[str, int] = field(default_factory=dict)  # verdict -> count
    aborts: int = 0
    accuracy_bar: float | None = None
    namespace: str | None = None  # the operator's; ondeck run has none
    experiment: dict[str, Any] | None = None  # the A/B test or shadow (:mod:`ondeck.experiment`)

    @classmethod
    def of_local(cls, state: dict[str, Any], accuracy_bar: float | None) -> "ControllerView":
        counters = state.get("counters", {})
        return cls(model=state["model"], rollout=state.get("rollout"), monitor=state.get("monitor"),
                   monitor_variant=state.get("monitorVariant") or state.get("stable", ""),
                   measurements=counters.get("measurements", {}), aborts=counters.get("aborts", 0),
                   accuracy_bar=accuracy_bar, experiment=state.get("experiment"))


_FAMILIES = (  # name, type, help: in the order they are written
    ("ondeck_rollout_phase", "gauge", "1 for the rollout's current phase, 0 for the others"),
    ("ondeck_rollout_step", "gauge", "index of the current canary step"),
    ("ondeck_rollout_canary_weight", "gauge", "percent of traffic the controller gives the canary"),
    ("ondeck_analysis_measurements_total", "counter", "analysis measurements of the canary, by verdict"),
    ("ondeck_rollout_aborts_total", "counter", "rollouts rolled back, by analysis or by ondeck abort"),
    ("ondeck_experiment_phase", "gauge", "1 for the A/B test's or shadow's current phase, 0 for the other"),
    ("ondeck_experiment_outcome", "gauge", "1 for how the A/B test or shadow ended, 0 for the other outcomes"),
    ("ondeck_experiment_looks_total", "counter", "looks at the A/B test's or shadow's evidence"),
    ("ondeck_experiment_samples", "gauge", "samples the decision rests on so far: trials per arm, or shadow pairs"),
    ("ondeck_experiment_agreement", "gauge", "share of the shadow's samples that agreed with the primary so far"),
    ("ondeck_drift_detected", "gauge", "1 while the drift test finds the column drifted"),
    ("ondeck_drift_statistic", "gauge", "the drift test's evidence against no drift (log e-value)"),
    ("ondeck_drift_effect_size", "gauge", "chi distance between live and reference bin shares"),
    ("ondeck_live_accuracy", "gauge", "live accuracy over the last monitoring window"),
    ("ondeck_live_accuracy_bar", "gauge", "monitoring.staleness.accuracyBar"),
    ("ondeck_staleness_seconds_to_bar", "gauge", "forecast seconds until live accuracy falls below the bar"),
)


def exposition(views: list[ControllerView]) -> bytes:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name, _, _ in _FAMILIES}
    for view in views:
        _samples(view, samples)
    out: list[str] = []
    for name, kind, help_text in _FAMILIES:
        if not samples[name]:
            continue
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples[name]:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {_number(value)}")
    return ("\n".join(out) + "\n").encode()


def _samples(view: ControllerView, out: dict[str, list[tuple[dict[str, str], float]]]) -> None:
    scope = {"namespace": view.namespace} if view.namespace is not None else {}
    r = view.rollout
    if r:
        base = {**scope, "model": view.model, "variant": r["canaryVariant"], "version": r["canaryVersion"]}
        out["ondeck_rollout_phase"] += [({**base, "phase": p}, float(r["phase"] == p)) for p in PHASES]
        out["ondeck_rollout_step"].append((base, r["stepIndex"]))
        out["ondeck_rollout_canary_weight"].append((base, r["canaryWeight"]))
        out["ondeck_analysis_measurements_total"] += [({**base, "result": v}, view.measurements.get(v, 0))
                                                      for v in VERDICTS]
        out["ondeck_rollout_aborts_total"].append((base, view.aborts))
    e = view.experiment
    if e:
        _experiment_samples(e, {**scope, "model": view.model, "kind": e["kind"], "variant": e["treatment"],
                                "version": e["treatmentVersion"]}, out)
    m = view.monitor
    if m:
        base = {**scope, "model": view.model, "variant": view.monitor_variant, "version": m["version"]}
        columns = sorted((m.get("columns") or {}).items())
        out["ondeck_drift_detected"] += [({**base, "feature": k}, float(c["drift"])) for k, c in columns]
        out["ondeck_drift_statistic"] += [({**base, "feature": k}, c["statistic"]) for k, c in columns]
        out["ondeck_drift_effect_size"] += [({**base, "feature": k}, c["effect"]) for k, c in columns]
        if m.get("liveAccuracy") is not None:
            out["ondeck_live_accuracy"].append((base, m["liveAccuracy"]))
        if view.accuracy_bar is not None:
            out["ondeck_live_accuracy_bar"].append((base, view.accuracy_bar))
            stale = m.get("staleness")
            if stale:
                seconds = stale["secondsToBar"]
                out["ondeck_staleness_seconds_to_bar"].append((base, math.inf if seconds is None else seconds))


EXPERIMENT_PHASES = ("Progressing", "Healthy")
OUTCOMES = ("promoted", "winner", "equivalent", "rejected")


def _experiment_samples(e: dict[str, Any], base: dict[str, str], out: dict[str, list]) -> None:
    """Series of the experiment: ``variant``/``version`` are the treatment's (the other A/B arm, or the shadow)."""
    out["ondeck_experiment_phase"] += [({**base, "phase": p}, float(e["phase"] == p)) for p in EXPERIMENT_PHASES]
    if e.get("outcome"):
        out["ondeck_experiment_outcome"] += [({**base, "outcome": o}, float(e["outcome"] == o)) for o in OUTCOMES]
    out["ondeck_experiment_looks_total"].append((base, e.get("looks", 0)))
    evidence = (e.get("decision") or {}).get("evidence") or {}
    if e["kind"] == "shadow":
        if evidence.get("samples") is not None:
            out["ondeck_experiment_samples"].append((base, evidence["samples"]))
        if evidence.get("agreement") is not None:
            out["ondeck_experiment_agreement"].append((base, evidence["agreement"]))
    else:
        for arm in (e["control"], e["treatment"]):
            trials = ((evidence.get("arms") or {}).get(arm) or {}).get("trials")
            if trials is not None:
                out["ondeck_experiment_samples"].append(({**base, "arm": arm}, trials))


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exporter:
    """Serves :func:`exposition` text on ``GET /metrics``: the latest ``text`` set, or what ``render``
    returns at each scrape when given."""

    def __init__(self, host: str, port: int, render: Callable[[], bytes] | None = None):
        self.text = b""
        self.render = render
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = exporter.render() if exporter.render else exporter.text
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
