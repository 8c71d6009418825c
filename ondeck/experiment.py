"""A/B tests and shadows as a pure state machine, shared by the operator and ``ondeck run``.

Like :mod:`ondeck.rollout` for the canary: the whole state is a plain JSON-serialisable dict (the
operator keeps it in ``status.experiment``, ``ondeck run`` in its state file), no I/O and no clock
here. The caller passes ``now`` and a ``measure(start, end)`` callable that returns the counters of
the window ``[start, end)``; the machine calls it every ``interval`` and answers with the new state and
the actions to carry out (write router weights, promote, reject, record an event).

Two experiments, both between a *control* (the first variant: the one serving today) and a
*treatment* (the other variant, or the shadow):

- ``abTest``: each arm's success proportion from feedback (``accuracy``: correct of joined labels;
  ``conversion``: positive outcomes of joined 0/1 outcomes), window by window into
  :class:`ondeck.decide.ABTest`'s anytime-valid sequential test. A winner with ``promoteWinner`` takes
  all the traffic (the loser is retired); without it the winner is only recorded. "No difference
  beyond ``equivalence``" ends the test too, traffic unchanged.
- ``shadow``: the router's paired comparison (compared, agreed, errors and timeouts of mirrored
  requests). Errors and timeouts of the shadow count as samples that disagree. Once there are
  ``minSamples`` samples: agreement >= ``minAgreement`` promotes the shadow (it takes all the traffic,
  mirroring stops, the old primary is retired), else the shadow is rejected (mirroring stops, it is
  retired, the status says why).

Missing evidence never promotes: a window that cannot be measured (:class:`NoEvidence`: Prometheus
unreachable, a scrape failed) concludes nothing and the next look covers the gap; a window without
data adds nothing, and both tests need their minimum of samples before they call anything.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from ondeck.decide import ABPolicy, ABTest

# Phases, the values of status.phase (as the canary's): running, or concluded.
PROGRESSING, HEALTHY = "Progressing", "Healthy"
AB_TEST, SHADOW = "abTest", "shadow"
# How a concluded experiment ended.
PROMOTED, WINNER, EQUIVALENT, REJECTED = "promoted", "winner", "equivalent", "rejected"
# Router outcomes of a mirrored request (ondeck_shadow_requests_total{outcome}); "dropped" is the
# router's full queue, not the shadow's fault, so it is reported but is not a sample.
SHADOW_OUTCOMES = ("compared", "error", "timeout", "dropped")


# The counters each experiment reads (docs/metrics.md): the servers' feedback, the router's comparison.
SUCCESS_SERIES = {"accuracy": "ondeck_feedback_correct_total", "conversion": "ondeck_feedback_positive_total"}
AB_SERIES = ("ondeck_feedback_total", *SUCCESS_SERIES.values())
SHADOW_SERIES = ("ondeck_shadow_requests_total", "ondeck_shadow_agreement_total")


class NoEvidence(Exception):
    """The window could not be measured (Prometheus unreachable, an error answer, no scrape)."""


Measure = Callable[[float, float], dict[str, Any]]
"""``measure(start, end)`` -> the window's counters, or :class:`NoEvidence`.

abTest: ``{"arms": {variant: [trials, successes]}}`` for the control and the treatment.
shadow: ``{"compared": n, "agreed": n, "error": n, "timeout": n, "dropped": n}``."""


def new_state(plan: dict[str, Any], now: float) -> dict[str, Any]:
    """``plan`` is :func:`ondeck.spec.traffic.experiment_plan`'s: kind, control, treatment, their
    versions, interval, and the kind's own settings."""
    state: dict[str, Any] = {
        "kind": plan["kind"], "phase": PROGRESSING, "outcome": None,
        "control": plan["control"], "controlVersion": plan["controlVersion"],
        "treatment": plan["treatment"], "treatmentVersion": plan["treatmentVersion"],
        "startedAt": now, "lastAt": now, "triedAt": None, "looks": 0, "problem": None,
        "winner": None, "weights": None, "retired": [], "decision": None,
        "message": f"{_what(plan)} started",
    }
    if plan["kind"] == AB_TEST:
        state["metric"] = plan["metric"]
        state["test"] = _test(plan).initial_state()
    else:
        state["totals"] = {k: 0.0 for k in ("compared", "agreed", *SHADOW_OUTCOMES[1:])}
    return state


