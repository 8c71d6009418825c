"""The A/B and shadow machine (ondeck/experiment.py): pure, so every path is driven with made-up counters."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ondeck import experiment as ex

AB = {"kind": "abTest", "control": "a", "controlVersion": "v1", "treatment": "b", "treatmentVersion": "v2",
      "metric": "accuracy", "promoteWinner": True, "interval": 5.0, "policy": {"min_samples": 100}}
SHADOW = {"kind": "shadow", "control": "primary", "controlVersion": "v1", "treatment": "candidate",
          "treatmentVersion": "v2", "minAgreement": 0.9, "minSamples": 1000, "interval": 5.0}


def ab_windows(rates: dict[str, float], trials: int = 400, seed: int = 1):
    rng = np.random.default_rng(seed)

    def measure(start, end):
        return {"arms": {arm: [trials, int(rng.binomial(trials, r))] for arm, r in rates.items()}}
    return measure


def drive(plan, measure, looks=100, state=None, start=1000.0):
    """Tick every second for ``looks`` intervals; returns the state, every action and the ticks taken."""
    state = state or ex.new_state(plan, start)
    actions = []
    for i in range(1, int(looks * plan["interval"]) + 1):
        state, acts = ex.tick(plan, state, start + i, measure=measure)
        actions += acts
        if state["phase"] != ex.PROGRESSING:
            break
    return state, actions


def kinds(actions):
    return [a["type"] if a["type"] != "event" else a["reason"] for a in actions]


def test_the_better_arm_wins_on_accuracy_and_is_promoted():
    state, actions = drive(AB, ab_windows({"a": 0.87, "b": 0.90}))
    assert state["phase"] == ex.HEALTHY and state["outcome"] == ex.PROMOTED and state["winner"] == "b"
    assert state["weights"] == {"a": 0, "b": 100} and state["retired"] == ["a"]
    assert kinds(actions) == ["setWeights", "promote", "ABTestPromoted"]
    assert actions[0]["weights"] == {"a": 0, "b": 100} and actions[1] == {"type": "promote", "variant": "b", "retired": ["a"]}
    evidence = state["decision"]["evidence"]
    assert evidence["winner"] == "b" and evidence["difference"]["lower"] > 0
    assert "b (v2) promoted" in state["message"] and "lift" in state["message"]
    assert ex.weights(state) == {"a": 0, "b": 100} and ex.retired(state) == {"a"} and ex.serving(state, "a") == "b"


def test_a_worse_treatment_makes_the_control_the_winner():
    state, actions = drive(AB, ab_windows({"a": 0.90, "b": 0.85}))
    assert state["winner"] == "a" and state["weights"] == {"b": 0, "a": 100} and state["retired"] == ["b"]


def test_without_promote_winner_the_winner_is_only_recorded():
    state, actions = drive({**AB, "promoteWinner": False}, ab_windows({"a": 0.87, "b": 0.90}))
    assert state["phase"] == ex.HEALTHY and state["outcome"] == ex.WINNER and state["winner"] == "b"
    assert kinds(actions) == ["ABTestDecided"] and "promoteWinner is off" in actions[0]["message"]
    assert ex.weights(state) is None and ex.retired(state) == set() and ex.serving(state, "a") == "a"


def test_no_difference_that_matters_ends_the_test_without_touching_traffic():
    plan = {**AB, "policy": {"min_samples": 100, "equivalence": 0.03}}
    state, actions = drive(plan, ab_windows({"a": 0.9, "b": 0.9}, trials=5000), looks=200)
    assert state["outcome"] == ex.EQUIVALENT and state["winner"] is None
    assert kinds(actions) == ["ABTestEquivalent"] and ex.weights(state) is None and not ex.retired(state)


def test_equal_arms_without_equivalence_keep_running():
    state, actions = drive(AB, ab_windows({"a": 0.9, "b": 0.9}, seed=3), looks=60)
    assert state["phase"] == ex.PROGRESSING and state["looks"] == 60 and actions == []


def test_looks_come_every_interval_and_windows_are_contiguous():
    seen = []

    def measure(start, end):
        seen.append((start, end))
        return {"arms": {}}
    state, _ = drive(AB, measure, looks=3)
    assert seen == [(1000.0, 1005.0), (1005.0, 1010.0), (1010.0, 1015.0)]
    assert state["decision"]["action"] == "continue" and "too few trials" in state["decision"]["reason"]


def test_no_evidence_concludes_nothing_and_the_next_look_covers_the_gap():
    calls = []

    def down(start, end):
        calls.append((start, end))
        raise ex.NoEvidence("http://prometheus:9090 unreachable: connection refused")
    state, actions = drive(AB, down, looks=3)
    assert state["phase"] == ex.PROGRESSING and state["looks"] == 0 and "unreachable" in state["message"]
    assert kinds(actions) == ["ExperimentInconclusive"] and actions[0]["warning"]  # once per problem, not per try
    assert calls == [(1000.0, 1005.0), (1000.0, 1010.0), (1000.0, 1015.0)]  # tried every interval, window kept open
    state, _ = ex.tick(AB, state, 1020.0, measure=lambda s, e: calls.append((s, e)) or {"arms": {"a": [10, 9]}})
    assert calls[-1] == (1000.0, 1020.0) and state["looks"] == 1 and state["problem"] is None


def test_no_data_never_promotes():
    state, actions = drive(AB, lambda s, e: {"arms": {}}, looks=50)
    assert state["phase"] == ex.PROGRESSING and not actions


def test_extrapolated_counters_never_give_more_successes_than_trials():
    state, _ = ex.tick(AB, ex.new_state(AB, 0.0), 5.0, measure=lambda s, e: {"arms": {"a": [10.0, 10.2], "b": [3, -1]}})
    arms = state["test"]["arms"]
    assert arms["a"] == {"trials": 10.0, "successes": 10.0} and arms["b"] == {"trials": 3.0, "successes": 0.0}


def shadow_windows(agree: float, compared: int = 300, errors: int = 0, dropped: int = 0):
    def measure(start, end):
        return {"compared": compared, "agreed": round(compared * agree), "error": errors, "timeout": 0, "dropped": dropped}
    return measure


def test_a_shadow_that_agrees_is_promoted_once_it_has_min_samples():
    state, actions = drive(SHADOW, shadow_windows(0.95, dropped=7))
    assert state["looks"] == 4  # 300 a look: 1200 >= 1000 at the fourth
    assert state["outcome"] == ex.PROMOTED and state["winner"] == "candidate"
    assert state["weights"] == {"primary": 0, "candidate": 100} and state["retired"] == ["primary"]
    assert kinds(actions) == ["setWeights", "promote", "ShadowPromoted"]
    e = state["decision"]["evidence"]
    assert e["samples"] == 1200 and e["agreement"] == 0.95 and e["dropped"] == 28


def test_a_shadow_that_disagrees_is_rejected_and_retired():
    state, actions = drive(SHADOW, shadow_windows(0.6))
    assert state["outcome"] == ex.REJECTED and state["retired"] == ["candidate"] and ex.weights(state) is None
    assert kinds(actions) == ["reject", "ShadowRejected"] and actions[1]["warning"]
    assert "rejected" in state["message"] and "agreement 0.600" in state["message"]
    assert ex.serving(state, "primary") == "primary"


def test_shadow_errors_count_against_it():
    # every comparison agrees, but a fifth of the mirrored requests failed in the shadow
    state, _ = drive(SHADOW, shadow_windows(1.0, compared=240, errors=60))
    assert state["outcome"] == ex.REJECTED and state["decision"]["evidence"]["agreement"] == 0.8
    # a shadow that only fails is rejected too, rather than waiting for comparisons forever
    state, _ = drive(SHADOW, shadow_windows(1.0, compared=0, errors=300))
    assert state["outcome"] == ex.REJECTED


def test_a_concluded_experiment_stands_and_state_round_trips_json():
    state, _ = drive(SHADOW, shadow_windows(0.95))
    state = json.loads(json.dumps(state))
    again, actions = ex.tick(SHADOW, state, 1e6, measure=lambda s, e: pytest.fail("measured after the end"))
    assert again == state and actions == []


def test_a_new_version_is_a_new_experiment():
    state = ex.new_state(SHADOW, 0.0)
    assert ex.same_experiment(SHADOW, state)
    assert not ex.same_experiment({**SHADOW, "treatmentVersion": "v3"}, state)
    assert not ex.same_experiment(AB, state) and not ex.same_experiment(SHADOW, None)


def test_windows_from_counters_sum_replicas_and_primaries():
    def key(name, **labels):
        return name, tuple(sorted(labels.items()))
    samples = {
        key("ondeck_feedback_total", model="churn", variant="a", pod="a-0"): 10.0,
        key("ondeck_feedback_total", model="churn", variant="a", pod="a-1"): 5.0,
        key("ondeck_feedback_correct_total", model="churn", variant="a", pod="a-0"): 9.0,
        key("ondeck_feedback_total", model="churn", variant="b"): 7.0,
        key("ondeck_feedback_positive_total", model="churn", variant="b"): 2.0,
        key("ondeck_feedback_total", model="other", variant="b"): 100.0,
    }
    assert ex.window(AB, samples, "churn") == {"arms": {"a": [15.0, 9.0], "b": [7.0, 0.0]}}
    assert ex.window({**AB, "metric": "conversion"}, samples, "churn")["arms"]["b"] == [7.0, 2.0]
    shadow = {
        key("ondeck_shadow_requests_total", model="churn", primary="primary", shadow="candidate", outcome="compared"): 90.0,
        key("ondeck_shadow_requests_total", model="churn", primary="other", shadow="candidate", outcome="compared"): 10.0,
        key("ondeck_shadow_requests_total", model="churn", primary="primary", shadow="candidate", outcome="timeout"): 3.0,
        key("ondeck_shadow_agreement_total", model="churn", primary="primary", shadow="candidate"): 80.0,
    }
    assert ex.window(SHADOW, shadow, "churn") == {"compared": 100.0, "error": 0, "timeout": 3.0, "dropped": 0, "agreed": 80.0}
    assert ex.series(SHADOW) == ex.SHADOW_SERIES and ex.series(AB) == ("ondeck_feedback_total", "ondeck_feedback_correct_total")


@pytest.mark.parametrize("plan", [AB, SHADOW], ids=["abTest", "shadow"])
def test_promote_by_hand_gives_the_treatment_everything_at_once(plan):
    state = ex.new_state(plan, 1000.0)
    after, actions, applied, message = ex.command(plan, state, "promote")
    assert applied and after["phase"] == ex.HEALTHY and after["outcome"] == ex.PROMOTED and "by hand" in message
    assert after["winner"] == plan["treatment"] and after["retired"] == [plan["control"]]
    assert ex.weights(after) == {plan["control"]: 0, plan["treatment"]: 100}
    assert kinds(actions)[:2] == ["setWeights", "promote"] and state["phase"] == ex.PROGRESSING  # the input is untouched
    # an experiment that is over takes no further command
    again, more, applied, message = ex.command(plan, after, "abort")
    assert not applied and more == [] and again == after and "already over" in message


def test_abort_by_hand_leaves_the_control_all_traffic_and_retires_the_treatment():
    after, actions, applied, _ = ex.command(AB, ex.new_state(AB, 1000.0), "abort")
    assert applied and after["outcome"] == ex.REJECTED and after["winner"] == "a" and after["retired"] == ["b"]
    assert ex.weights(after) == {"a": 100, "b": 0} and ex.serving(after, "a") == "a"
    assert kinds(actions) == ["setWeights", "reject", "ABTestAborted"]
    # a shadow has no share of traffic to take back: it is rejected and no longer mirrored
    after, actions, applied, _ = ex.command(SHADOW, ex.new_state(SHADOW, 1000.0), "abort")
    assert applied and after["outcome"] == ex.REJECTED and after["retired"] == ["candidate"] and ex.weights(after) is None
    assert kinds(actions) == ["reject", "ShadowRejected"]
