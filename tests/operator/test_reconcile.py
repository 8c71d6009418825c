"""One reconcile pass against a fake API: what is applied, pruned and written, and when not."""
from __future__ import annotations

import copy

import pytest

from ondeck.operator.kube import ApiError, Kind
from ondeck.operator.reconcile import Reconciler, Retry
from tests.operator.manifests import base


class FakeKube:
    """Records calls; Deployments come back as applied, with the status set in ``ready``."""

    def __init__(self, served=()):
        self.applied: list[dict] = []
        self.deleted: list[tuple[str, str]] = []
        self.statuses: list[dict] = []
        self.existing: dict[str, list[dict]] = {}  # kind -> objects list_owned returns
        self.served = dict(served)
        self.fail: ApiError | None = None

    def served_version(self, kind: Kind):
        return self.served.get(kind.kind)

    def apply(self, obj):
        if self.fail:
            raise self.fail
        self.applied.append(obj)
        return {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "generation": 1}, "status": {}}

    def list_owned(self, kind, version, namespace, instance):
        return self.existing.get(kind.kind, [])

    def delete(self, kind, version, namespace, name):
        self.deleted.append((kind.kind, name))

    def patch_status(self, namespace, name, status):
        self.statuses.append(status)


def body(manifest=None, generation=1):
    d = copy.deepcopy(manifest or base())
    d["metadata"].update(namespace="ns", uid="uid-1", generation=generation)
    return d


