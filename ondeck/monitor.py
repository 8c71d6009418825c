"""The drift and quality controller core, shared by the operator and ``ondeck run``.

Every monitoring interval a runtime hands over what its model's serving variant saw since the last
look (a :class:`~ondeck.decide.DriftWindow` of bin counts and an
:class:`~ondeck.decide.AccuracyPoint` from feedback) and gets back the new state, the decisions made
and the actions to carry out::

    mon = Monitor(MonitorSpec.from_spec(md.spec, model="churn", version="v1"), reference)
    state, decisions, actions = mon.tick(state, now, drift_window, accuracy_point)

Actions: ``{"type": "driftDetected", "features": [...], "reason", "evidence"}`` and
``{"type": "driftCleared"}`` when the drift condition changes, and ``{"type": "retrain", "id",
"payload"}`` exactly once per *episode*: an episode starts when drift, staleness or age says
"retrain" and ends only once none of them does, so a model that keeps drifting asks once, not every
interval. Delivering the webhook is I/O and belongs to the runtime, but the "retry until delivered"
bookkeeping lives here in the state (``pendingRetrain``), so that neither runtime can send an
episode twice or forget one across a restart: the runtime asks :func:`due_retrain` each tick and
reports back with :func:`delivered` or :func:`delivery_failed`.

Pure like :mod:`ondeck.decide`: no I/O, no clock (``now`` is seconds, any epoch), state is JSON-ready.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ondeck.decide import (AccuracyPoint, Decision, DriftDetector, DriftPolicy, DriftWindow, StalenessPolicy,
                           assess_staleness)

# A failed webhook delivery is tried again after 2, 4, 8 ... seconds, at most this far apart.
MAX_BACKOFF = 300.0
ACCURACY_INTERVAL = 60.0  # seconds between live-accuracy looks when drift monitoring is off


@dataclass(frozen=True)
class MonitorSpec:
    """What to watch for one served model version.

    ``drift`` is None when drift monitoring is off; ``staleness`` (its ``bar`` is the manifest's
    ``accuracyBar``) is None without a bar. ``max_age`` is the manifest's ``staleness.horizon``: a
    model older than that (since ``created``) is stale whatever its accuracy. ``retrain``: a retrain
    webhook is configured (without one, episodes are still tracked, nothing is sent).
    """

    model: str
    version: str
    drift: DriftPolicy | None = None
    feedback: bool = False
    staleness: StalenessPolicy | None = None
    max_age: float | None = None
    created: float | None = None
    retrain: bool = False
    max_points: int = 200  # live-accuracy points kept for the staleness trend

    @property
    def look_interval(self) -> float:
        """Seconds between looks: the drift interval, else the live-accuracy one."""
        return self.drift.interval if self.drift else ACCURACY_INTERVAL

    @classmethod
    def from_spec(cls, spec: Any, *, model: str, version: str, created: float | None = None) -> "MonitorSpec":
        """From a ``ModelDeploymentSpec`` (:mod:`ondeck.spec`); ``created`` is the package's build time."""
        from ondeck.spec.model import seconds

        mon = spec.monitoring
        drift = DriftPolicy(interval=seconds(mon.drift.interval), min_effect=mon.drift.min_effect) if mon.drift.enabled else None
        stale = mon.staleness
        return cls(
            model=model, version=version, drift=drift, feedback=mon.feedback.enabled,
            staleness=StalenessPolicy(bar=stale.accuracy_bar) if stale and stale.accuracy_bar and mon.feedback.enabled else None,
            max_age=seconds(stale.horizon) if stale and stale.horizon else None,
            created=created, retrain=spec.retrain is not None,
        )


