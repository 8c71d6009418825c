"""What a ModelDeployment's status says, computed from what the operator observed. Pure.

Inputs: the parsed resource, the weights in effect, the problems the last reconcile met and the
Deployments' own status. Output: the ``status`` fields the operator owns (phase, conditions Ready /
Progressing / Degraded, versions, weights, ready replicas per variant). Fields other controllers
own (``rollout``, ``analysisRuns``, ``drift``, their conditions) are left to them: a condition type
not in :data:`OWN_CONDITIONS` is passed through untouched. The rollout's state does shape the
summary: its phase and message win while there is no problem, a rolled-back canary shows as
Degraded, and a promoted canary is reported as the stable version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ondeck.operator.render.common import router_name, variant_name
from ondeck.spec import model as m
from ondeck.spec.traffic import challenger, stable_variant

OWN_CONDITIONS = ("Ready", "Progressing", "Degraded")


@dataclass(frozen=True)
class Problem:
    """Something that keeps the deployment from being what the spec asks; shown as Degraded."""

    reason: str  # CamelCase, e.g. UnsupportedModelURI
    message: str
    blocking: bool = True  # the spec could not be applied at all (vs. one optional part missing)


@dataclass(frozen=True)
class Replicas:
    """The part of a Deployment's status that says whether it has rolled out."""

    wanted: int
    ready: int
    updated: int
    current: bool  # the Deployment controller has seen the latest spec (observedGeneration)

    @classmethod
    def of(cls, deployment: dict[str, Any]) -> "Replicas":
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        generation = (deployment.get("metadata") or {}).get("generation", 0)
        return cls(wanted=int(spec.get("replicas", 1)), ready=int(status.get("readyReplicas", 0)),
                   updated=int(status.get("updatedReplicas", 0)),
                   current=int(status.get("observedGeneration", 0)) >= int(generation))

    @property
    def done(self) -> bool:
        return self.current and self.ready >= self.wanted and self.updated >= self.wanted


def compute(md: m.ModelDeployment | None, *, generation: int, weights: dict[str, int], problems: list[Problem],
            deployments: dict[str, Replicas], previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """The status patch. ``deployments`` maps Deployment name to Replicas (missing: not created yet).

    ``md`` is None when the spec could not be used at all (``problems`` says why): the status then
    says so and claims nothing about versions or replicas.
    """
    previous = previous or {}
    waiting = _not_done(md, deployments) if md is not None else []
    blocked = [p for p in problems if p.blocking]
    if problems:
        phase, message = "Degraded", "; ".join(p.message for p in problems)
    elif waiting:
        phase, message = "Progressing", "waiting for " + ", ".join(waiting)
    else:
        phase, message = "Healthy", "all replicas ready"
    rollout = previous.get("rollout") or {}
    rollout_phase = rollout.get("phase")
    if rollout_phase and not problems:
        # the rollout controller knows better where a canary stands (and why it was rolled back)
        phase, message = rollout_phase, rollout.get("message") or message
    rolled_back = rollout_phase == "Degraded"
    experiment = previous.get("experiment") or {}
    if not rollout_phase and experiment.get("phase") and not problems:
        # likewise the A/B or shadow controller, while it runs and once it concluded
        phase, message = experiment["phase"], experiment.get("message") or message

    if blocked:  # Ready's reason is the problem itself, not a replica count
        ready = _condition("Ready", False, blocked[0].reason, message)
    else:
        ready = _condition("Ready", not waiting, "ReplicasNotReady" if waiting else "AllReplicasReady",
                           "waiting for " + ", ".join(waiting) if waiting else "all replicas ready")
    own = [
        ready,
        _condition("Progressing", bool(waiting) and not problems, "ReplicasUpdating" if waiting else "Reconciled",
                   "rolling out: " + ", ".join(waiting) if waiting else "every object matches the spec"),
        _condition("Degraded", bool(problems) or rolled_back,
                   problems[0].reason if problems else "RolloutAborted" if rolled_back else "AsExpected",
                   message if problems or rolled_back else "no problems"),
    ]
    conditions = [c for c in previous.get("conditions") or () if c.get("type") not in OWN_CONDITIONS]
    conditions += [_transition(c, previous.get("conditions") or (), generation, now) for c in own]
    status: dict[str, Any] = {"phase": phase, "message": message, "observedGeneration": generation,
                              "conditions": conditions}
    if md is None:
        return status
    stable, other = stable_variant(md.spec), challenger(md.spec)
    if rollout_phase == "Healthy" and other and rollout.get("canaryVariant") == other.name:
        stable, other = other, None  # promoted: the canary is the stable version now
    promoted = experiment.get("winner") if experiment.get("outcome") == "promoted" else None
    if promoted and any(v.name == promoted for v in md.spec.variants):
        stable, other = next(v for v in md.spec.variants if v.name == promoted), None  # the winner serves alone
    status.update({
        "stableVersion": stable.version,
        "canaryVersion": other.version if other else None,
        "canaryWeight": weights.get(other.name, 0) if other else None,
        "weights": weights,
        "variants": [_variant(md, v, deployments) for v in md.spec.variants],
    })
    return status


def _not_done(md: m.ModelDeployment, deployments: dict[str, Replicas]) -> list[str]:
    names = [(v.name, variant_name(md, v.name)) for v in md.spec.variants] + [("router", router_name(md))]
    waiting = []
    for label, name in names:
        r = deployments.get(name)
        if r is None:
            waiting.append(f"{label} (not created)")
        elif not r.done:
            waiting.append(f"{label} ({r.ready}/{r.wanted} ready)")
    return waiting


def _variant(md: m.ModelDeployment, v: m.Variant, deployments: dict[str, Replicas]) -> dict[str, Any]:
    r = deployments.get(variant_name(md, v.name))
    return {"name": v.name, "version": v.version, "replicas": r.wanted if r else 0, "readyReplicas": r.ready if r else 0}


def _condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message}


def _transition(new: dict[str, Any], old: Any, generation: int, now: str) -> dict[str, Any]:
    """Keep lastTransitionTime while the status stays the same (the Kubernetes convention)."""
    before = next((c for c in old if c.get("type") == new["type"]), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == new["status"] else None
    return {**new, "lastTransitionTime": since or now, "observedGeneration": generation}
