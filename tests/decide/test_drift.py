"""Drift on known streams: quiet when nothing moved (or moved less than the minimum effect), fast
when something did, false alarms bounded even in the worst case the null allows."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ondeck.decide import DriftDetector, DriftPolicy, check_counts
from ondeck.decide import stats
from tests.decide import streams


def run(detector, windows, state=None):
    state = state or detector.initial_state()
    decisions = []
    for w in windows:
        state, d = detector.step(state, w)
        decisions.append(d)
    return state, decisions


def test_no_drift_at_high_traffic_raises_no_alarm():
    rng = np.random.default_rng(1)
    det = DriftDetector(streams.reference())
    state, decisions = run(det, (streams.window(rng, 300 * i, 15_000) for i in range(576)))  # two days
    assert {d.action for d in decisions} == {"no_drift"}
    assert state["alarms"] == state["episodes"] == 0


def test_a_tiny_but_significant_shift_at_high_traffic_is_not_drift():
    rng = np.random.default_rng(2)
    det = DriftDetector(streams.reference())
    tiny = streams.shifted_shares(0.08)  # Cohen's w ~0.07, below the 0.1 minimum effect
    windows = [streams.window(rng, 300 * i, 200_000, x=tiny) for i in range(288)]
    # A plain chi-square test calls every single window significant ...
    p = det.columns[0].p
    assert all(stats.ball_test(w["features"]["x"], p, 0.0)[1] < 1e-6 for w in windows[:5])
    # ... the tolerance ball does not, however much traffic accumulates.
    state, decisions = run(det, windows)
    assert state["alarms"] == 0
    assert max(d.evidence["features"]["x"]["log_e"] for d in decisions) <= 0


def test_false_alarms_stay_within_the_bound_on_the_edge_of_the_null():
    # The worst case the null allows: live shares exactly on the tolerance ball's surface.
    rng = np.random.default_rng(3)
    policy = DriftPolicy(false_alarm_every=86400.0)  # 288 looks: at most T / 288 false alarms expected
    det = DriftDetector(streams.reference(), policy)
    col = det.columns[0]
    edge = stats.tilt(col.p, stats.bin_centres(streams.DECILE_EDGES), col.radius)
    looks = 4 * 288
    state, _ = run(det, (streams.window(rng, 300 * i, 20_000, x=edge) for i in range(looks)))
    assert state["alarms"] <= looks / 288
    # Just outside the ball, the same stream does alarm.
    outside = stats.tilt(col.p, stats.bin_centres(streams.DECILE_EDGES), 1.6 * col.radius)
    state, decisions = run(det, (streams.window(rng, 300 * i, 20_000, x=outside) for i in range(12)))
    assert state["alarms"] > 0


def test_half_a_std_shift_is_caught_in_the_first_window_on_that_feature_only():
    rng = np.random.default_rng(4)
    det = DriftDetector(streams.reference())
    state, _ = run(det, (streams.window(rng, 300 * i, 15_000) for i in range(12)))
    state, d = det.step(state, streams.window(rng, 3600, 15_000, x=streams.shifted_shares(0.5)))
    assert d.action == "drift"
    x = d.evidence["features"]["x"]
    assert x["drift"] and x["new"] and x["since"] == 3900
    assert x["chi_distance"] > x["radius"] and x["wasserstein_std"] == pytest.approx(0.5, abs=0.1)
    assert not d.evidence["features"]["level"]["drift"] and not d.evidence["prediction"]["score"]["drift"]
    assert "x" in d.reason and "level" not in d.reason


def test_a_category_share_shift_is_caught_within_three_windows():
    rng = np.random.default_rng(5)
    det = DriftDetector(streams.reference())
    moved = np.array([0.28, 0.36, 0.23, 0.13])  # 12 points away from the first level (w ~0.24)
    state, decisions = run(det, (streams.window(rng, 300 * i, 15_000, level=moved) for i in range(3)))
    assert decisions[-1].action == "drift" and decisions[-1].evidence["features"]["level"]["drift"]
    assert not decisions[-1].evidence["features"]["x"]["drift"]


def test_evidence_accumulates_over_windows_at_low_traffic():
    rng = np.random.default_rng(6)
    det = DriftDetector(streams.reference())
    shifted = streams.shifted_shares(0.5)
    state, decisions = run(det, (streams.window(rng, 300 * i, 100, x=shifted) for i in range(60)))
    first = next(i for i, d in enumerate(decisions) if d.action == "drift")
    assert 1 <= first < 60  # not one window's worth of evidence, but a few
    log_e = [d.evidence["features"]["x"]["log_e"] for d in decisions[:first]]
    assert log_e[-1] > log_e[0]


def test_prediction_drift_is_its_own_entry():
    rng = np.random.default_rng(7)
    det = DriftDetector(streams.reference())
    _, d = det.step(det.initial_state(), streams.window(rng, 0, 15_000, score=streams.shifted_shares(-0.6)))
    assert d.action == "drift" and d.evidence["prediction"]["score"]["drift"]
    assert not d.evidence["features"]["x"]["drift"] and "prediction score" in d.reason


def test_state_round_trips_through_json_without_changing_a_decision():
    rng = np.random.default_rng(8)
    det = DriftDetector(streams.reference())
    windows = [streams.window(rng, 300 * i, 2000, x=streams.shifted_shares(0.3 if i > 10 else 0.0)) for i in range(20)]
    kept, stored = det.initial_state(), json.dumps(det.initial_state())
    for w in windows:
        kept, a = det.step(kept, w)
        state, b = det.step(json.loads(stored), json.loads(json.dumps(w)))
        stored = json.dumps(state)
        assert a == b


def test_an_episode_lasts_while_drift_persists_and_ends_after_the_recovery_time():
    rng = np.random.default_rng(9)
    det = DriftDetector(streams.reference(), DriftPolicy(recovery=3600))
    shifted = streams.shifted_shares(0.7)
    state, during = run(det, (streams.window(rng, 300 * i, 15_000, x=shifted) for i in range(6)))
    assert all(d.action == "drift" for d in during)
    assert state["episodes"] == 1 and state["alarms"] >= 3  # re-alarms belong to the same episode
    state, after = run(det, (streams.window(rng, 1800 + 300 * i, 15_000) for i in range(14)), state)
    ended = next(i for i, d in enumerate(after) if d.action == "no_drift")
    assert after[ended].evidence["features"]["x"]["since"] is None
    assert 300 * (ended + 1) >= 3600  # not before an hour without alarms
    assert state["episodes"] == 1


def test_an_empty_window_is_no_evidence_either_way():
    det = DriftDetector(streams.reference())
    empty = {"start": 0, "end": 300, "features": {"x": [0] * 10, "level": [0] * 4}, "prediction": {}}
    state, d = det.step(det.initial_state(), empty)
    assert d.action == "no_drift" and "no rows" in d.reason
    assert state["alarms"] == 0


@pytest.mark.parametrize("window, message", [
    ({"features": {"x": [1] * 9}}, "9 bin counts, the reference has 10"),
    ({"features": {"nope": [1, 2]}}, "not in the reference profile: nope"),
    ({"features": {"x": [-1] + [1] * 9}}, "non-negative"),
    ({"features": {}, "prediction": {"score": [1, 2]}}, "prediction score: 2 bin counts"),
])
def test_bad_windows_are_refused_with_the_problem_named(window, message):
    det = DriftDetector(streams.reference())
    with pytest.raises(ValueError, match=message):
        det.step(det.initial_state(), {"start": 0, "end": 300, **window})


def test_a_small_reference_gets_a_wider_tolerance():
    small = DriftDetector(streams.reference(rows=400)).columns[0].radius
    large = DriftDetector(streams.reference(rows=50_000)).columns[0].radius
    assert large < small and large == pytest.approx(0.1, abs=0.03)


def test_one_shot_check_flags_only_the_shifted_feature():
    rng = np.random.default_rng(10)
    ref = streams.reference()
    quiet = check_counts(ref, streams.window(rng, 0, 5000))
    assert quiet.action == "no_drift"
    assert all(not e["drift"] for e in quiet.evidence["features"].values())
    shifted = check_counts(ref, streams.window(rng, 0, 5000, x=streams.shifted_shares(0.5)))
    assert shifted.action == "drift" and shifted.reason == "drift in x"
    x = shifted.evidence["features"]["x"]
    assert x["drift"] and x["p_adjusted"] < 0.01 and x["p_adjusted"] >= x["p_value"]
    assert not shifted.evidence["features"]["level"]["drift"]


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="interval"):
        DriftPolicy(interval=0)
    with pytest.raises(ValueError, match="unknown field"):
        DriftPolicy.from_dict({"intervall": 60})