def ready_deployment(name, replicas=1):
    return {"metadata": {"name": name, "generation": 1}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": 1, "readyReplicas": replicas, "updatedReplicas": replicas}}


def test_a_pass_applies_everything_and_writes_status_once():
    kube = FakeKube()
    r = Reconciler(kube, image="img")
    assert r.reconcile(body(), prune=False) == []
    assert sorted((o["kind"], o["metadata"]["name"]) for o in kube.applied) == sorted([
        ("Deployment", "churn-stable"), ("Service", "churn-stable"), ("Deployment", "churn-canary"),
        ("Service", "churn-canary"), ("ConfigMap", "churn-router"), ("Deployment", "churn"), ("Service", "churn")])
    (status,) = kube.statuses
    assert status["phase"] == "Progressing" and status["observedGeneration"] == 1
    r.reconcile(body(), prune=False)
    assert len(kube.statuses) == 1  # nothing changed: nothing written


def test_readiness_is_flushed_once_per_change():
    kube = FakeKube()
    r = Reconciler(kube, image="img")
    r.reconcile(body(), prune=False)
    for name in ("churn-stable", "churn-canary", "churn"):
        assert r.deployment_changed("ns", "churn", ready_deployment(name), deleted=False) is False
    assert r.stale() == [("ns", "churn")] and r.stale() == []
    r.flush(("ns", "churn"))
    assert kube.statuses[-1]["phase"] == "Healthy"
    r.deployment_changed("ns", "churn", ready_deployment("churn"), deleted=False)
    r.flush(("ns", "churn"))
    assert len(kube.statuses) == 2  # the same readiness again changes nothing


def test_a_deleted_deployment_asks_for_a_new_pass():
    r = Reconciler(FakeKube(), image="img")
    r.reconcile(body(), prune=False)
    assert r.deployment_changed("ns", "churn", ready_deployment("churn-stable"), deleted=True) is True
    assert r.deployment_changed("ns", "other", ready_deployment("other-x"), deleted=True) is False  # not ours yet


def test_unsupported_uri_applies_nothing_and_says_why():
    kube = FakeKube()
    d = base()
    d["spec"]["variants"][1]["uri"] = "s3://bucket/churn"
    problems = Reconciler(kube, image="img").reconcile(body(d))
    assert [p.reason for p in problems] == ["UnsupportedModelURI"]
    assert kube.applied == []
    assert kube.statuses[-1]["phase"] == "Degraded"


def test_problems_are_reported_once_not_at_every_pass():
    d = base()
    d["spec"]["variants"][1]["uri"] = "s3://bucket/churn"
    r = Reconciler(FakeKube(), image="img")
    assert len(r.reconcile(body(d))) == 1
    assert r.reconcile(body(d)) == []


def test_missing_route_crd_is_reported_and_the_rest_applied():
    kube = FakeKube()
    d = base()
    d["spec"]["traffic"] = {"provider": "istio"}
    problems = Reconciler(kube, image="img").reconcile(body(d), prune=False)
    assert [p.reason for p in problems] == ["TrafficProviderMissing"]
    assert len(kube.applied) == 7


def test_prune_deletes_what_the_spec_no_longer_wants_and_only_ours():
    kube = FakeKube()
    owned = [{"uid": "uid-1"}]
    kube.existing = {"Deployment": [
        {"metadata": {"name": "churn-stable", "ownerReferences": owned}},
        {"metadata": {"name": "churn-old", "ownerReferences": owned}},
        {"metadata": {"name": "churn-foreign", "ownerReferences": [{"uid": "someone-else"}]}},
    ]}
    Reconciler(kube, image="img").reconcile(body(), prune=True)
    assert kube.deleted == [("Deployment", "churn-old")]


def test_overload_is_retried_and_rejection_is_a_condition():
    kube = FakeKube()
    kube.fail = ApiError(429, "too many requests")
    with pytest.raises(Retry):
        Reconciler(kube, image="img").reconcile(body())
    kube.fail = ApiError(422, 'Deployment "x" is invalid')
    problems = Reconciler(kube, image="img").reconcile(body())
    assert {p.reason for p in problems} == {"ApplyFailed"}


def test_removed_weights_are_nulled_in_the_status_patch():
    kube = FakeKube()
    r = Reconciler(kube, image="img")
    r.reconcile(body(), prune=False)
    assert kube.statuses[-1]["weights"] == {"stable": 100, "canary": 0}
    one = base()
    one["spec"].pop("strategy")
    one["spec"].pop("analysis")
    one["spec"]["variants"].pop()
    r.reconcile(body(one, generation=2), prune=False)
    assert kube.statuses[-1]["weights"] == {"canary": None, "stable": 100}


def test_the_rollout_state_moves_the_router():
    kube = FakeKube()
    d = body()
    d["status"] = {"rollout": {"stableVariant": "stable", "canaryVariant": "canary", "canaryWeight": 30, "phase": "Paused"}}
    Reconciler(kube, image="img").reconcile(d, prune=False)
    config = next(o for o in kube.applied if o["kind"] == "ConfigMap")["data"]["router.yaml"]
    assert "weight: 30" in config and "weight: 70" in config
    assert kube.statuses[-1]["phase"] == "Paused" and kube.statuses[-1]["canaryWeight"] == 30


def test_a_controller_rerender_applies_only_what_changed_and_patches_only_changed_fields():
    kube = FakeKube()
    kube.patch_status_fields = lambda namespace, name, fields: kube.statuses.append({"fields": fields})
    r = Reconciler(kube, image="img")
    r.reconcile(body(), prune=False)
    kube.applied.clear()
    kube.statuses.clear()
    state = {"stableVariant": "stable", "canaryVariant": "canary", "canaryWeight": 10, "phase": "Progressing",
             "stepIndex": 1}
    r.controller_update("ns", "churn", {"rollout": state}, rerender=True)
    assert [(o["kind"], o["metadata"]["name"]) for o in kube.applied] == [("ConfigMap", "churn-router")]
    merge, fields = kube.statuses
    assert set(merge) <= {"weights", "canaryWeight", "conditions", "phase", "message"}, merge
    assert merge["canaryWeight"] == 10 and fields == {"fields": {"rollout": state}}
    kube.applied.clear()
    kube.statuses.clear()
    r.controller_update("ns", "churn", {"rollout": state}, rerender=True)  # the same state again
    assert kube.applied == [] and kube.statuses == []
    r.reconcile(body(), prune=False)  # a full pass applies everything: it repairs hand edits
    assert len(kube.applied) == 7
