"""The canary rollout as a pure state machine, shared by the operator and ``ondeck run``.

Argo Rollouts' vocabulary: ``steps`` of ``setWeight``, ``pause`` (with a ``duration``, or without one:
wait for a person's ``promote``) and ``analysis``. The machine keeps its whole state in a plain
JSON-serialisable dict, so the operator stores it in the ModelDeployment's status and the local
runtime in a file, and either resumes at the same step after a restart.

No I/O and no clock here: the caller passes ``now`` (seconds) and a ``measure`` callable that runs
one analysis measurement (the caller fetches metric windows and asks :mod:`ondeck.decide`); the
machine calls it only when a measurement is due. It answers with the new state and the actions the
caller must carry out (write router weights, promote, abort, record an event).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

# Phases, as shown in status and by `ondeck status`.
PROGRESSING, PAUSED, HEALTHY, DEGRADED = "Progressing", "Paused", "Healthy", "Degraded"
# Measurement verdicts (Argo Rollouts' AnalysisRun phases).
SUCCESSFUL, FAILED, INCONCLUSIVE = "Successful", "Failed", "Inconclusive"


# What ondeck.decide's CanaryAnalysis answers after each measurement -> the run's verdict.
_VERDICTS = {"continue": None, "promote": SUCCESSFUL, "rollback": FAILED, "pause": INCONCLUSIVE}

Measure = Callable[[dict[str, Any], "dict[str, Any] | None", float, float], "tuple[dict[str, Any], Any]"]
"""``measure(step, run_state, start, end)`` -> ``(run_state, decision)``: one measurement of the
canary against the stable variant over the window ``[start, end)``, folded into the analysis run
(``run_state`` is ``None`` for the first). ``decision`` is an :class:`ondeck.decide.Decision` of
:class:`ondeck.decide.CanaryAnalysis`, whose action (continue, promote, rollback, pause) is the run's
verdict: counting measurements against ``count`` and ``failureLimit`` happens there, not here."""


def new_state(stable: str, canary: str, now: float, *, stable_version: str = "", canary_version: str = "") -> dict[str, Any]:
    return {
        "phase": PROGRESSING,
        "stepIndex": 0,
        "stepStartedAt": now,
        "canaryWeight": 0,
        "stableVariant": stable,
        "canaryVariant": canary,
        "stableVersion": stable_version,
        "canaryVersion": canary_version,
        "analysis": None,
        "message": "rollout started",
    }


def weights(state: dict[str, Any]) -> dict[str, int]:
    """Router weights (percent) for the stable and canary variants."""
    w = int(state["canaryWeight"])
    return {state["stableVariant"]: 100 - w, state["canaryVariant"]: w}


def tick(
    steps: list[dict[str, Any]],
    state: dict[str, Any],
    now: float,
    *,
    measure: Measure | None = None,
    interval_for: Callable[[dict[str, Any]], float] = lambda step: 60.0,
    promote: bool = False,
    abort: bool = False,
    background: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Advance the rollout as far as it can go at ``now``; returns (new state, actions).

    Actions: ``{"type": "setWeights", "weights": {...}}``, ``{"type": "promote"}`` (the canary
    becomes the stable variant), ``{"type": "abort", "reason": ...}`` (weights back to stable,
    canary scaled down) and ``{"type": "event", "reason": ..., "message": ...}``.
    ``promote`` is a person's blessing (``ondeck promote``); ``abort`` is ``ondeck abort``.

    ``background``: ``{"analysis": {"templates": [...]}, "startingStep": n}``, Argo Rollouts'
    background analysis: measured every interval from step ``n`` on, whatever the step, until the
    rollout ends. A failed run rolls back at once; an inconclusive one pauses the rollout until
    ``ondeck promote`` (which starts a new run); a successful one (its ``count`` of measurements all
    passed) is followed by a new run, so the canary stays watched to the end.
    """
    state = copy.deepcopy(state)
    actions: list[dict[str, Any]] = []
    if state["phase"] in (HEALTHY, DEGRADED):
        return state, actions  # finished: a new canary starts a new rollout
    if abort:
        return _abort(state, "aborted by a person (ondeck abort)", actions)
    if background is not None and state["stepIndex"] >= int(background.get("startingStep", 0)):
        verdict = _run_background(state, background, now, measure, interval_for(background), actions)
        if verdict == FAILED:
            return _abort(state, f"background analysis: {state['background']['last']['reason']}", actions)
        if verdict == INCONCLUSIVE:
            if not promote:
                reason = state["background"]["last"]["reason"]
                return _wait(state, PAUSED, f"background analysis inconclusive, paused: {reason}"), actions
            promote = False  # the blessing is for the background run: a new one starts
            actions.append(_event("Promoted", "background analysis: inconclusive run passed by a person"))
            _restart_background(state, now)
        elif verdict == SUCCESSFUL:
            _restart_background(state, now)
    state, actions = _steps(steps, state, now, measure, interval_for, promote, actions)
    if (background is not None and state["phase"] in (PROGRESSING, PAUSED) and state.get("background") is None
            and state["stepIndex"] >= int(background.get("startingStep", 0))):
        _run_background(state, background, now, measure, interval_for(background), actions)  # opens its first window
    return state, actions


