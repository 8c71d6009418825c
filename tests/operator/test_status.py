"""The status the operator writes, computed from what it observed. Pure: no cluster."""
from __future__ import annotations

from ondeck.operator.status import Problem, Replicas, compute
from ondeck.spec import parse_manifest
from tests.operator.manifests import base

MD = parse_manifest(base())
WEIGHTS = {"stable": 90, "canary": 10}
DONE = Replicas(wanted=1, ready=1, updated=1, current=True)


def status(deployments, problems=(), previous=None, now="2026-01-01T00:00:00Z", md=MD, generation=3):
    return compute(md, generation=generation, weights=WEIGHTS, problems=list(problems), deployments=deployments,
                   previous=previous, now=now)


def cond(s, kind):
    return next(c for c in s["conditions"] if c["type"] == kind)


ALL_READY = {"churn-stable": DONE, "churn-canary": DONE, "churn": DONE}


def test_all_ready_is_healthy():
    s = status(ALL_READY)
    assert s["phase"] == "Healthy"
    assert cond(s, "Ready")["status"] == "True"
    assert cond(s, "Progressing")["status"] == "False"
    assert cond(s, "Degraded")["status"] == "False"
    assert s["observedGeneration"] == 3 and cond(s, "Ready")["observedGeneration"] == 3
    assert (s["stableVersion"], s["canaryVersion"], s["canaryWeight"]) == ("v1", "v2", 10)
    assert s["weights"] == WEIGHTS
    assert s["variants"] == [{"name": "stable", "version": "v1", "replicas": 1, "readyReplicas": 1},
                             {"name": "canary", "version": "v2", "replicas": 1, "readyReplicas": 1}]


def test_waiting_replicas_are_progressing_and_named():
    s = status({**ALL_READY, "churn-canary": Replicas(wanted=2, ready=1, updated=2, current=True)})
    assert s["phase"] == "Progressing"
    assert cond(s, "Ready")["status"] == "False" and cond(s, "Ready")["reason"] == "ReplicasNotReady"
    assert "canary (1/2 ready)" in cond(s, "Progressing")["message"]


def test_missing_and_stale_deployments_are_not_ready():
    s = status({"churn-stable": DONE, "churn": Replicas(wanted=1, ready=1, updated=1, current=False)})
    assert "canary (not created)" in s["message"] and "router (1/1 ready)" in s["message"]


def test_blocking_problem_is_degraded_and_not_ready():
    s = status(ALL_READY, [Problem("UnsupportedModelURI", "variant canary: unsupported model URI 's3://x'")])
    assert s["phase"] == "Degraded"
    assert cond(s, "Degraded")["status"] == "True" and cond(s, "Degraded")["reason"] == "UnsupportedModelURI"
    assert cond(s, "Ready")["status"] == "False" and cond(s, "Ready")["reason"] == "UnsupportedModelURI"
    assert "s3://x" in cond(s, "Ready")["message"]


def test_missing_route_crd_is_degraded_but_still_serving():
    s = status(ALL_READY, [Problem("TrafficProviderMissing", "no HTTPRoute CRD", blocking=False)])
    assert s["phase"] == "Degraded" and cond(s, "Degraded")["status"] == "True"
    assert cond(s, "Ready")["status"] == "True"


def test_unusable_spec_claims_nothing_else():
    s = status({}, [Problem("InvalidSpec", "spec.variants: Required value")], md=None)
    assert s["phase"] == "Degraded" and cond(s, "Ready")["reason"] == "InvalidSpec"
    assert "variants" not in s and "weights" not in s


def test_transition_time_moves_only_when_the_status_changes():
    first = status(ALL_READY, now="2026-01-01T00:00:00Z")
    again = status(ALL_READY, previous=first, now="2026-01-01T00:05:00Z")
    assert again == first  # nothing changed: nothing to write
    worse = status({**ALL_READY, "churn": Replicas(1, 0, 1, True)}, previous=first, now="2026-01-01T00:09:00Z")
    assert cond(worse, "Ready")["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    assert cond(worse, "Degraded")["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_other_controllers_conditions_and_rollout_phase_are_kept():
    drift = {"type": "DriftDetected", "status": "True", "reason": "FeatureDrift", "message": "tenure moved"}
    previous = {"conditions": [drift], "rollout": {"phase": "Paused"}}
    s = status(ALL_READY, previous=previous)
    assert drift in s["conditions"]
    assert s["phase"] == "Paused"
    assert status(ALL_READY, [Problem("ApplyFailed", "x")], previous=previous)["phase"] == "Degraded"


def test_replicas_from_a_deployment_object():
    dep = {"metadata": {"generation": 4}, "spec": {"replicas": 3},
           "status": {"observedGeneration": 4, "readyReplicas": 3, "updatedReplicas": 3}}
    assert Replicas.of(dep).done
    assert not Replicas.of({**dep, "metadata": {"generation": 5}}).done
    assert not Replicas.of({"metadata": {"generation": 1}, "spec": {"replicas": 1}}).done
