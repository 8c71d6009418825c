"""A/B: a real difference is called with a lift interval that covers it; no difference is rarely
called, however often the test is looked at."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ondeck.decide import ABPolicy, ABTest


def looks(test, rng, rates, trials=500, n=200, state=None):
    state = state or test.initial_state()
    for i in range(n):
        arms = {arm: [trials, int(rng.binomial(trials, r))] for arm, r in rates.items()}
        state, d = test.step(state, {"start": i, "end": i + 1, "arms": arms})
        if d.action != "continue":
            return state, d, i + 1
    return state, d, n


def test_a_real_difference_is_called_with_a_lift_interval_covering_it():
    rng = np.random.default_rng(1)
    state, d, k = looks(ABTest(), rng, {"control": 0.10, "treatment": 0.12})
    assert d.action == "winner" and d.evidence["winner"] == "treatment"
    lift = d.evidence["lift"]
    assert lift["lower"] < 0.2 < lift["upper"] and lift["lower"] > 0
    assert d.evidence["difference"]["lower"] > 0
    assert k < 200 and "treatment beats control" in d.reason


def test_a_worse_treatment_makes_control_the_winner():
    rng = np.random.default_rng(2)
    _, d, _ = looks(ABTest(), rng, {"control": 0.12, "treatment": 0.10})
    assert d.action == "winner" and d.evidence["winner"] == "control"
    assert d.evidence["lift"]["upper"] < 0


def test_looking_every_interval_keeps_false_winners_rare():
    rng = np.random.default_rng(3)
    test = ABTest(ABPolicy(alpha=0.05))
    runs = 200
    false = sum(looks(test, rng, {"control": 0.1, "treatment": 0.1}, trials=200, n=100)[1].action == "winner"
                for _ in range(runs))
    assert false <= 0.05 * runs
    # A fixed-sample test at 5% looked at as often would call many more (the point of the design).
    rng = np.random.default_rng(3)
    naive = 0
    for _ in range(runs):
        c = t = nc = nt = 0
        for _ in range(100):
            c += rng.binomial(200, 0.1); t += rng.binomial(200, 0.1); nc += 200; nt += 200
            pooled = (c + t) / (nc + nt)
            z = (t / nt - c / nc) / np.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt))
            if abs(z) > 1.96:
                naive += 1
                break
    assert naive > 3 * max(false, 5)


def test_equivalence_stops_a_test_with_no_difference_that_matters():
    rng = np.random.default_rng(4)
    _, d, _ = looks(ABTest(ABPolicy(equivalence=0.02)), rng, {"control": 0.1, "treatment": 0.1}, trials=20_000)
    assert d.action == "equivalent"
    assert -0.02 < d.evidence["difference"]["lower"] and d.evidence["difference"]["upper"] < 0.02


def test_too_few_trials_never_call_a_winner():
    test = ABTest(ABPolicy(min_samples=100))
    state, d = test.step(test.initial_state(), {"start": 0, "end": 1, "arms": {"control": [50, 0], "treatment": [50, 50]}})
    assert d.action == "continue" and "too few" in d.reason


def test_a_decision_stands_and_state_round_trips_json():
    rng = np.random.default_rng(5)
    test = ABTest()
    state, d, _ = looks(test, rng, {"control": 0.1, "treatment": 0.2})
    state = json.loads(json.dumps(state))
    later, again = test.step(state, {"start": 0, "end": 1, "arms": {"control": [10, 10]}})
    assert again == d and later == state


def test_bad_windows_and_policies_are_refused():
    test = ABTest()
    with pytest.raises(ValueError, match="unknown arm"):
        test.step(test.initial_state(), {"start": 0, "end": 1, "arms": {"blue": [1, 0]}})
    with pytest.raises(ValueError, match="successes out of"):
        test.step(test.initial_state(), {"start": 0, "end": 1, "arms": {"control": [1, 2]}})
    with pytest.raises(ValueError, match="different arms"):
        ABPolicy(control="a", treatment="a")