def _steps(steps, state, now, measure, interval_for, promote: bool, actions) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The steps as far as they go at ``now``."""
    # Each loop iteration finishes one step or stops to wait; bounded by the number of steps.
    for _ in range(len(steps) + 1):
        index = state["stepIndex"]
        if index >= len(steps):
            return _promote(state, actions)
        step = steps[index]
        if "setWeight" in step:
            if int(step["setWeight"]) != state["canaryWeight"]:
                state["canaryWeight"] = int(step["setWeight"])
                actions.append({"type": "setWeights", "weights": weights(state)})
                actions.append(_event("WeightSet", f"canary weight set to {state['canaryWeight']}% (step {index})"))
            _next_step(state, now, "weight set")
        elif "pause" in step:
            duration = (step.get("pause") or {}).get("duration")
            if duration is None:
                if not promote:
                    return _wait(state, PAUSED, f"step {index}: paused until promoted (ondeck promote)"), actions
                promote = False  # one blessing moves one gate
                actions.append(_event("Promoted", f"step {index}: blessed by a person"))
            elif now - state["stepStartedAt"] < float(duration) and not promote:
                left = float(duration) - (now - state["stepStartedAt"])
                return _wait(state, PROGRESSING, f"step {index}: pausing, {left:.0f}s left"), actions
            _next_step(state, now, "pause over")
        elif "analysis" in step:
            verdict = _run_analysis(state, step, now, measure, interval_for(step), actions)
            if verdict is None:
                return state, actions  # waiting for the next measurement
            reason = state["analysis"]["last"]["reason"]
            if verdict == FAILED:
                return _abort(state, f"analysis: {reason}", actions)
            if verdict == INCONCLUSIVE and not promote:
                # Argo Rollouts pauses on an inconclusive run: never promote on missing evidence.
                return _wait(state, PAUSED, f"step {index}: analysis inconclusive, paused: {reason}"), actions
            promote = False
            _next_step(state, now, "analysis passed")
        else:
            raise ValueError(f"step {index} has none of setWeight, pause, analysis: {step}")
    raise AssertionError("unreachable: every step either finishes or waits")


def background_measures(state: dict[str, Any], configured: bool) -> bool:
    """Whether a background analysis is measuring (so a paused rollout still has work that moves
    with time): configured, and its run has no verdict (an inconclusive one waits for a person)."""
    return configured and not (state.get("background") or {}).get("verdict")


def answer(command: str, steps: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any],
           *, aborting: bool) -> tuple[bool, str]:
    """What a person's ``promote`` or ``abort`` did, given the state before and after the tick that
    took it: ``(applied, message)``. ``aborting``: an abort was taken in the same tick."""
    if before["phase"] not in (PROGRESSING, PAUSED):
        return False, f"the rollout already finished ({before['phase']}): nothing to {command}"
    if command == "abort":
        return True, after["message"]
    if aborting:
        return False, "an abort came with it"
    index = before["stepIndex"]
    if before["phase"] == PAUSED or (index < len(steps) and "pause" in steps[index]):
        return True, f"step {index} -> {after['stepIndex']} ({after['phase']}): {after['message']}"
    return False, f"nothing waits for a promote: step {index} is running ({after['message']})"


def _run_analysis(state, step, now, measure, interval: float, actions) -> str | None:
    """Take a measurement when one is due; return the run's verdict once it has one."""
    run = state["analysis"]
    if run is None:  # the first window opens when the step starts
        run = state["analysis"] = {"step": state["stepIndex"], **_new_run(now)}
    if run["verdict"]:  # concluded (an inconclusive run waits here for a person)
        return run["verdict"]
    if now - run["lastAt"] < interval:
        state["phase"] = PROGRESSING
        return None
    decision = _measure_run(run, step, now, measure)
    state["message"] = f"analysis: {decision.reason}"
    actions.append(_event(f"Analysis{run['verdict'] or 'Measured'}", state["message"]))
    if run["verdict"] is None:
        state["phase"] = PROGRESSING
    return run["verdict"]


