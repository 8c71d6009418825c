"""Canary analysis: identical canaries pass, each kind of bad canary is rolled back with evidence,
too little data never passes, and Argo's limits mean what they say."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ondeck.decide import AnalysisTemplate, CanaryAnalysis
from tests.decide import streams

TEMPLATE = {
    "interval": 300, "count": 5,
    "metrics": [
        {"name": "errors", "kind": "error_rate", "maxIncrease": 0.005},
        {"name": "p99", "kind": "latency", "quantile": 0.99, "maxRatio": 1.1},
        {"name": "accuracy", "kind": "accuracy", "maxDecrease": 0.01},
        {"name": "predictions", "kind": "prediction_drift", "output": "score", "maxEffect": 0.1},
    ],
}


def run(template: dict, rng, canary: dict, stable_requests: int = 12_000, canary_requests: int = 3000, looks: int = 10):
    analysis = CanaryAnalysis(AnalysisTemplate.from_dict(template))
    state, decisions = analysis.initial_state(), []
    for i in range(looks):
        window = {"start": 300 * i, "end": 300 * (i + 1), "stable": streams.variant(rng, stable_requests),
                  "canary": streams.variant(rng, canary_requests, **canary)}
        state, d = analysis.step(state, window)
        decisions.append(d)
        if d.action != "continue":
            break
    return state, decisions


def test_identical_canaries_are_promoted():
    rng = np.random.default_rng(1)
    for _ in range(10):
        state, decisions = run(TEMPLATE, rng, {})
        assert [d.action for d in decisions] == ["continue"] * 4 + ["promote"]
        assert state["phase"] == "Successful"


@pytest.mark.parametrize("bad, metric", [
    ({"error_rate": 0.03}, "errors"),
    ({"median_latency": 0.03}, "p99"),
    ({"accuracy": 0.75}, "accuracy"),
    ({"score": streams.shifted_shares(0.5)}, "predictions"),
])
def test_each_kind_of_bad_canary_is_rolled_back_within_three_intervals(bad, metric):
    rng = np.random.default_rng(2)
    state, decisions = run(TEMPLATE, rng, bad)
    d = decisions[-1]
    assert d.action == "rollback" and len(decisions) <= 3
    assert d.evidence["metrics"][metric]["phase"] == "Failed"
    assert metric in d.reason
    others = [m for m, e in d.evidence["metrics"].items() if m != metric]
    assert all(d.evidence["metrics"][m]["phase"] != "Failed" for m in others)


def test_evidence_of_a_failed_error_rate_names_both_rates_and_the_interval():
    rng = np.random.default_rng(3)
    _, decisions = run(TEMPLATE, rng, {"error_rate": 0.03})
    errors = decisions[-1].evidence["metrics"]["errors"]
    assert errors["stable"]["value"] == pytest.approx(0.01, abs=0.005)
    assert errors["canary"]["value"] == pytest.approx(0.03, abs=0.01)
    assert errors["degradation"]["lower"] > 0.005


def test_no_traffic_is_never_a_pass():
    rng = np.random.default_rng(4)
    state, decisions = run(TEMPLATE, rng, {}, stable_requests=0, canary_requests=0)
    assert [d.action for d in decisions] == ["continue"] * 4 + ["pause"]
    assert state["phase"] == "Inconclusive"
    assert "minSamples" in decisions[-1].reason


def test_too_little_canary_traffic_is_inconclusive_not_successful():
    rng = np.random.default_rng(5)
    _, decisions = run(TEMPLATE, rng, {}, canary_requests=20)
    assert decisions[-1].action == "pause"
    assert decisions[-1].evidence["metrics"]["errors"]["measurement"] == "Inconclusive"


def test_inconclusive_limit_stops_the_run_early():
    rng = np.random.default_rng(6)
    template = {**TEMPLATE, "inconclusiveLimit": 1}
    _, decisions = run(template, rng, {}, canary_requests=20)
    assert len(decisions) == 2 and decisions[-1].action == "pause"


def test_failure_limit_tolerates_that_many_failed_measurements():
    rng = np.random.default_rng(7)
    template = {**TEMPLATE, "metrics": [{**TEMPLATE["metrics"][0], "failureLimit": 2}]}
    _, decisions = run(template, rng, {"error_rate": 0.05})
    assert [d.action for d in decisions] == ["continue", "continue", "rollback"]
    assert decisions[-1].evidence["metrics"]["errors"]["Failed"] == 3


def test_an_absolute_bound_fails_a_canary_that_is_as_bad_as_stable():
    rng = np.random.default_rng(8)
    template = {"count": 3, "metrics": [{"name": "errors", "kind": "error_rate", "maxIncrease": 0.01, "max": 0.02}]}
    analysis = CanaryAnalysis(AnalysisTemplate.from_dict(template))
    window = {"start": 0, "end": 60, "stable": streams.variant(rng, 5000, error_rate=0.05),
              "canary": streams.variant(rng, 5000, error_rate=0.05)}
    _, d = analysis.step(analysis.initial_state(), window)
    bound = d.evidence["metrics"]["errors"]["bound"]
    assert d.action == "rollback" and bound["value"] == 0.02 and bound["p_value"] < 1e-6


def test_a_custom_ratio_metric_compares_conversions():
    template = {"count": 1, "metrics": [{"name": "conversion", "kind": "ratio", "series": "checkout", "margin": 0.01}]}
    analysis = CanaryAnalysis(AnalysisTemplate.from_dict(template))
    window = {"start": 0, "end": 60, "stable": {"ratios": {"checkout": [1000, 10_000]}},
              "canary": {"ratios": {"checkout": [700, 10_000]}}}
    _, d = analysis.step(analysis.initial_state(), window)
    assert d.action == "rollback"
    assert d.evidence["metrics"]["conversion"]["canary"]["value"] == pytest.approx(0.07)


def test_a_finished_run_keeps_its_verdict_and_state_round_trips_json():
    rng = np.random.default_rng(9)
    analysis = CanaryAnalysis(AnalysisTemplate.from_dict(TEMPLATE))
    state = analysis.initial_state()
    for i in range(5):
        w = {"start": 300 * i, "end": 300 * (i + 1), "stable": streams.variant(rng, 12_000),
             "canary": streams.variant(rng, 3000)}
        state, d = analysis.step(json.loads(json.dumps(state)), json.loads(json.dumps(w)))
    assert d.action == "promote"
    later, again = analysis.step(state, w)
    assert again == d and later == state


@pytest.mark.parametrize("template, message", [
    ({"metrics": []}, "at least one metric"),
    ({"metrics": [{"name": "e", "kind": "errors"}]}, "kind must be one of"),
    ({"metrics": [{"name": "e", "kind": "error_rate", "maxRatio": 2}]}, "unknown field"),
    ({"metrics": [{"name": "l", "kind": "latency", "maxRatio": 0.9}]}, "maxRatio >= 1"),
    ({"metrics": [{"name": "r", "kind": "ratio"}]}, "needs 'series'"),
    ({"metrics": [{"name": "e", "kind": "error_rate"}], "intervall": 5}, "unknown field"),
])
def test_bad_templates_are_refused_with_the_problem_named(template, message):
    with pytest.raises(ValueError, match=message):
        AnalysisTemplate.from_dict(template)


def test_template_round_trips():
    t = AnalysisTemplate.from_dict(TEMPLATE)
    assert AnalysisTemplate.from_dict(t.to_dict()) == t


def test_bad_window_data_is_refused():
    analysis = CanaryAnalysis(AnalysisTemplate.from_dict(TEMPLATE))
    with pytest.raises(ValueError, match="errors exceed requests"):
        analysis.step(analysis.initial_state(), {"start": 0, "end": 1, "stable": {"requests": 1, "errors": 2},
                                                 "canary": {}})
    with pytest.raises(ValueError, match=r"\+Inf"):
        analysis.step(analysis.initial_state(), {"start": 0, "end": 1, "stable": {"latency": [[0.1, 3]]},
                                                 "canary": {}})


def test_null_fields_take_their_defaults():
    t = AnalysisTemplate.from_dict({"metrics": [{"name": "e", "kind": "error_rate", "maxIncrease": None}],
                                    "count": None, "failureLimit": None, "inconclusiveLimit": None})
    assert t.count == 10 and t.failure_limit == 0 and t.inconclusive_limit is None
    assert t.metrics[0].allowance == 0.01
