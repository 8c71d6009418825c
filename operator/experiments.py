"""The A/B test and shadow controller: :mod:`ondeck.experiment`'s machine driven on a ModelDeployment.

Each tick takes the state from ``status.experiment`` (a restarted operator resumes the same test with
the evidence it had), and, every ``interval``, reads the window since the last look from Prometheus:
the servers' feedback counters per variant for an A/B test, the router's shadow comparison counters
for a shadow (``sum without (pod, instance, job) (increase(...))``, as the canary's analysis reads
its series). It answers with the new state and what to do about it; the caller
(:mod:`ondeck.operator.controllers`) writes the state, re-renders the router (the weights and the
retired variants come from the state, :func:`ondeck.spec.traffic.desired_weights`) and posts the
events.

``ondeck promote`` / ``ondeck abort`` reach an experiment as they reach a canary (the
``ondeck.io/promote`` / ``ondeck.io/abort`` annotations, see :mod:`ondeck.operator.rolling`) when the
ModelDeployment has no canary rollout: promote gives the treatment all traffic now, abort leaves it
all to the control. Each annotation value acts once (``status.experiment.commands``), and the outcome
is in ``status.experiment.lastCommand`` and an event.

Safety as for the canary: no ``--prometheus-url``, Prometheus unreachable or an error answer is
:class:`ondeck.experiment.NoEvidence` (nothing concluded, the next look covers the gap); a window
without data adds nothing, and nothing is called before the minimum of samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ondeck import experiment as ex
from ondeck.operator.prometheus import Prometheus, PrometheusUnavailable
from ondeck.operator.rolling import commands_given, commands_taken
from ondeck.spec import model as m
from ondeck.spec.traffic import experiment_plan


@dataclass
class ExperimentTick:
    state: dict[str, Any] | None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (Normal|Warning, reason, message)
    rerender: bool = False  # weights or retired variants changed: render the router's config again


class ExperimentController:
    def __init__(self, prometheus: Prometheus | None):
        self.prometheus = prometheus

    def tick(self, md: m.ModelDeployment, namespace: str, state: dict[str, Any] | None, now: float,
             annotations: dict[str, str] | None = None) -> ExperimentTick:
        """``annotations``: the object's, when the promote/abort commands are the experiment's (no canary)."""
        plan = experiment_plan(md.spec)
        if plan is None:
            return ExperimentTick(state=None, rerender=bool(state and state.get("retired")))
        out = ExperimentTick(state=state)
        annotations = annotations or {}
        if not ex.same_experiment(plan, state):
            state = ex.new_state(plan, now)
            state["commands"] = commands_given(annotations)
            out.events.append(("Normal", "ExperimentStarted", state["message"]))
            # a new experiment undoes what an earlier one's outcome did to the weights and replicas
            out.rerender = True
        taken = commands_taken(annotations, state.get("commands"))
        if taken:
            # abort wins over promote given at once, as for the canary
            name = "abort" if "abort" in taken else "promote"
            state, actions, applied, message = ex.command(plan, state, name)
            state["commands"] = {**(state.get("commands") or {}), **taken}
            state["lastCommand"] = {"command": name, "id": taken[name], "applied": applied, "message": message}
            out.events.append(("Normal" if applied else "Warning", f"{name.capitalize()}Command", message))
            self._act(actions, out)
            out.state = state
            return out

        def measure(start: float, end: float) -> dict[str, Any]:
            if self.prometheus is None:
                raise ex.NoEvidence("the operator has no --prometheus-url")
            try:
                samples = self.prometheus.increase({"namespace": namespace, "model": md.model_name}, start, end,
                                                   metrics=ex.series(plan))
            except PrometheusUnavailable as exc:
                raise ex.NoEvidence(str(exc)) from None
            return ex.window(plan, samples, md.model_name)

        after, actions = ex.tick(plan, state, now, measure=measure)
        self._act(actions, out)
        out.state = after
        return out

    @staticmethod
    def _act(actions: list[dict[str, Any]], out: ExperimentTick) -> None:
        for action in actions:
            if action["type"] in ("setWeights", "promote", "reject"):
                out.rerender = True
            elif action["type"] == "event":
                out.events.append(("Warning" if action["warning"] else "Normal", action["reason"], action["message"]))