def _run_background(state, background, now, measure, interval: float, actions) -> str | None:
    """The background run's measurement when one is due; its verdict once it has one."""
    run = state.get("background")
    if run is None:  # the first window opens when the starting step is reached
        run = state["background"] = {**_new_run(now), "runs": 0}
    if run["verdict"] or now - run["lastAt"] < interval:
        return run["verdict"]
    decision = _measure_run(run, background, now, measure)
    actions.append(_event(f"BackgroundAnalysis{run['verdict'] or 'Measured'}", f"background analysis: {decision.reason}"))
    return run["verdict"]


def _restart_background(state, now) -> None:
    """A new background run from now on (the last one is kept as ``previous``)."""
    old = state["background"]
    state["background"] = {**_new_run(now), "runs": old.get("runs", 0) + 1,
                           "previous": {k: old[k] for k in ("startedAt", "measurements", "last", "verdict")}}


def _new_run(now) -> dict[str, Any]:
    """An analysis run (a step's or the background's) whose first window opens ``now``."""
    return {"startedAt": now, "lastAt": now, "run": None, "measurements": 0, "last": None, "verdict": None}


def _measure_run(run, step, now, measure):
    """Measure the window since the run's last measurement; the run records it and its verdict."""
    if measure is None:
        raise ValueError("analysis needs a measure function")
    run["run"], decision = measure(step, run["run"], run["lastAt"], now)
    run["lastAt"] = now
    run["measurements"] += 1
    run["last"] = {"action": decision.action, "reason": decision.reason, "evidence": decision.evidence}
    run["verdict"] = _VERDICTS[decision.action]
    return decision


def _next_step(state, now, why: str) -> None:
    if state["analysis"] is not None:
        state.setdefault("analysisHistory", []).append(state["analysis"])
        state["analysisHistory"] = state["analysisHistory"][-10:]
    state["analysis"] = None
    state["stepIndex"] += 1
    state["stepStartedAt"] = now
    state["phase"] = PROGRESSING
    state["message"] = f"step {state['stepIndex'] - 1}: {why}"


def _wait(state, phase: str, message: str) -> dict[str, Any]:
    state["phase"] = phase
    state["message"] = message
    return state


def _promote(state, actions):
    if state["canaryWeight"] != 100:
        state["canaryWeight"] = 100
        actions.append({"type": "setWeights", "weights": weights(state)})
    actions.append({"type": "promote"})
    actions.append(_event("RolloutCompleted", f"{state['canaryVariant']} ({state['canaryVersion']}) promoted to stable"))
    state["phase"] = HEALTHY
    state["message"] = "canary promoted to stable"
    return state, actions


def _abort(state, reason: str, actions):
    state["canaryWeight"] = 0
    state["phase"] = DEGRADED
    state["message"] = f"rolled back: {reason}"
    actions.append({"type": "setWeights", "weights": weights(state)})
    actions.append({"type": "abort", "reason": reason})
    actions.append(_event("RolloutAborted", state["message"]))
    return state, actions


def _event(reason: str, message: str) -> dict[str, Any]:
    return {"type": "event", "reason": reason, "message": message}
