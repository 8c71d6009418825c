"""The local runtime's pure parts: manifest checks, analysis translation, router config, the view."""
from __future__ import annotations

import re

import pytest

from ondeck.decide import CanaryWindow, VariantStats
from ondeck.errors import UserError
from ondeck.local import manifest as local_manifest
from ondeck.local.view import render
from ondeck.spec import model as m
from ondeck.spec import parse_manifest
from ondeck.spec.analysis import CanaryAnalyses, decide_template
from ondeck.spec.traffic import router_config
from tests.local.conftest import FAST_ANALYSIS, manifest

STEPS = [{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "health"}]}}]


def template(**kw) -> m.AnalysisTemplate:
    return m.AnalysisTemplate.model_validate({"name": "t", "interval": "30s", "metrics": [
        {"name": "errors", "kind": "errorRate", "maxIncrease": 0.02},
        {"name": "p99", "kind": "latencyQuantile", "quantile": 0.99, "maxRatio": 1.5},
        {"name": "acc", "kind": "accuracy", "maxDecrease": 0.03},
        {"name": "shift", "kind": "predictionDrift", "minEffect": 0.25}], **kw})


def test_manifest_templates_become_decide_templates_in_its_words():
    t = decide_template(template(count=7, failureLimit=2, inconclusiveLimit=4), classifier=True).to_dict()
    assert (t["interval"], t["count"], t["failureLimit"], t["inconclusiveLimit"]) == (30.0, 7, 2, 4)
    kinds = {x["name"]: x for x in t["metrics"]}
    assert kinds["errors"]["kind"] == "error_rate" and kinds["errors"]["maxIncrease"] == 0.02
    assert kinds["p99"]["kind"] == "latency" and kinds["p99"]["maxRatio"] == 1.5 and kinds["p99"]["quantile"] == 0.99
    assert kinds["acc"]["kind"] == "accuracy" and kinds["acc"]["maxDecrease"] == 0.03
    # class bins are the same for both versions of a classifier; score bins are each version's own deciles
    assert kinds["shift"] == {**kinds["shift"], "kind": "prediction_drift", "maxEffect": 0.25, "output": "class"}
    assert decide_template(template(), classifier=False).metrics[3].output == "score"


def test_feature_drift_between_variants_is_refused_with_the_reason():
    t = m.AnalysisTemplate.model_validate({"name": "t", "metrics": [{"name": "inputs", "kind": "featureDrift"}]})
    with pytest.raises(UserError, match="featureDrift is not measured between canary and stable.*monitoring.drift"):
        decide_template(t, classifier=True)


def stats(requests, errors):
    return VariantStats(requests=requests, errors=errors)


def test_a_step_with_two_templates_takes_the_worst_verdict():
    strict = m.AnalysisTemplate.model_validate({"name": "strict", "count": 1, "metrics": [
        {"name": "errors", "kind": "errorRate", "maxIncrease": 0.0}]})
    lenient = m.AnalysisTemplate.model_validate({"name": "lenient", "count": 3, "metrics": [
        {"name": "errors", "kind": "errorRate", "maxIncrease": 0.5}]})
    analyses = CanaryAnalyses({"strict": strict, "lenient": lenient}, model="churn", classifier=True)
    step = {"analysis": {"templates": [{"templateName": "strict"}, {"templateName": "lenient"}]}}
    window = CanaryWindow(0, 60, stats(5000, 0), stats(5000, 400))
    run, decision = analyses.measure(step, None, window)
    assert decision.action == "rollback" and decision.reason.startswith("strict: ")
    assert set(decision.evidence["templates"]) == {"strict", "lenient"} and set(run) == {"strict", "lenient"}
    assert analyses.interval(step) == 60.0  # both default to 1m


