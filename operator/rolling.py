"""The canary rollout controller: :mod:`ondeck.rollout`'s machine driven on a ModelDeployment.

Each tick takes the state from ``status.rollout`` (a restarted operator resumes at the same step),
the person's commands from annotations, and measures analysis steps on windows read from Prometheus
(:mod:`ondeck.operator.prometheus` -> :mod:`ondeck.windows` -> :mod:`ondeck.spec.analysis`, the same
path ``ondeck run`` takes with scrapes). It answers with the new state and what to do about it; the
caller (:mod:`ondeck.operator.controllers`) writes the state, re-renders the router's weights and
posts the events.

Commands are annotations, so that ``kubectl annotate`` works without the CLI:
``ondeck.io/promote`` and ``ondeck.io/abort``, any value that differs from the last one taken (the
CLI writes a timestamp). The controller records the value it took in ``status.rollout.commands``
and the outcome in ``status.rollout.lastCommand``, so each command acts exactly once, even across
restarts, and a command given before a rollout started does not act on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ondeck import rollout
from ondeck.decide import CanaryWindow, Decision
from ondeck.errors import UserError
from ondeck.operator.packages import PackageUnreadable, Packages
from ondeck.operator.prometheus import Prometheus, PrometheusUnavailable
from ondeck.spec import model as m
from ondeck.spec.analysis import CanaryAnalyses, measurement_verdict
from ondeck.spec.templates import TemplateMissing, step_templates
from ondeck.spec.traffic import background_analysis, rollout_steps, stable_variant, variant
from ondeck.windows import variant_stats

log = logging.getLogger("ondeck.operator")

PROMOTE = "ondeck.io/promote"
ABORT = "ondeck.io/abort"
COMMANDS = {"promote": PROMOTE, "abort": ABORT}


def commands_given(annotations: dict[str, str]) -> dict[str, str | None]:
    """The command annotations' values now: what a new rollout or experiment records as already seen,
    so that a command given before it started does not act on it."""
    return {c: annotations.get(a) for c, a in COMMANDS.items()}


def commands_taken(annotations: dict[str, str], seen: dict[str, Any] | None) -> dict[str, str]:
    """The commands whose annotation carries a value not taken before (``seen``: the state's ``commands``)."""
    return {c: annotations[a] for c, a in COMMANDS.items() if annotations.get(a) and annotations[a] != (seen or {}).get(c)}


# Events a person should see in `kubectl get events` as warnings.
WARNINGS = {"RolloutAborted", "AnalysisFailed", "AnalysisInconclusive"}
KEEP_RUNS = 5  # analysis runs shown in status.analysisRuns


@dataclass
class RolloutTick:
    state: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)
    rerender: bool = False  # weights or scale changed: render the router's config again
    verdicts: list[str] = field(default_factory=list)  # of the measurements taken (for the metrics)
    aborted: bool = False


