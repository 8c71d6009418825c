"""Known streams for the decision tests: a small synthetic reference profile and windows drawn from it."""
from __future__ import annotations

import numpy as np
from scipy import stats

DECILE_EDGES = [float(stats.norm.ppf(q / 10)) for q in range(1, 10)]


def reference(rows: int = 5000) -> dict:
    """A reference.json-shaped profile: ``x`` numeric N(0, 1) over deciles, ``level`` with four
    levels, and a numeric prediction ``score``."""
    numeric = {"kind": "numeric", "count": rows, "mean": 0.0, "std": 1.0, "bin_edges": DECILE_EDGES,
               "bin_shares": [0.1] * 10}
    return {
        "rows": rows,
        "features": {
            "x": numeric,
            "level": {"kind": "categorical", "count": rows, "mean": 1.2, "std": 1.0, "bin_edges": [0.5, 1.5, 2.5],
                      "bin_shares": [0.4, 0.3, 0.2, 0.1]},
        },
        "prediction": {"score": dict(numeric)},
    }


def shifted_shares(shift: float) -> np.ndarray:
    """Decile shares of N(shift, 1) over the reference's N(0, 1) deciles."""
    cdf = stats.norm.cdf(np.array(DECILE_EDGES) - shift)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


LEVELS = np.array([0.4, 0.3, 0.2, 0.1])


def window(rng, t: float, rows: int, x: np.ndarray | None = None, level: np.ndarray | None = None,
           score: np.ndarray | None = None, interval: float = 300.0) -> dict:
    """One window of multinomial bin counts; shares default to the reference's."""
    def draw(shares):
        return rng.multinomial(rows, shares).tolist()

    return {"start": t, "end": t + interval,
            "features": {"x": draw(shifted_shares(0.0) if x is None else x), "level": draw(LEVELS if level is None else level)},
            "prediction": {"score": draw(shifted_shares(0.0) if score is None else score)}}


LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf"))


def variant(rng, requests: int, error_rate: float = 0.01, median_latency: float = 0.02,
            accuracy: float = 0.8, feedback: float = 0.5, score: np.ndarray | None = None) -> dict:
    """One variant's counters over a window: requests, 5xx errors, log-normal latency in
    Prometheus-style cumulative buckets, feedback, prediction score bins."""
    errors = rng.binomial(requests, error_rate)
    cdf = stats.lognorm.cdf(LATENCY_BOUNDS[:-1], 0.5, scale=median_latency)
    latency = np.cumsum(rng.multinomial(requests, np.diff(np.concatenate([[0.0], cdf, [1.0]]))))
    labelled = rng.binomial(requests, feedback)
    return {"requests": requests, "errors": int(errors),
            "latency": [[le, int(c)] for le, c in zip(LATENCY_BOUNDS, latency)],
            "feedback_total": int(labelled), "feedback_correct": int(rng.binomial(labelled, accuracy)),
            "prediction": {"score": rng.multinomial(requests, shifted_shares(0.0) if score is None else score).tolist()}}
