"""A canary step's analysis: the manifest's templates, run by :class:`ondeck.decide.CanaryAnalysis`.

Shared by the operator and ``ondeck run``.

The manifest speaks the CRD's words (``errorRate``, ``latencyQuantile``, ``minEffect`` ...); the
decision code has its own (``error_rate``, ``latency``, ``maxEffect`` ...). This module is the one
translation, plus the rule for a step that names several templates: each runs its own analysis on
the same windows, and the step's verdict is the worst of theirs (any rollback rolls back, any pause
pauses, all must pass to promote). Pure: the caller brings the windows.

Prediction drift compares the two variants' prediction histograms, which only means something over
the same bins. A classifier's ``class`` bins are its classes, the same for both versions; a score's
bins are deciles of each version's own reference predictions, so for classifiers the class shares
are compared, and for regressors (which have only a score) the score histogram.
"""
from __future__ import annotations

from typing import Any

from ondeck.decide import AnalysisTemplate, CanaryAnalysis, CanaryWindow, Decision
from ondeck.errors import UserError
from ondeck.spec import model as m

# The verdicts from worst to best: the step takes the worst its templates give.
_SEVERITY = ("rollback", "pause", "continue", "promote")


def decide_template(t: m.AnalysisTemplate, *, classifier: bool) -> AnalysisTemplate:
    """A manifest analysis template as :class:`ondeck.decide.AnalysisTemplate`."""
    metrics = []
    for metric in t.metrics:
        d: dict[str, Any] = {"name": metric.name}
        if metric.kind == "errorRate":
            d.update(kind="error_rate", maxIncrease=metric.max_increase)
        elif metric.kind == "latencyQuantile":
            d.update(kind="latency", quantile=metric.quantile, maxRatio=metric.max_ratio)
        elif metric.kind == "accuracy":
            d.update(kind="accuracy", maxDecrease=metric.max_decrease)
        elif metric.kind == "predictionDrift":
            d.update(kind="prediction_drift", maxEffect=metric.min_effect, output="class" if classifier else "score")
        else:
            raise UserError(f"analysis template {t.name!r}, metric {metric.name!r}: kind {metric.kind} is not measured "
                            "between canary and stable yet (both see the same inputs); watch inputs with "
                            "spec.monitoring.drift instead")
        metrics.append({k: v for k, v in d.items() if v is not None})
    return AnalysisTemplate.from_dict({
        "metrics": metrics, "interval": m.seconds(t.interval), "count": t.count,
        "failureLimit": t.failure_limit, "inconclusiveLimit": t.inconclusive_limit,
    })


class CanaryAnalyses:
    """The templates canary steps refer to, ready to measure."""

    def __init__(self, templates: dict[str, m.AnalysisTemplate], *, model: str, classifier: bool):
        self.model = model
        self.templates = {name: decide_template(t, classifier=classifier) for name, t in templates.items()}

    def _names(self, step: dict[str, Any]) -> list[str]:
        return [t["templateName"] for t in step["analysis"]["templates"]]

    def interval(self, step: dict[str, Any]) -> float:
        """Seconds between measurements of a step: the slowest of its templates'."""
        return max(self.templates[n].interval for n in self._names(step))

    def measure(self, step: dict[str, Any], run_state: dict[str, Any] | None,
                window: CanaryWindow) -> tuple[dict[str, Any], Decision]:
        """One measurement of every template of ``step`` on ``window``; the step's combined decision."""
        run_state = dict(run_state or {})
        decisions: dict[str, Decision] = {}
        for name in self._names(step):
            analysis = CanaryAnalysis(self.templates[name])
            run_state[name], decisions[name] = analysis.step(run_state.get(name) or analysis.initial_state(), window)
        action = min((d.action for d in decisions.values()), key=_SEVERITY.index)
        if len(decisions) == 1:
            (name, d), = decisions.items()
            return run_state, Decision(d.action, d.reason, {"template": name, **d.evidence})
        deciding = [f"{name}: {d.reason}" for name, d in decisions.items() if d.action == action]
        return run_state, Decision(action, "; ".join(deciding), {"templates": {n: d.evidence for n, d in decisions.items()}})


def measurement_verdict(evidence: dict[str, Any]) -> str:
    """One measurement's verdict over all its metrics: Failed if any failed, Successful if all passed,
    else Inconclusive (also for a measurement that could not be taken and has no metrics)."""
    runs = evidence["templates"].values() if "templates" in evidence else [evidence]
    phases = {m["measurement"] for run in runs for m in run.get("metrics", {}).values()}
    return "Failed" if "Failed" in phases else "Successful" if phases == {"Successful"} else "Inconclusive"