class Monitor:
    """The controller core for one :class:`MonitorSpec` and its package's reference profile."""

    def __init__(self, spec: MonitorSpec, reference: dict[str, Any]):
        self.spec = spec
        self.detector = DriftDetector(reference, spec.drift) if spec.drift else None

    def initial_state(self) -> dict[str, Any]:
        return {
            "model": self.spec.model,
            "version": self.spec.version,
            "lastLook": None,
            "drift": self.detector.initial_state() if self.detector else None,
            "columns": {},  # feature label -> {"statistic", "effect", "drift", "rows"} of the last look
            "drifting": [],
            "accuracy": [],  # AccuracyPoint dicts, oldest first
            "liveAccuracy": None,
            "staleness": None,
            "episode": {"active": False, "count": 0, "since": None, "reasons": []},
            "pendingRetrain": None,
            "delivered": [],
        }

    def tick(self, state: dict[str, Any] | None, now: float, drift_window: DriftWindow | dict[str, Any] | None = None,
             accuracy: AccuracyPoint | dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Decision], list[dict[str, Any]]]:
        """Fold one look in; returns (new state, decisions made, actions).

        A state of another version (the model was promoted) starts over: drift and accuracy of
        the old version say nothing about the new one.
        """
        if state is None or state.get("version") != self.spec.version or state.get("model") != self.spec.model:
            state = self.initial_state()
        else:
            state = copy.deepcopy(state)
        state["lastLook"] = now
        decisions: list[Decision] = []
        actions: list[dict[str, Any]] = []

        if self.detector is not None and drift_window is not None:
            state["drift"], decision = self.detector.step(state["drift"], drift_window)
            decisions.append(decision)
            state["columns"] = _columns(decision.evidence)
            drifting = sorted(k for k, c in state["columns"].items() if c["drift"])
            if drifting and not state["drifting"]:
                actions.append({"type": "driftDetected", "features": drifting, "reason": decision.reason,
                                "evidence": _drift_evidence(state["columns"], drifting, decision.evidence)})
            elif state["drifting"] and not drifting:
                actions.append({"type": "driftCleared", "reason": decision.reason})
            state["drifting"] = drifting

        if self.spec.feedback and accuracy is not None:
            point = accuracy if isinstance(accuracy, AccuracyPoint) else AccuracyPoint.from_dict(accuracy)
            if point.total > 0:
                state["accuracy"] = (state["accuracy"] + [point.to_dict()])[-self.spec.max_points:]
                state["liveAccuracy"] = point.correct / point.total

        if self.spec.staleness is not None:
            decision = assess_staleness(state["accuracy"], self.spec.staleness, drift=bool(state["drifting"]), now=now)
            decisions.append(decision)
            days = decision.evidence.get("days_to_bar")
            state["staleness"] = {"action": decision.action, "reason": decision.reason,
                                  "secondsToBar": None if days is None else days * 86400.0,
                                  "level": decision.evidence.get("level")}

        reasons = self._retrain_reasons(state, now)
        actions += self._episode(state, now, reasons)
        return state, decisions, actions

    def _retrain_reasons(self, state: dict[str, Any], now: float) -> list[str]:
        reasons = []
        if state["drifting"]:
            reasons.append(f"drift in {', '.join(state['drifting'])}")
        stale = state["staleness"]
        if stale and stale["action"] == "retrain" and not stale["reason"].startswith("drift detected"):
            reasons.append(stale["reason"])  # (drift alone is already the first reason)
        spec = self.spec
        if spec.max_age is not None and spec.created is not None and now - spec.created >= spec.max_age:
            reasons.append(f"model is {(now - spec.created) / 86400:.1f} days old (horizon {spec.max_age / 86400:g} days)")
        return reasons

    def _episode(self, state: dict[str, Any], now: float, reasons: list[str]) -> list[dict[str, Any]]:
        episode = state["episode"]
        if reasons and not episode["active"]:
            episode.update(active=True, count=episode["count"] + 1, since=now, reasons=reasons)
            if not self.spec.retrain:
                return []
            retrain_id = f"{self.spec.model}-{self.spec.version}-{episode['count']}"
            payload = {"id": retrain_id, "model": self.spec.model, "version": self.spec.version, "time": now,
                       "reason": "; ".join(reasons), "evidence": self._evidence(state)}
            # A newer episode supersedes an undelivered older one: its evidence is the current one.
            state["pendingRetrain"] = {"id": retrain_id, "payload": payload, "attempts": 0, "nextAttemptAt": now,
                                       "lastError": None}
            return [{"type": "retrain", "id": retrain_id, "payload": payload}]
        if not reasons and episode["active"]:
            episode.update(active=False, since=None, reasons=[])
        return []

    def _evidence(self, state: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if state["drifting"]:
            out["drift"] = {k: state["columns"][k] for k in state["drifting"]}
        if state["liveAccuracy"] is not None:
            out["liveAccuracy"] = state["liveAccuracy"]
        if state["staleness"]:
            out["staleness"] = state["staleness"]
        return out


def tick(spec: MonitorSpec, reference: dict[str, Any], state: dict[str, Any] | None, now: float,
         drift_window: DriftWindow | dict[str, Any] | None = None,
         accuracy: AccuracyPoint | dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Decision], list[dict[str, Any]]]:
    """One look without keeping a :class:`Monitor` around (it builds the drift detector each call)."""
    return Monitor(spec, reference).tick(state, now, drift_window, accuracy)


def due_retrain(state: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """The retrain request to (re)send now, if one is pending and its next attempt is due."""
    pending = (state or {}).get("pendingRetrain")
    return pending if pending and pending["nextAttemptAt"] <= now else None


def delivered(state: dict[str, Any], retrain_id: str, now: float) -> dict[str, Any]:
    """The webhook answered 2xx for ``retrain_id``: it is never sent again."""
    state = copy.deepcopy(state)
    pending = state.get("pendingRetrain")
    if pending and pending["id"] == retrain_id:
        state["pendingRetrain"] = None
        state["delivered"] = (state["delivered"] + [{"id": retrain_id, "at": now, "attempts": pending["attempts"] + 1}])[-20:]
    return state


def delivery_failed(state: dict[str, Any], retrain_id: str, now: float, error: str) -> dict[str, Any]:
    """The attempt failed; the next one waits twice as long as the last (up to :data:`MAX_BACKOFF`)."""
    state = copy.deepcopy(state)
    pending = state.get("pendingRetrain")
    if pending and pending["id"] == retrain_id:
        pending["attempts"] += 1
        pending["nextAttemptAt"] = now + min(MAX_BACKOFF, 2.0 ** pending["attempts"])
        pending["lastError"] = error
    return state


def feature_label(section: str, name: str) -> str:
    """The ``feature`` metric label of a watched column: the feature name, or ``prediction.<output>``."""
    return name if section == "features" else f"prediction.{name}"


def _columns(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for section in ("features", "prediction"):
        for name, e in evidence.get(section, {}).items():
            out[feature_label(section, name)] = {"statistic": e["log_e"], "effect": e["chi_distance"],
                                                 "drift": e["drift"], "rows": e["rows"]}
    return out


def _drift_evidence(columns: dict[str, dict[str, Any]], drifting: list[str], evidence: dict[str, Any]) -> dict[str, Any]:
    return {"columns": {k: columns[k] for k in drifting}, "logThreshold": evidence.get("log_threshold")}
