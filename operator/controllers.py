"""One controller tick per ModelDeployment: rollout or experiment, then drift and quality; their status, events, metrics.

The operator's controllers loop (:mod:`ondeck.operator.handlers`) calls :meth:`Controllers.tick` every
``--tick-seconds`` for each ModelDeployment that changed or has work due (:mod:`ondeck.operator.scheduling`).
The states live in the status (``rollout`` or ``experiment``, ``monitoring``) and are written through
the reconciler (:meth:`~ondeck.operator.reconcile.Reconciler.controller_update`), which also re-renders
the router's weights when the rollout or the experiment moved them. The controller keeps the last
state it wrote in memory and reads the status only when it has none (at start-up): an event stream
that lags its own writes never makes it act twice on one step.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ondeck import experiment, rollout
from ondeck.controller_metrics import ControllerView, exposition
from ondeck.operator.experiments import ExperimentController
from ondeck.operator.monitoring import DriftController
from ondeck.operator.reconcile import Reconciler
from ondeck.operator.rolling import CanaryController, analysis_runs
from ondeck.spec import model as m
from ondeck.spec.traffic import stable_variant, variant

log = logging.getLogger("ondeck.operator")
Event = Callable[[dict[str, Any], str, str, str], None]  # (body, type, reason, message)


@dataclass
class Watched:
    """What the controllers remember of one ModelDeployment between ticks."""

    rollout: dict[str, Any] | None
    monitoring: dict[str, Any] | None
    experiment: dict[str, Any] | None = None
    condition: dict[str, Any] | None = None  # DriftDetected as last written (with its transition time)
    written: dict[str, Any] | None = None
    measurements: Counter = field(default_factory=Counter)
    aborts: int = 0
    view: ControllerView | None = None


class Controllers:
    def __init__(self, reconciler: Reconciler, canary: CanaryController, drift: DriftController, *,
                 event: Event, clock: Callable[[], float] = time.time,
                 experiments: ExperimentController | None = None):
        self.reconciler = reconciler
        self.canary = canary
        self.drift = drift
        # A/B tests and shadows read the same Prometheus as the canary's analysis.
        self.experiments = experiments or ExperimentController(canary.prometheus)
        self.event = event
        self.clock = clock
        self._watched: dict[tuple[str, str], Watched] = {}
        self._lock = threading.Lock()

    def tick(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        md = self.reconciler.parsed(namespace, name)
        if md is None:
            return  # not reconciled yet, or its spec is unusable (its status says why)
        now = self.clock()
        status = body.get("status") or {}
        with self._lock:
            w = self._watched.get((namespace, name))
            if w is None:  # first tick since start: resume from the status
                w = self._watched[(namespace, name)] = Watched(status.get("rollout"), status.get("monitoring"),
                                                               experiment=status.get("experiment"),
                                                               condition=_drift_condition(status))
        events: list[tuple[str, str, str]] = []
        rerender = False
        canary = md.spec.strategy.canary if md.spec.strategy else None
        if canary is not None:
            result = self.canary.tick(md, namespace, w.rollout, meta.get("annotations") or {}, now)
            w.rollout, rerender = result.state, result.rerender
            w.measurements.update(result.verdicts)
            w.aborts += result.aborted
            events += result.events
        else:
            w.rollout = None
        # promote/abort are the canary's while there is one, else the experiment's
        tried = self.experiments.tick(md, namespace, w.experiment, now,
                                      None if canary is not None else meta.get("annotations") or {})
        w.experiment = tried.state
        rerender = rerender or tried.rerender
        events += tried.events
        serving = _serving(md, w.rollout, w.experiment)
        watched = self.drift.tick(md, namespace, serving, w.monitoring, now)
        w.monitoring = watched.state
        events += watched.events
        if watched.condition is not None:
            w.condition = _transition(watched.condition, w.condition)

        fields: dict[str, Any] = {"rollout": w.rollout, "experiment": w.experiment, "monitoring": w.monitoring,
                                  "drift": w.condition["status"] if w.condition else None}
        if w.rollout:
            fields.update(currentStepIndex=w.rollout["stepIndex"], analysisRuns=analysis_runs(w.rollout))
        if rerender or fields != w.written:
            self.reconciler.controller_update(namespace, name, fields, [w.condition] if w.condition else [],
                                              rerender=rerender)
            w.written = fields
        for kind, reason, message in events:
            log.info("%s/%s: %s: %s", namespace, name, reason, message)
            self.event(body, kind, reason, message)
        staleness = md.spec.monitoring.staleness
        w.view = ControllerView(model=md.model_name, rollout=w.rollout, monitor=w.monitoring, experiment=w.experiment,
                                monitor_variant=serving.name, measurements=dict(w.measurements), aborts=w.aborts,
                                accuracy_bar=staleness.accuracy_bar if staleness else None, namespace=namespace)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._watched.pop((namespace, name), None)
        self.drift.forget(namespace, name)

    def metrics(self) -> bytes:
        """The controllers' series (docs/metrics.md, "Controllers") of every watched ModelDeployment."""
        with self._lock:
            views = [w.view for w in self._watched.values() if w.view is not None]
        return exposition(views)


def _serving(md: m.ModelDeployment, state: dict[str, Any] | None, tried: dict[str, Any] | None = None) -> m.Variant:
    """The variant live traffic is served by: the canary or the experiment's winner once promoted,
    else the stable one."""
    if state and state["phase"] == rollout.HEALTHY:
        return variant(md.spec, state["canaryVariant"])
    name = experiment.serving(tried, stable_variant(md.spec).name)
    return next((v for v in md.spec.variants if v.name == name), stable_variant(md.spec))


def _drift_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == "DriftDetected"), None)


def _transition(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Keep lastTransitionTime while the status stays the same (the Kubernetes convention)."""
    same = old is not None and old.get("status") == new["status"] and old.get("lastTransitionTime")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**new, "lastTransitionTime": old["lastTransitionTime"] if same else now}
