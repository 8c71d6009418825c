"""The shared maths: bets valid against the tolerance ball, histogram reading, Holm, confidence sequences."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from ondeck.decide import ABPolicy, AnalysisTemplate, DriftPolicy, DriftWindow, StalenessPolicy, stats

DECIDE = Path(__file__).resolve().parents[2] / "ondeck" / "decide"


def test_bets_never_win_on_average_anywhere_in_the_ball():
    rng = np.random.default_rng(1)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    radius = 0.15
    alternatives = rng.dirichlet(np.ones(4) * 5, size=50)
    bets = np.exp(stats.ball_log_bets(alternatives, p, radius))
    for _ in range(500):  # random points on the ball's surface (the worst case)
        d = rng.normal(size=4) * p
        d -= p * d.sum() / p.sum()
        q = p + radius * d / np.sqrt(np.sum(d * d / p))
        if (q <= 0).any():
            continue
        assert (bets @ q).max() <= 1 + 1e-9


def test_a_bet_outside_the_ball_grows_and_inside_it_abstains():
    p = np.full(5, 0.2)
    far = np.array([0.4, 0.25, 0.15, 0.1, 0.1])
    near = np.array([0.21, 0.2, 0.2, 0.2, 0.19])
    log_far, log_near = stats.ball_log_bets(np.array([far, near]), p, 0.1)
    assert log_far @ far > 0.01
    assert not log_near.any()


def test_tilt_reaches_the_requested_distance_or_says_it_cannot():
    p = np.array([0.5, 0.3, 0.2])
    a = stats.tilt(p, np.array([0.0, 0.0, 1.0]), 0.3)
    assert stats.chi_distance(a, p) == pytest.approx(0.3, abs=1e-6) and a[2] > p[2]
    assert stats.tilt(p, np.array([0.0, 0.0, 1.0]), 10.0) is None


def test_ball_test_is_calibrated_at_the_edge_and_powerful_beyond():
    rng = np.random.default_rng(2)
    p = np.full(10, 0.1)
    radius = 0.1
    direction = np.linspace(-1, 1, 10)
    edge = p + radius * direction / np.sqrt(np.sum(direction**2 / p))
    rejections = sum(stats.ball_test(rng.multinomial(20_000, edge), p, radius)[1] < 0.05 for _ in range(400))
    assert rejections <= 0.05 * 400 * 1.6
    beyond = p + 2 * radius * direction / np.sqrt(np.sum(direction**2 / p))
    assert stats.ball_test(rng.multinomial(20_000, beyond), p, radius)[1] < 1e-6


def test_two_sample_ball_test_estimates_the_distance():
    rng = np.random.default_rng(3)
    a = rng.multinomial(50_000, [0.25] * 4)
    b = rng.multinomial(50_000, [0.35, 0.25, 0.25, 0.15])
    _, p_same, effect_same = stats.two_sample_ball_test(a, rng.multinomial(50_000, [0.25] * 4), 0.1)
    _, p_diff, effect_diff = stats.two_sample_ball_test(a, b, 0.1)
    assert p_same > 0.5 and effect_same < 0.03
    assert p_diff < 1e-6 and effect_diff == pytest.approx(stats.chi_distance(np.array([0.35, 0.25, 0.25, 0.15]), np.full(4, 0.25)), abs=0.02)


def test_histogram_quantile_matches_promql_linear_interpolation():
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0)]
    assert stats.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert stats.histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert stats.histogram_quantile(0.95, buckets) == pytest.approx(0.35)
    assert stats.share_above(0.15, buckets) == pytest.approx(0.3)
    assert stats.share_above(0.6, buckets) == 0.0
    assert math.isnan(stats.histogram_quantile(0.5, [(math.inf, 0.0)]))


def test_holm_adjusts_in_order_and_never_below_the_raw_value():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == {"a": 0.03, "c": 0.06, "b": 0.06}


def test_binned_wasserstein_of_a_mean_shift_is_about_the_shift():
    from scipy.stats import norm

    edges = norm.ppf(np.arange(1, 10) / 10)
    centres = stats.bin_centres(edges)
    p = np.full(10, 0.1)
    q = np.diff(np.concatenate([[0], norm.cdf(edges - 0.5), [1]]))
    assert stats.binned_wasserstein(q, p, centres) == pytest.approx(0.5, abs=0.08)


def test_the_confidence_sequence_shrinks_with_data_and_widens_with_confidence():
    r = [stats.mixture_radius(0.25 / n, 0.05, 0.02) for n in (100, 1000, 10_000, 100_000)]
    assert r == sorted(r, reverse=True)
    assert stats.mixture_radius(0.25 / 1000, 0.001, 0.02) > r[1]
    assert stats.always_valid_p(0.0, 0.001, 0.02) == 1.0


def test_decision_code_is_pure():
    allowed = {"__future__", "math", "statistics", "dataclasses", "typing", "numpy", "scipy", "ondeck"}
    for path in DECIDE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                    pytest.fail(f"{path.name} opens a file")
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("ondeck"):
                    assert name.startswith("ondeck.decide"), f"{path.name} imports {name}"


@pytest.mark.parametrize("build, message", [
    (lambda: DriftPolicy.from_dict({"interval": "soon"}), "interval must be a number"),
    (lambda: ABPolicy.from_dict({"alpha": "x"}), "alpha must be a number"),
    (lambda: StalenessPolicy.from_dict({"bar": None}), "bar must be a number"),
    (lambda: AnalysisTemplate.from_dict({"metrics": [{"name": "e", "kind": "error_rate", "maxIncrease": "lots"}]}),
     "maxIncrease must be a number"),
    (lambda: DriftWindow.from_dict({"end": 1}), "missing 'start'"),
    (lambda: DriftWindow.from_dict({"start": 0, "end": 1, "features": {"x": 3}}), "must be a list"),
])
def test_malformed_policies_and_windows_name_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_distribution_functions_match_scipy_stats():
    """The decision code avoids importing scipy.stats (memory in the operator); its own functions
    must give scipy.stats' answers."""
    from scipy import stats as st

    from ondeck.decide import stats as s

    for df in (1, 3, 9):
        assert s.chi2_quantile(0.95, df) == pytest.approx(st.chi2.ppf(0.95, df), rel=1e-9)
        for stat in (0.5, 3.0, 20.0, 80.0):
            assert s.chi2_tail(stat, df) == pytest.approx(st.chi2.sf(stat, df), rel=1e-9, abs=1e-15)
            for nc in (0.5, 5.0, 40.0):
                assert s.chi2_tail(stat, df, nc) == pytest.approx(st.ncx2.sf(stat, df, nc), abs=1e-9)
    for z in (-3.0, -0.5, 0.0, 1.2, 4.0):
        assert s.normal_tail(z) == pytest.approx(st.norm.sf(z), rel=1e-9)
    assert s.normal_quantile(0.95) == pytest.approx(st.norm.ppf(0.95), rel=1e-12)
