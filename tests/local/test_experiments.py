"""`ondeck run` with an A/B test or a shadow: the same machine as the operator's, on scrapes of real processes."""
from __future__ import annotations

import yaml

from ondeck.local.traffic import Traffic
from tests.local.conftest import processes_of  # noqa: F401 - the runs fixture uses it


def write(tmp_path, examples_dir, name, variants, strategy):
    doc = {"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
           "spec": {"model": {"name": "churn"}, "strategy": strategy, "monitoring": {"feedback": {"enabled": True}},
                    "variants": [{"name": n, "version": v, "uri": (examples_dir / "churn" / v).as_uri()}
                                 for n, v in variants]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_ab_winner_is_promoted_on_feedback_sent_through_the_router(tmp_path, examples_dir, requests_v1, runs):
    path = write(tmp_path, examples_dir, "churn", [("a", "v1"), ("b", "v2")], {"abTest": {
        "sticky": {"header": "x-user-id"}, "promoteWinner": True, "interval": "2s", "minSamples": 500}})
    run = runs(path, "state")
    run.ready()
    router = run.router
    load = Traffic(router, "churn", *requests_v1, rate=120, feedback=1.0, feedback_to=lambda variant: router,
                   max_requests=120 * 120, headers_for=lambda k: {"x-user-id": f"u{k % 501}"})
    with load:
        state = run.wait(lambda s: (s.get("experiment") or {}).get("phase") == "Healthy", 120, "the A/B test to decide")
    e = state["experiment"]
    assert e["outcome"] == "promoted" and e["winner"] == "b", e["message"]
    assert state["weights"] == {"a": 0, "b": 100} and not state["variants"]["a"]["running"]
    assert [d["action"] for d in state["decisions"]][-1] == "promote"
    assert load.feedback_failed == 0


def test_a_disagreeing_shadow_is_rejected(tmp_path, examples_dir, requests_v1, runs):
    path = write(tmp_path, examples_dir, "churn", [("primary", "v1"), ("candidate", "v2-bad")], {"shadow": {
        "variant": "candidate", "fraction": 1.0,
        "promoteOn": {"minAgreement": 0.5, "minSamples": 300, "interval": "2s"}}})  # 8-row requests: see tests/e2e
    run = runs(path, "state")
    run.ready()
    with Traffic(run.router, "churn", *requests_v1, rate=120, feedback=0.0, max_requests=120 * 120):
        state = run.wait(lambda s: (s.get("experiment") or {}).get("phase") == "Healthy", 120, "the shadow to be decided")
    e = state["experiment"]
    assert e["outcome"] == "rejected" and e["decision"]["evidence"]["agreement"] < 0.5, e["message"]
    assert not state["variants"]["candidate"]["running"] and state["variants"]["primary"]["running"]
    assert "shadow" not in yaml.safe_load((run.state_dir / "router.yaml").read_text())
    assert state["decisions"][-1]["action"] == "reject"


def test_abort_by_hand_ends_an_ab_test_and_leaves_the_control_everything(tmp_path, examples_dir, runs):
    from tests.local.test_run import cli

    path = write(tmp_path, examples_dir, "churn", [("a", "v1"), ("b", "v2")], {"abTest": {
        "sticky": {"header": "x-user-id"}, "promoteWinner": True, "interval": "1h", "minSamples": 100000}})
    run = runs(path, "state")
    run.ready()
    aborted = cli("abort", "churn", "--state-dir", str(run.state_dir))
    assert aborted.returncode == 0, aborted.stderr
    assert "A/B test aborted by hand" in aborted.stdout
    state = run.wait(lambda s: not s["variants"]["b"]["running"], 30, "b to be stopped")
    e = state["experiment"]
    assert e["outcome"] == "rejected" and e["winner"] == "a" and state["weights"] == {"a": 100, "b": 0}
    assert state["decisions"][-1]["action"] == "reject"
    late = cli("promote", "churn", "--state-dir", str(run.state_dir))
    assert late.returncode != 0 and "already over" in late.stderr