def same_experiment(plan: dict[str, Any], state: dict[str, Any] | None) -> bool:
    """``state`` is of this experiment: same kind, variants and versions (a new version starts a new one)."""
    keys = ("kind", "control", "controlVersion", "treatment", "treatmentVersion")
    return bool(state) and all(state.get(k) == plan[k] for k in keys)


def weights(state: dict[str, Any] | None) -> dict[str, int] | None:
    """The router weights a concluded experiment set (a promotion, or an A/B test aborted by hand), else
    None: the spec's hold."""
    if state and state.get("outcome") in (PROMOTED, REJECTED) and state.get("weights"):
        return dict(state["weights"])
    return None


def retired(state: dict[str, Any] | None) -> set[str]:
    """Variants the experiment's outcome left without traffic (to be scaled down)."""
    return set(state.get("retired") or ()) if state else set()


def serving(state: dict[str, Any] | None, default: str) -> str:
    """The variant live traffic goes to after a promotion (else ``default``)."""
    return state["winner"] if state and state.get("outcome") == PROMOTED else default


def tick(plan: dict[str, Any], state: dict[str, Any], now: float, *,
         measure: Measure) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Look at the evidence when a look is due; returns (new state, actions).

    Actions: ``{"type": "setWeights", "weights": {...}}``, ``{"type": "promote", "variant": v,
    "retired": [...]}``, ``{"type": "reject", "variant": v, "reason": ...}`` and
    ``{"type": "event", "reason": ..., "message": ..., "warning": bool}``.
    """
    state = copy.deepcopy(state)
    actions: list[dict[str, Any]] = []
    if state["phase"] != PROGRESSING:
        return state, actions  # concluded: a new version starts a new experiment
    since = max(state["lastAt"], state.get("triedAt") or state["lastAt"])
    if now - since < float(plan["interval"]):
        return state, actions
    try:
        window = measure(state["lastAt"], now)
    except NoEvidence as exc:
        # Nothing concluded, and the window stays open: the next look covers the gap.
        state["triedAt"] = now
        if state.get("problem") != str(exc):
            actions.append(_event("ExperimentInconclusive", f"cannot measure, nothing concluded: {exc}", warning=True))
        state["problem"] = str(exc)
        state["message"] = f"cannot measure, nothing concluded: {exc}"
        return state, actions
    state.update(lastAt=now, triedAt=None, problem=None, looks=state["looks"] + 1)
    if plan["kind"] == AB_TEST:
        _ab_look(plan, state, window, now, actions)
    else:
        _shadow_look(plan, state, window, actions)
    return state, actions


def command(plan: dict[str, Any], state: dict[str, Any], name: str) -> tuple[dict[str, Any], list[dict[str, Any]], bool, str]:
    """``ondeck promote`` / ``ondeck abort`` (or their annotations) on a running experiment, without waiting
    for the evidence: returns (new state, actions as :func:`tick`'s, whether it applied, what it did).

    promote: the treatment (the A/B test's other variant, or the shadow) takes all traffic and the
    control is retired. abort: the control keeps (or takes back) all traffic and the treatment is
    retired; a shadow stops being mirrored. An experiment that is over takes no command.
    """
    state = copy.deepcopy(state)
    actions: list[dict[str, Any]] = []
    if state["phase"] != PROGRESSING:
        return state, actions, False, f"the {_what(plan)} is already over ({state['outcome']}): nothing to {name}"
    control, treatment = plan["control"], plan["treatment"]
    shadow = plan["kind"] == SHADOW
    decision = {"action": "promote" if name == "promote" else "reject", "reason": f"ondeck {name}", "evidence": {}}
    if name == "promote":
        message = (f"{'shadow ' if shadow else ''}{_named(plan, treatment)} promoted by hand, it takes all traffic"
                   + (", mirroring stopped" if shadow else ""))
        state.update(phase=HEALTHY, outcome=PROMOTED, winner=treatment, weights={control: 0, treatment: 100},
                     retired=[control], decision=decision, message=message)
        actions.append({"type": "setWeights", "weights": dict(state["weights"])})
        actions.append({"type": "promote", "variant": treatment, "retired": [control]})
        actions.append(_event("ShadowPromoted" if shadow else "ABTestPromoted", message))
    else:
        message = (f"shadow {_named(plan, treatment)} rejected by hand, mirroring stopped" if shadow else
                   f"A/B test aborted by hand: {_named(plan, control)} takes all traffic, {_named(plan, treatment)} retired")
        state.update(phase=HEALTHY, outcome=REJECTED, winner=control, retired=[treatment], decision=decision,
                     message=message, weights=None if shadow else {control: 100, treatment: 0})
        if not shadow:
            actions.append({"type": "setWeights", "weights": dict(state["weights"])})
        actions.append({"type": "reject", "variant": treatment, "reason": message})
        actions.append(_event("ShadowRejected" if shadow else "ABTestAborted", message, warning=True))
    return state, actions, True, message


def _ab_look(plan, state, window, now, actions) -> None:
    arms = {}
    for arm in (plan["control"], plan["treatment"]):
        trials, successes = (window.get("arms") or {}).get(arm, (0.0, 0.0))
        trials = max(0.0, float(trials))
        # Counter increases are extrapolated per series: never more successes than trials.
        arms[arm] = (trials, min(max(0.0, float(successes)), trials))
    test = _test(plan)
    state["test"], decision = test.step(state["test"], {"start": state["lastAt"], "end": now, "arms": arms})
    state["decision"] = decision.to_dict()
    state["message"] = f"{plan['metric']}: {decision.reason}"
    if decision.action == "continue":
        return
    if decision.action == "equivalent":
        state.update(phase=HEALTHY, outcome=EQUIVALENT,
                     message=f"A/B test over: {decision.reason}; traffic stays as the spec splits it")
        actions.append(_event("ABTestEquivalent", state["message"]))
        return
    winner = decision.evidence["winner"]
    loser = plan["control"] if winner == plan["treatment"] else plan["treatment"]
    state["winner"] = winner
    if plan["promoteWinner"]:
        state.update(phase=HEALTHY, outcome=PROMOTED, weights={loser: 0, winner: 100}, retired=[loser],
                     message=f"{_named(plan, winner)} promoted, it takes all traffic: {decision.reason}")
        actions.append({"type": "setWeights", "weights": dict(state["weights"])})
        actions.append({"type": "promote", "variant": winner, "retired": [loser]})
        actions.append(_event("ABTestPromoted", state["message"]))
    else:
        state.update(phase=HEALTHY, outcome=WINNER,
                     message=f"{_named(plan, winner)} wins (promoteWinner is off: traffic stays split): {decision.reason}")
        actions.append(_event("ABTestDecided", state["message"]))


def _shadow_look(plan, state, window, actions) -> None:
    totals = state["totals"]
    for key in totals:
        totals[key] += max(0.0, float(window.get(key) or 0.0))
    samples = totals["compared"] + totals["error"] + totals["timeout"]
    agreement = min(totals["agreed"], totals["compared"]) / samples if samples else None
    evidence = {"samples": round(samples, 1), "compared": round(totals["compared"], 1),
                "agreed": round(totals["agreed"], 1), "errors": round(totals["error"], 1),
                "timeouts": round(totals["timeout"], 1), "dropped": round(totals["dropped"], 1),
                "agreement": None if agreement is None else round(agreement, 4),
                "minAgreement": plan["minAgreement"], "minSamples": plan["minSamples"]}
    shown = "no samples yet" if agreement is None else (
        f"agreement {agreement:.3f} over {samples:.0f} samples ({totals['error'] + totals['timeout']:.0f} errors "
        f"or timeouts; needs {plan['minAgreement']:g} over {plan['minSamples']})")
    if samples < plan["minSamples"]:
        state["decision"] = {"action": "continue", "reason": f"too few samples yet: {shown}", "evidence": evidence}
        state["message"] = f"shadow: too few samples yet: {shown}"
        return
    shadow, primary = plan["treatment"], plan["control"]
    if agreement >= plan["minAgreement"]:
        state.update(phase=HEALTHY, outcome=PROMOTED, winner=shadow, weights={primary: 0, shadow: 100}, retired=[primary],
                     message=f"shadow {_named(plan, shadow)} promoted to primary, mirroring stopped: {shown}")
        state["decision"] = {"action": "promote", "reason": shown, "evidence": evidence}
        actions.append({"type": "setWeights", "weights": dict(state["weights"])})
        actions.append({"type": "promote", "variant": shadow, "retired": [primary]})
        actions.append(_event("ShadowPromoted", state["message"]))
    else:
        state.update(phase=HEALTHY, outcome=REJECTED, winner=primary, retired=[shadow],
                     message=f"shadow {_named(plan, shadow)} rejected, mirroring stopped: {shown}")
        state["decision"] = {"action": "reject", "reason": shown, "evidence": evidence}
        actions.append({"type": "reject", "variant": shadow, "reason": shown})
        actions.append(_event("ShadowRejected", state["message"], warning=True))


def _test(plan: dict[str, Any]) -> ABTest:
    return ABTest(ABPolicy(control=plan["control"], treatment=plan["treatment"], **plan.get("policy", {})))


def _what(plan: dict[str, Any]) -> str:
    if plan["kind"] == AB_TEST:
        return (f"A/B test on {plan['metric']}: {_named(plan, plan['treatment'])} against "
                f"{_named(plan, plan['control'])}")
    return f"shadow {_named(plan, plan['treatment'])} compared with {_named(plan, plan['control'])}"


def _named(plan: dict[str, Any], variant: str) -> str:
    version = plan["controlVersion"] if variant == plan["control"] else plan["treatmentVersion"]
    return f"{variant} ({version})"


def _event(reason: str, message: str, *, warning: bool = False) -> dict[str, Any]:
    return {"type": "event", "reason": reason, "message": message, "warning": warning}


# --- counters -> windows (both runtimes: Prometheus increases or scrape differences) ---------------


def series(plan: dict[str, Any]) -> tuple[str, ...]:
    """The counters ``plan``'s measurement reads."""
    if plan["kind"] == AB_TEST:
        return ("ondeck_feedback_total", SUCCESS_SERIES[plan["metric"]])
    return SHADOW_SERIES


def window(plan: dict[str, Any], samples: dict, model: str) -> dict[str, Any]:
    """The measurement of ``plan`` from counter increases (:data:`ondeck.windows.Samples`): summed
    over replicas, pods and (for the shadow) over whichever primary answered."""
    def total(name: str, **match: str) -> float:
        want = {"model": model, **match}
        return sum(v for (n, labels), v in samples.items()
                   if n == name and all(dict(labels).get(k) == x for k, x in want.items()))

    if plan["kind"] == AB_TEST:
        success = SUCCESS_SERIES[plan["metric"]]
        return {"arms": {arm: [total("ondeck_feedback_total", variant=arm), total(success, variant=arm)]
                         for arm in (plan["control"], plan["treatment"])}}
    shadow = plan["treatment"]
    out = {o: total("ondeck_shadow_requests_total", shadow=shadow, outcome=o) for o in SHADOW_OUTCOMES}
    out["agreed"] = total("ondeck_shadow_agreement_total", shadow=shadow)
    return out