class CanaryController:
    def __init__(self, prometheus: Prometheus | None, packages: Packages,
                 cluster_templates: dict[str, m.AnalysisTemplate] | None = None):
        self.prometheus = prometheus
        self.packages = packages
        self.cluster_templates = cluster_templates or {}

    def tick(self, md: m.ModelDeployment, namespace: str, state: dict[str, Any] | None,
             annotations: dict[str, str], now: float) -> RolloutTick:
        canary = md.spec.strategy.canary
        stable, candidate = stable_variant(md.spec), variant(md.spec, canary.canary_variant)
        out = RolloutTick(state=state or {})
        started = state is None or not _same_rollout(state, stable, candidate)
        if started:
            state = rollout.new_state(stable.name, candidate.name, now, stable_version=stable.version,
                                      canary_version=candidate.version)
            state["commands"] = commands_given(annotations)
            out.events.append(("Normal", "RolloutStarted",
                               f"rolling out {candidate.name} ({candidate.version}) against {stable.name} ({stable.version})"))
            out.rerender = True
        taken = commands_taken(annotations, state.get("commands"))
        steps = rollout_steps(canary)
        analyses, problem, missing = self._analyses(md, candidate)
        if started and missing:
            # Said at once, not only when the analysis step comes to measure (it pauses there with the reason).
            out.events.append(("Warning", "AnalysisTemplateMissing", problem))
        measure = self._measure(md, namespace, stable, candidate, analyses, problem, out)
        # An analysis that cannot even be set up (a missing template, an unreadable package) is
        # inconclusive at once: the rollout pauses with the reason instead of holding its traffic share.
        interval = analyses.interval if analyses else (lambda step: 0.0)
        after, actions = rollout.tick(steps, state, now, measure=measure, interval_for=interval,
                                      promote="promote" in taken, abort="abort" in taken,
                                      background=background_analysis(canary))
        after["commands"] = {**state.get("commands", {}), **taken}
        for command, value in taken.items():
            applied, message = rollout.answer(command, steps, state, after, aborting="abort" in taken)
            after["lastCommand"] = {"command": command, "id": value, "applied": applied, "message": message}
            out.events.append(("Normal" if applied else "Warning", f"{command.capitalize()}Command", message))
        for action in actions:
            if action["type"] in ("setWeights", "promote"):
                out.rerender = True
            elif action["type"] == "abort":
                out.rerender = out.aborted = True
            elif action["type"] == "event":
                out.events.append(("Warning" if action["reason"] in WARNINGS else "Normal", action["reason"],
                                   action["message"]))
        out.state = after
        return out

    # --- analysis ---------------------------------------------------------------------------------

    def _analyses(self, md: m.ModelDeployment, candidate: m.Variant) -> tuple[CanaryAnalyses | None, str | None, bool]:
        """The canary's analysis templates (the spec's own; the cluster-wide ones for clusterScope
        references, see :mod:`ondeck.spec.templates`), or why there are none, and whether that is a
        missing template. A missing one makes the analysis step inconclusive: the rollout pauses
        with the reason, it never passes unmeasured."""
        try:
            used = step_templates(md.spec, self.cluster_templates)
        except TemplateMissing as exc:
            return None, str(exc), True
        if not used:
            return None, None, False
        try:
            classifier = self.packages.get(candidate).classifier
            return CanaryAnalyses(used, model=md.model_name, classifier=classifier), None, False
        except (PackageUnreadable, UserError) as exc:
            return None, str(exc), False

    def _measure(self, md, namespace, stable, candidate, analyses, problem, out: RolloutTick):
        def measure(step: dict[str, Any], run_state: dict[str, Any] | None, start: float, end: float):
            run_state, decision = self._measurement(md, namespace, stable, candidate, analyses, problem,
                                                    step, run_state, start, end)
            out.verdicts.append(measurement_verdict(decision.evidence))
            return run_state, decision

        return measure

    def _measurement(self, md, namespace, stable, candidate, analyses, problem, step, run_state, start, end):
        """One measurement; anything that keeps it from being taken is inconclusive (a pause, never a pass)."""
        if analyses is None:
            return run_state, Decision("pause", f"cannot analyse: {problem or 'no analysis templates'}", {})
        if self.prometheus is None:
            return run_state, Decision("pause", "cannot analyse: the operator has no --prometheus-url", {})
        try:
            samples = self.prometheus.increase({"namespace": namespace, "model": md.model_name}, start, end)
            references = {v.name: self.packages.get(v).reference for v in (stable, candidate)}
        except (PrometheusUnavailable, PackageUnreadable) as exc:
            return run_state, Decision("pause", f"cannot measure: {exc}", {"error": str(exc)})
        window = CanaryWindow(start, end, *(
            variant_stats(samples, {"model": md.model_name, "variant": v.name}, references[v.name])
            for v in (stable, candidate)))
        return analyses.measure(step, run_state, window)


def _same_rollout(state: dict[str, Any], stable: m.Variant, candidate: m.Variant) -> bool:
    """The state is of this canary: same variants and versions (a new version starts a new rollout)."""
    return (state.get("stableVariant"), state.get("stableVersion"), state.get("canaryVariant"),
            state.get("canaryVersion")) == (stable.name, stable.version, candidate.name, candidate.version)


def analysis_runs(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The latest analysis runs, newest first, as ``status.analysisRuns`` shows them."""
    runs = list(reversed(state.get("analysisHistory", [])))
    if state.get("analysis"):
        runs.insert(0, state["analysis"])
    return [{"step": r["step"], "verdict": r.get("verdict") or "Running", "measurements": r["measurements"],
             "startedAt": r["startedAt"], "lastAt": r["lastAt"], "last": r.get("last")} for r in runs[:KEEP_RUNS]]
