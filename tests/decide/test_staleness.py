"""Staleness: the time until accuracy crosses the bar, and when to retrain."""
from __future__ import annotations

import numpy as np
import pytest

from ondeck.decide import StalenessPolicy, assess_staleness

DAY = 86400.0


def series(rng, days, start, per_day, labels=2000):
    return [{"time": d * DAY, "total": labels, "correct": int(rng.binomial(labels, start + per_day * d))} for d in range(days)]


def test_a_steady_decline_gives_the_time_to_the_bar_and_a_retrain_inside_the_horizon():
    rng = np.random.default_rng(1)
    d = assess_staleness(series(rng, 14, 0.90, -0.005), StalenessPolicy(bar=0.80, horizon=14 * DAY))
    # level after 13 days ~0.835, so the bar is ~7 days away
    assert d.action == "retrain" and "reaches the bar" in d.reason
    assert d.evidence["days_to_bar"] == pytest.approx(7.0, abs=1.5)
    early, late = d.evidence["days_to_bar_range"]
    assert early < d.evidence["days_to_bar"] < late
    assert d.evidence["slope_per_day"] == pytest.approx(-0.005, abs=0.001)


def test_the_same_decline_further_than_the_horizon_is_kept_with_its_estimate():
    rng = np.random.default_rng(2)
    d = assess_staleness(series(rng, 14, 0.90, -0.005), StalenessPolicy(bar=0.80, horizon=3 * DAY))
    assert d.action == "keep" and d.evidence["days_to_bar"] == pytest.approx(7.0, abs=1.5)


def test_flat_accuracy_is_kept_and_has_no_crossing():
    rng = np.random.default_rng(3)
    d = assess_staleness(series(rng, 14, 0.88, 0.0), StalenessPolicy(bar=0.80))
    assert d.action == "keep" and "no significant decline" in d.reason


def test_noisy_windows_do_not_fake_a_trend():
    rng = np.random.default_rng(4)
    noisy = [{"time": d * DAY, "total": 5000, "correct": int(5000 * (0.86 + rng.normal(0, 0.03)))} for d in range(10)]
    d = assess_staleness(noisy, StalenessPolicy(bar=0.80, horizon=30 * DAY))
    assert d.evidence["dispersion"] > 10  # day-to-day wobble far beyond binomial noise
    assert d.action == "keep"


def test_accuracy_already_below_the_bar_means_retrain():
    rng = np.random.default_rng(5)
    d = assess_staleness(series(rng, 7, 0.75, 0.0), StalenessPolicy(bar=0.80))
    assert d.action == "retrain" and "below the bar" in d.reason and d.evidence["days_to_bar"] == 0


def test_drift_means_retrain_even_without_enough_feedback():
    d = assess_staleness([], StalenessPolicy(bar=0.8), drift=True)
    assert d.action == "retrain" and "drift" in d.reason


def test_too_little_feedback_is_insufficient_data():
    d = assess_staleness([{"time": 0, "total": 10, "correct": 9}] * 3, StalenessPolicy(bar=0.8))
    assert d.action == "insufficient_data"


def test_bad_points_and_policies_are_refused():
    with pytest.raises(ValueError, match="correct out of"):
        assess_staleness([{"time": 0, "total": 1, "correct": 2}], StalenessPolicy(bar=0.8))
    with pytest.raises(ValueError, match="bar"):
        StalenessPolicy(bar=1.5)


def test_minutes_of_wobble_are_not_read_as_a_trend():
    # Looks every 5 s at a steady 0.88: over a minute the fitted slope, extrapolated to days, is
    # huge either way by chance; it must never turn into a retrain.
    rng = np.random.default_rng(7)
    retrains = 0
    for _ in range(200):
        pts = [{"time": 5.0 * i, "total": 100, "correct": int(rng.binomial(100, 0.88))} for i in range(12)]
        retrains += assess_staleness(pts, StalenessPolicy(bar=0.80)).action == "retrain"
    assert retrains == 0
    # the level itself is still judged on a short series
    low = [{"time": 5.0 * i, "total": 500, "correct": 350} for i in range(12)]
    assert assess_staleness(low, StalenessPolicy(bar=0.80)).action == "retrain"
