"""The reference profile: how each feature and the prediction were distributed on reference data.

Written once by ``ondeck package`` into ``reference.json`` and read by everything that compares live
traffic with it: the server's per-bin counters, the drift detector and ``ondeck drift``. Binning
lives here and only here so that the server and the decision engine can never disagree on which bin
a value falls into.

Bins: a numeric feature is cut at its reference deciles (duplicates removed), so each of the up to
10 bins held about a tenth of the reference rows. An integer-valued feature with few levels is
categorical: one bin per level, cut half-way between levels, so the same ``bin_index`` serves both.
Values below the first edge fall in bin 0, above the last in the last bin; NaN falls in the last bin
(the server rejects NaN by default, so it only shows where a package allows it).
"""
from __future__ import annotations

from typing import Any

import numpy as np

PROFILE_VERSION = 1
DECILES = tuple(round(0.1 * i, 1) for i in range(1, 10))
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
CATEGORICAL_MAX_LEVELS = 12


def bin_index(edges: np.ndarray | list[float], values: np.ndarray) -> np.ndarray:
    """Bin of each value: ``i`` such that ``edges[i-1] <= value < edges[i]``."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")


def bin_counts(edges: np.ndarray | list[float], values: np.ndarray) -> np.ndarray:
    """Counts per bin (``len(edges) + 1`` bins) of finite and non-finite values alike."""
    return np.bincount(bin_index(edges, values), minlength=len(edges) + 1)


def _is_categorical(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.all(finite == np.round(finite)):
        return False
    return np.unique(finite).size <= CATEGORICAL_MAX_LEVELS


def distribution_profile(values: np.ndarray, categories: list[Any] | None = None) -> dict[str, Any]:
    """Profile of one column: summary statistics and the bins the live counters use.

    ``categories`` forces a categorical profile over the codes ``0..len(categories)-1`` (used for
    the predicted class, whose labels may be strings).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("no finite values to profile")
    profile: dict[str, Any] = {
        "count": int(values.size),
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "min": float(finite.min()),
        "max": float(finite.max()),
        "quantiles": {str(q): float(np.quantile(finite, q)) for q in QUANTILES},
    }
    if categories is not None:
        codes = np.arange(len(categories), dtype=np.float64)
        profile["kind"] = "categorical"
        profile["categories"] = list(categories)
        edges = (codes[:-1] + codes[1:]) / 2
    elif _is_categorical(values):
        levels = np.unique(finite)
        profile["kind"] = "categorical"
        profile["categories"] = [float(v) for v in levels]
        edges = (levels[:-1] + levels[1:]) / 2
    else:
        profile["kind"] = "numeric"
        edges = np.unique(np.quantile(finite, DECILES))
    counts = bin_counts(edges, values)
    profile["bin_edges"] = [float(e) for e in edges]
    profile["bin_shares"] = [float(c) for c in counts / counts.sum()]
    return profile


def build_reference(
    x: np.ndarray,
    feature_names: list[str],
    prediction: dict[str, np.ndarray],
    classes: list[Any] | None,
) -> dict[str, Any]:
    """The whole ``reference.json``: one profile per feature and per prediction output.

    ``prediction`` holds ``class`` (class index per row, classifiers), ``score`` (positive-class
    probability for binary classifiers, top probability for multi-class, the value for regressors).
    """
    out: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": int(x.shape[0]),
        "features": {name: distribution_profile(x[:, i]) for i, name in enumerate(feature_names)},
        "prediction": {},
    }
    if "class" in prediction:
        out["prediction"]["class"] = distribution_profile(prediction["class"], categories=list(classes or []))
    out["prediction"]["score"] = distribution_profile(prediction["score"])
    return out


def prediction_columns(probabilities: np.ndarray | None, values: np.ndarray | None) -> dict[str, np.ndarray]:
    """The profiled prediction outputs (see :func:`build_reference`) from a model's raw outputs."""
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        cls = probabilities.argmax(axis=1)
        score = probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(axis=1)
        return {"class": cls, "score": score}
    return {"score": np.asarray(values, dtype=np.float64).ravel()}
