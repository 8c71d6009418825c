"""A/B tests and shadows end to end: the operator on a real control plane reading a real Prometheus that
scrapes real servers and a real router, and steering that router through its ConfigMap (harness.py).

Looks every 5 s; the request rate and feedback share are set so that each scenario decides in well
under a minute. Every wait is on a condition with a timeout.
"""
from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.harness import ROWS
from tests.helpers import wait_for

pytestmark = pytest.mark.k8s

DECIDE = 120.0  # seconds any one experiment may take here (they take 15-40 s)


def experiment_md(name: str, examples, variants: list[tuple[str, str]], strategy: dict) -> dict:
    return {"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "churn"}, "strategy": strategy, "monitoring": {"feedback": {"enabled": True}},
                     "variants": [{"name": n, "version": v, "uri": (examples / "churn" / v).as_uri()} for n, v in variants]}}


def concluded(s):
    e = s.status().get("experiment") or {}
    return e if e.get("phase") == "Healthy" else None


def infer(s, headers: dict[str, str]) -> str:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [1.0] * 20}]}).encode()
    req = urllib.request.Request(f"http://{s.router.http_address}/v2/models/churn/infer", data=body, method="POST",
                                 headers={"content-type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["x-ondeck-variant"]


def test_ab_winner_on_feedback_through_the_router_is_promoted(scenario, examples_dir):
    md = experiment_md("churn-ab", examples_dir, [("a", "v1"), ("b", "v2")], {"abTest": {
        "rules": [{"header": "x-variant", "exact": "b", "variant": "b"}], "sticky": {"header": "x-user-id"},
        "successMetric": "accuracy", "promoteWinner": True, "interval": "5s", "minSamples": 500}})
    s = scenario(md)
    assert wait_for(lambda: s.router_weights() == {"a": 50, "b": 50}, 30, 0.2, "the even split")
    assert infer(s, {"x-variant": "b", "x-user-id": "u1"}) == "b"  # a header rule beats stickiness
    assert len({infer(s, {"x-user-id": "u7"}) for _ in range(5)}) == 1  # a user stays on one variant
    # Users split by the sticky key; every answer's labels go back through the router, which hands
    # them to every variant: only the one that answered counts them (churn/v2 is right ~2.7 points
    # more often on these rows).
    traffic = s.send(feedback=1.0, via_router=True, headers_for=lambda k: {"x-user-id": f"user-{k % 997}"})
    final = wait_for(lambda: concluded(s), DECIDE, 0.5, "the A/B test to decide")
    assert final["outcome"] == "promoted" and final["winner"] == "b", final["message"]
    arms = final["decision"]["evidence"]["arms"]
    assert arms["b"]["rate"] > arms["a"]["rate"] and min(a["trials"] for a in arms.values()) >= 500
    assert wait_for(lambda: s.router_weights() == {"b": 100}, 30, 0.2, "the router to send everything to the winner")
    assert infer(s, {"x-variant": "a", "x-user-id": "u1"}) == "b"  # the loser is retired: its rule went with it
    status = s.status()
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2" and "promoted" in status["message"]
    reasons = [e["reason"] for e in s.events()]
    assert "ExperimentStarted" in reasons and "ABTestPromoted" in reasons
    assert traffic.feedback_failed == 0 and traffic.feedback_posted > 0
    shown = s.cli("status")
    assert shown.returncode == 0 and "A/B test on accuracy: b (v2) against a (v1): Healthy, promoted" in shown.stdout
    assert "lift" in shown.stdout


def shadow_md(examples, candidate: str) -> dict:
    # Agreement is per request (every row's class the same): with 8-row requests churn/v2 agrees
    # with v1 on ~0.66 of them and v2-bad on ~0.39, so 0.5 tells them apart by several standard errors.
    assert ROWS == 8
    return experiment_md(f"churn-shadow-{candidate}", examples, [("primary", "v1"), ("candidate", candidate)], {
        "shadow": {"variant": "candidate", "fraction": 1.0,
                   "promoteOn": {"minAgreement": 0.5, "minSamples": 400, "interval": "5s"}}})


def test_agreeing_shadow_is_promoted_to_primary(scenario, examples_dir):
    s = scenario(shadow_md(examples_dir, "v2"))
    assert wait_for(lambda: s.router_weights() == {"primary": 100, "candidate": 0}, 30, 0.2, "primary serving alone")
    s.send()
    final = wait_for(lambda: concluded(s), DECIDE, 0.5, "the shadow to be decided")
    assert final["outcome"] == "promoted" and final["winner"] == "candidate", final["message"]
    assert final["decision"]["evidence"]["agreement"] >= 0.5 and final["decision"]["evidence"]["samples"] >= 400
    assert wait_for(lambda: s.router_weights() == {"candidate": 100}, 30, 0.2, "the shadow serving everything")
    config = yaml_config(s)
    assert "shadow" not in config and [v["name"] for v in config["variants"]] == ["candidate"]
    assert "ShadowPromoted" in [e["reason"] for e in s.events()]
    assert s.status()["stableVersion"] == "v2"


def test_disagreeing_shadow_is_rejected_and_mirroring_stops(scenario, examples_dir):
    s = scenario(shadow_md(examples_dir, "v2-bad"))
    s.send()
    final = wait_for(lambda: concluded(s), DECIDE, 0.5, "the shadow to be decided")
    assert final["outcome"] == "rejected", final["message"]
    assert final["decision"]["evidence"]["agreement"] < 0.5 and "rejected" in s.status()["message"]
    assert wait_for(lambda: "shadow" not in yaml_config(s), 30, 0.2, "mirroring to stop")
    assert s.router_weights() == {"primary": 100}
    events = [(e["type"], e["reason"]) for e in s.events()]
    assert ("Warning", "ShadowRejected") in events
    assert s.status()["stableVersion"] == "v1"


def yaml_config(s) -> dict:
    """The config the real router runs now."""
    with urllib.request.urlopen(f"http://{s.router.http_address}/admin/config", timeout=5) as r:
        return json.loads(r.read())["config"]