def test_local_runs_need_packages_on_this_machine(tmp_path, examples_dir):
    path = manifest(tmp_path, examples_dir, "churn", steps=STEPS, analysis=FAST_ANALYSIS)
    dep = local_manifest.load(path)
    assert (dep.stable, dep.canary, dep.model) == ("stable", "canary", "churn")
    assert dep.packages["canary"].classifier and dep.packages["canary"].reference["features"]
    assert dep.steps == STEPS

    text = path.read_text()
    pvc = tmp_path / "pvc.yaml"
    pvc.write_text(text.replace((examples_dir / "churn" / "v2").as_uri(), "pvc://models/churn/v2"))
    with pytest.raises(UserError, match=r"spec.variants\[1\].uri: 'pvc://models/churn/v2' needs a cluster.*file:///"):
        local_manifest.load(pvc)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("version: v2", "version: v3"))
    with pytest.raises(UserError, match=r"spec.variants\[1\].version: 'v3', but the package .* is version 'v2'"):
        local_manifest.load(wrong)
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace((examples_dir / "churn" / "v2").as_uri(), "file:///nowhere/v2"))
    with pytest.raises(UserError, match="no model package at /nowhere/v2"):
        local_manifest.load(missing)


def test_router_config_has_the_running_variants_and_the_manifests_rules(tmp_path, examples_dir):
    md = parse_manifest({"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "ab"},
                         "spec": {"model": {"name": "churn"}, "variants": [
                             {"name": "a", "version": "v1", "uri": "file:///a"}, {"name": "b", "version": "v2", "uri": "file:///b"}],
                             "strategy": {"abTest": {"rules": [{"header": "X-Group", "exact": "beta", "variant": "b"}],
                                                     "sticky": {"header": "x-user"}}}}})
    endpoints = {"a": [{"http": "127.0.0.1:1000"}], "b": [{"http": "127.0.0.1:2000", "grpc": "127.0.0.1:2001"}]}
    config = router_config(md, {"a": 50, "b": 50}, lambda v: endpoints.get(v, [])).to_dict()
    assert [(v["name"], v["version"], v["weight"]) for v in config["variants"]] == [("a", "v1", 50), ("b", "v2", 50)]
    assert config["fallback"] == "a" and config["rules"][0]["variant"] == "b" and config["sticky"] == {"header": "x-user"}
    alone = router_config(md, {"a": 100, "b": 0}, lambda v: endpoints["a"] if v == "a" else []).to_dict()
    assert [v["name"] for v in alone["variants"]] == ["a"] and "fallback" not in alone and alone["rules"] == []


def test_the_view_shows_step_weights_analysis_and_drift():
    state = {
        "name": "churn", "model": "churn", "running": True, "router": {"http": 8080, "grpc": 8081},
        "steps": STEPS, "weights": {"stable": 90, "canary": 10},
        "rollout": {"phase": "Progressing", "stepIndex": 1, "canaryWeight": 10, "message": "step 0: weight set",
                    "analysis": {"last": {"reason": "measurement 1/3: errors Successful"}}},
        "variants": {"stable": {"version": "v1", "running": True, "live": {"rps": 90.0, "errorRate": 0.0, "p99": 0.004,
                                                                          "accuracy": 0.87, "replicas": 1}},
                     "canary": {"version": "v2", "running": True, "live": {"rps": 10.0, "errorRate": 0.01, "p99": None,
                                                                          "accuracy": None, "replicas": 1}}},
        "monitor": {"lastLook": 100.0, "drifting": ["monthly_charges"], "liveAccuracy": 0.87, "staleness": None,
                    "columns": {"monthly_charges": {"statistic": 40.0, "effect": 0.9, "drift": True, "rows": 500}},
                    "pendingRetrain": {"id": "churn-v1-1", "attempts": 2, "lastError": "HTTP 503"}, "delivered": []},
        "events": [{"time": 99.0, "message": "decision: drift: drift in monthly_charges"}],
    }
    text = "\n".join(render(state, now=103.0))
    assert "http://127.0.0.1:8080" in text and "Progressing  step 1/2: analysis (health)  canary weight 10%" in text
    assert re.search(r"stable +v1 +90% +1 +90\.0 +0\.00% +4\.0ms +0\.870", text)
    assert re.search(r"canary +v2 +10% +1 +10\.0 +1\.00% +- +-", text)
    assert "measurement 1/3: errors Successful" in text
    assert "DRIFT in monthly_charges (chi distance 0.90); last look 3s ago" in text
    assert "churn-v1-1 pending (attempts 2, last error: HTTP 503)" in text
    assert "decision: drift: drift in monthly_charges" in text
