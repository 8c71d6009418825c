"""When the controllers look at a ModelDeployment: when it changed, or when work of its is due.

A timer per object (kopf's ``@timer``) ticks every ModelDeployment every ``--tick-seconds``; with
hundreds of them the ticks crowd out the reconciler (500 objects at 5 s: 100 ticks a second, mostly
for objects that wait for a person or for a drift look minutes away). One loop asks
:meth:`TickSchedule.due` of each object instead, and ticks

- an object not ticked since the operator started (it resumes from its status);
- an object whose spec or annotations changed since its last tick (a new version, ``ondeck promote``,
  ``ondeck abort``);
- a canary, an A/B test or a shadow that is progressing (a timed pause, an analysis or look
  interval): at every round, as the kopf timer did;
- monitoring (drift, feedback, staleness, retrain): when its next look or webhook attempt is due, read
  from ``status.monitoring`` (:mod:`ondeck.monitor`'s state: ``lastLook``, ``pendingRetrain``); while
  it cannot look (Prometheus down, package unreadable) every ``RETRY_SECONDS``.

A rollout that waits for a person (``Paused``) or has finished, with nothing to monitor, is left alone
until it changes. Decisions are the controllers'; this only spares them ticks that cannot change anything.
"""
from __future__ import annotations

import threading
from typing import Any

from ondeck import experiment, rollout
from ondeck.monitor import MonitorSpec
from ondeck.spec import model as m

Key = tuple[str, str]
RETRY_SECONDS = 30.0  # between ticks of an object whose monitoring cannot look


class TickSchedule:
    def __init__(self) -> None:
        self._last: dict[Key, tuple[tuple[Any, ...], float]] = {}  # fingerprint and time of the last tick
        self._lock = threading.Lock()

    def due(self, body: dict[str, Any], md: m.ModelDeployment, now: float) -> bool:
        with self._lock:
            last = self._last.get(_key(body))
        if last is None or last[0] != _fingerprint(body):
            return True
        return next_due(md, body.get("status") or {}, last[1]) <= now

    def ticked(self, body: dict[str, Any], now: float) -> None:
        with self._lock:
            self._last[_key(body)] = (_fingerprint(body), now)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._last.pop((namespace, name), None)


def next_due(md: m.ModelDeployment, status: dict[str, Any], last_tick: float) -> float:
    """The earliest time the controllers have work for this object that moves with time alone
    (``inf``: none until it changes)."""
    strategy = md.spec.strategy
    if strategy is not None and (strategy.ab_test is not None or strategy.shadow is not None):
        if (status.get("experiment") or {}).get("phase") != experiment.HEALTHY:  # concluded: nothing moves
            return last_tick
    if strategy is not None and strategy.canary is not None:
        state = status.get("rollout") or {}
        phase = state.get("phase")
        # Paused waits for a person's promote or abort: an annotation, which changes the fingerprint.
        if phase not in (rollout.PAUSED, rollout.HEALTHY, rollout.DEGRADED):
            return last_tick
        if phase == rollout.PAUSED and rollout.background_measures(state, strategy.canary.analysis is not None):
            return last_tick  # background analysis keeps measuring through a pause
    return _monitoring_due(md, status.get("monitoring"), last_tick)


def _monitoring_due(md: m.ModelDeployment, state: dict[str, Any] | None, last_tick: float) -> float:
    if state is None:
        return float("inf")  # nothing to monitor (the controller wrote no state)
    if state.get("error") or state.get("lastLook") is None:
        return last_tick + RETRY_SECONDS
    interval = MonitorSpec.from_spec(md.spec, model=md.model_name, version="").look_interval
    due = float(state["lastLook"]) + interval
    pending = state.get("pendingRetrain")
    if pending:
        due = min(due, float(pending["nextAttemptAt"]))
    return due


def _fingerprint(body: dict[str, Any]) -> tuple[Any, ...]:
    meta = body["metadata"]
    return meta.get("generation"), tuple(sorted((meta.get("annotations") or {}).items()))


def _key(body: dict[str, Any]) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]
