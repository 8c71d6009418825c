"""The controllers' metrics of a local run (docs/metrics.md, "Controllers"), served on ``/metrics``.

:func:`exposition` is a pure function of the run's state, so the text always says what
``state.json`` says; the loop renders it after every tick and a small HTTP server in a thread hands
out the latest text. ``ondeck run`` has no namespace, so the ``namespace`` label is left out.
"""
from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PHASES = ("Pending", "Progressing", "Healthy", "Degraded", "Paused", "Promoting", "RolledBack")
VERDICTS = ("Successful", "Failed", "Inconclusive")


def exposition(state: dict[str, Any], accuracy_bar: float | None = None) -> bytes:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {_number(value)}")

    model = state["model"]
    r = state.get("rollout")
    if r:
        base = {"model": model, "variant": r["canaryVariant"], "version": r["canaryVersion"]}
        counters = state.get("counters", {})
        family("ondeck_rollout_phase", "gauge", "1 for the rollout's current phase, 0 for the others",
               [({**base, "phase": p}, float(r["phase"] == p)) for p in PHASES])
        family("ondeck_rollout_step", "gauge", "index of the current canary step", [(base, r["stepIndex"])])
        family("ondeck_rollout_canary_weight", "gauge", "percent of traffic the controller gives the canary",
               [(base, r["canaryWeight"])])
        family("ondeck_analysis_measurements_total", "counter", "analysis measurements of the canary, by verdict",
               [({**base, "result": v}, counters.get("measurements", {}).get(v, 0)) for v in VERDICTS])
        family("ondeck_rollout_aborts_total", "counter", "rollouts rolled back, by analysis or by ondeck abort",
               [(base, counters.get("aborts", 0))])
    m = state.get("monitor")
    if m:
        base = {"model": model, "variant": state.get("monitorVariant") or state.get("stable", ""), "version": m["version"]}
        columns = sorted((m.get("columns") or {}).items())
        family("ondeck_drift_detected", "gauge", "1 while the drift test finds the column drifted",
               [({**base, "feature": k}, float(c["drift"])) for k, c in columns])
        family("ondeck_drift_statistic", "gauge", "the drift test's evidence against no drift (log e-value)",
               [({**base, "feature": k}, c["statistic"]) for k, c in columns])
        family("ondeck_drift_effect_size", "gauge", "chi distance between live and reference bin shares",
               [({**base, "feature": k}, c["effect"]) for k, c in columns])
        if m.get("liveAccuracy") is not None:
            family("ondeck_live_accuracy", "gauge", "live accuracy over the last monitoring window",
                   [(base, m["liveAccuracy"])])
        if accuracy_bar is not None:
            family("ondeck_live_accuracy_bar", "gauge", "monitoring.staleness.accuracyBar", [(base, accuracy_bar)])
            stale = m.get("staleness")
            if stale:
                seconds = stale["secondsToBar"]
                family("ondeck_staleness_seconds_to_bar", "gauge", "forecast seconds until live accuracy falls below the bar",
                       [(base, math.inf if seconds is None else seconds)])
    return ("\n".join(out) + "\n").encode()


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exporter:
    """Serves the latest :func:`exposition` text on ``GET /metrics``."""

    def __init__(self, host: str, port: int):
        self.text = b""
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = exporter.text
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
