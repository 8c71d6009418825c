"""The drift and quality controller: :mod:`ondeck.monitor` on the variant a ModelDeployment serves.

Every ``monitoring.drift.interval`` it reads what the serving variant (the stable one, or the canary
once promoted) saw since its last look from Prometheus, as bin counts and feedback, and folds them
into the monitor state kept in ``status.monitoring``. The monitor says when drift starts and ends
(condition ``DriftDetected`` with the drifting features, an Event) and when to ask for a retrain,
once per episode; this module makes the webhook attempts it asks for and reports back, so a restart
neither repeats a delivered request nor forgets a pending one.

Prometheus unreachable: no look is taken (the next one covers the whole time since the last), and
the state says why, never "no drift".

A webhook with ``secretRef`` is signed (:mod:`ondeck.signing`) with that key of that Secret in the
ModelDeployment's namespace, read at each attempt. If it cannot be read, nothing is sent (never
unsigned): the attempt counts as failed with what is missing as its error (``pendingRetrain.lastError``
in the status, a ``RetrainWebhookNotSigned`` Warning event) and is tried again with the same backoff.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ondeck import monitor as mon
from ondeck import webhooks
from ondeck.decide import AccuracyPoint
from ondeck.operator.kube import SecretUnavailable
from ondeck.operator.packages import PackageUnreadable, Packages
from ondeck.operator.prometheus import Prometheus, PrometheusUnavailable
from ondeck.spec import model as m
from ondeck.windows import drift_window, variant_stats



@dataclass
class MonitorTick:
    state: dict[str, Any] | None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)
    condition: dict[str, Any] | None = None  # DriftDetected, without times (the caller keeps transitions)


# (namespace, Secret name, key) -> the key's bytes, or SecretUnavailable; Kube.secret_key in the operator.
SecretReader = Callable[[str, str, str], bytes]


class DriftController:
    def __init__(self, prometheus: Prometheus | None, packages: Packages, post=webhooks.post,
                 secrets: SecretReader | None = None):
        self.prometheus = prometheus
        self.packages = packages
        self.post = post
        self.secrets = secrets
        self._monitors: dict[tuple[str, str], mon.Monitor] = {}

    def tick(self, md: m.ModelDeployment, namespace: str, serving: m.Variant, state: dict[str, Any] | None,
             now: float) -> MonitorTick:
        try:
            package = self.packages.get(serving)
        except PackageUnreadable as exc:
            return MonitorTick({**(state or {}), "error": str(exc)})
        spec = mon.MonitorSpec.from_spec(md.spec, model=md.model_name, version=serving.version, created=package.created)
        if not (spec.drift or spec.staleness or spec.max_age):
            return MonitorTick(None)
        monitor = self._monitor(namespace, md.name, spec, package.reference)
        out = MonitorTick(state)
        if state is None or state.get("version") != spec.version or state.get("model") != spec.model:
            out.state = {**monitor.initial_state(), "variant": serving.name, "lastLook": now}  # the first window opens now
            out.condition = _condition(out.state)
            return out
        interval = spec.look_interval
        if now - state["lastLook"] >= interval:
            out.state = self._look(md, namespace, serving, monitor, package.reference, state, now, out)
        out.state = self._deliver(md, namespace, out.state, now, out)
        out.condition = _condition(out.state)
        return out

    def _look(self, md, namespace, serving, monitor: mon.Monitor, reference, state, now, out: MonitorTick):
        if self.prometheus is None:
            return {**state, "error": "the operator has no --prometheus-url: nothing to watch"}
        match = {"namespace": namespace, "model": md.model_name, "variant": serving.name}
        try:
            samples = self.prometheus.increase(match, state["lastLook"], now)
        except PrometheusUnavailable as exc:
            return {**state, "error": f"no look taken: {exc}"}
        window = drift_window(samples, match, reference, state["lastLook"], now) if monitor.spec.drift else None
        stats = variant_stats(samples, match, reference)
        new, _, actions = monitor.tick(state, now, window, AccuracyPoint(now, stats.feedback_total, stats.feedback_correct))
        new["error"] = None
        for action in actions:
            if action["type"] == "driftDetected":
                out.events.append(("Warning", "DriftDetected", f"{serving.name} ({serving.version}): {action['reason']}"))
            elif action["type"] == "driftCleared":
                out.events.append(("Normal", "DriftCleared", f"{serving.name} ({serving.version}): {action['reason']}"))
            elif action["type"] == "retrain":
                out.events.append(("Warning", "RetrainRequested", f"{action['id']}: {action['payload']['reason']}"))
        return new

    def _deliver(self, md: m.ModelDeployment, namespace: str, state: dict[str, Any], now: float,
                 out: MonitorTick) -> dict[str, Any]:
        pending = mon.due_retrain(state, now)
        if pending is None or md.spec.retrain is None:
            return state
        url, ref = md.spec.retrain.webhook.url, md.spec.retrain.webhook.secret_ref
        secret = None
        if ref is not None:
            try:
                if self.secrets is None:
                    raise SecretUnavailable("this operator was started without access to Secrets")
                secret = self.secrets(namespace, ref.name, ref.key)
            except SecretUnavailable as exc:
                error = f"not sent, cannot sign it (secretRef): {exc}"
                out.events.append(("Warning", "RetrainWebhookNotSigned",
                                   f"{url}: retrain request {pending['id']} {error}; trying again later"))
                return mon.delivery_failed(state, pending["id"], now, error)
        error = self.post(url, pending["payload"], secret=secret)
        if error:
            out.events.append(("Warning", "RetrainWebhookFailed", f"{url}: {error}; trying again later"))
            return mon.delivery_failed(state, pending["id"], now, error)
        out.events.append(("Normal", "RetrainWebhookDelivered", f"{url} took retrain request {pending['id']}"))
        return mon.delivered(state, pending["id"], now)

    def _monitor(self, namespace: str, name: str, spec: mon.MonitorSpec, reference: dict[str, Any]) -> mon.Monitor:
        """Built once per deployment and spec (the drift detector's set-up is not free)."""
        known = self._monitors.get((namespace, name))
        if known is None or known.spec != spec:
            known = self._monitors[(namespace, name)] = mon.Monitor(spec, reference)
        return known

    def forget(self, namespace: str, name: str) -> None:
        self._monitors.pop((namespace, name), None)


def _condition(state: dict[str, Any]) -> dict[str, Any]:
    drifting = state.get("drifting") or []
    if drifting:
        return {"type": "DriftDetected", "status": "True", "reason": "FeaturesDrifted",
                "message": f"{state['variant']} ({state['version']}): drift in {', '.join(drifting)}"}
    if not state.get("columns"):
        return {"type": "DriftDetected", "status": "Unknown", "reason": "NoLookYet",
                "message": state.get("error") or f"{state['variant']} ({state['version']}): first look pending"}
    return {"type": "DriftDetected", "status": "False", "reason": "NoDrift",
            "message": state.get("error") or f"{state['variant']} ({state['version']}): no drift found"}
