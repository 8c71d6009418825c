"""Counters from the servers -> the windows that :mod:`ondeck.decide` takes.

Both runtimes get their numbers as counter *increases* over a window, keyed by metric name and
labels: ``ondeck run`` by subtracting two scrapes of each server's ``/metrics``, the operator by
asking Prometheus for ``increase(...[w])``. From there one set of functions builds the decision
inputs, so the two runtimes cannot read the metrics differently.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from ondeck.decide import DriftWindow, VariantStats

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]
"""``{(metric name, sorted label pairs): value}``; for counters, the sample name ends in ``_total``,
for histogram buckets in ``_bucket`` (with ``le``)."""

# The series the decisions read (docs/metrics.md), and nothing else: scrapes are filtered to these.
WANTED = (
    "ondeck_requests_total",
    "ondeck_request_duration_seconds_bucket",
    "ondeck_feature_bin_total",
    "ondeck_prediction_bin_total",
    "ondeck_feedback_total",
    "ondeck_feedback_correct_total",
)


def parse_exposition(text: str, wanted: Iterable[str] = WANTED) -> Samples:
    """The wanted samples of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    keep = set(wanted)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in keep:
                key = (s.name, tuple(sorted(s.labels.items())))
                out[key] = out.get(key, 0.0) + float(s.value)
    return out


def increase(after: Samples, before: Samples) -> Samples:
    """Counter increases between two scrapes; a counter that went down was reset (a restarted
    server) and counts from zero, as Prometheus' ``increase`` does."""
    out: Samples = {}
    for key, value in after.items():
        prev = before.get(key, 0.0)
        out[key] = value - prev if value >= prev else value
    return out


def add(*parts: Samples) -> Samples:
    """Sum of samples from several sources (the replicas of one variant)."""
    out: Samples = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def _select(samples: Samples, name: str, match: dict[str, str]) -> list[tuple[dict[str, str], float]]:
    rows = []
    for (n, labels), value in samples.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == v for k, v in match.items()):
            rows.append((d, value))
    return rows


def _total(samples: Samples, name: str, match: dict[str, str]) -> float:
    return sum(v for _, v in _select(samples, name, match))


def _bins(samples: Samples, name: str, match: dict[str, str], key: str, n_bins: dict[str, int]) -> dict[str, list[float]]:
    out = {k: [0.0] * n for k, n in n_bins.items()}
    for labels, value in _select(samples, name, match):
        group, b = labels.get(key), labels.get("bin")
        if group in out and b is not None and b.isdigit() and int(b) < len(out[group]):
            out[group][int(b)] += value
    return out


def bin_sizes(reference: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Number of bins per feature and per prediction output in a package's ``reference.json``."""
    features = {k: len(v["bin_edges"]) + 1 for k, v in reference["features"].items()}
    prediction = {k: len(v["bin_edges"]) + 1 for k, v in reference.get("prediction", {}).items()}
    return features, prediction


def variant_stats(samples: Samples, match: dict[str, str], reference: dict[str, Any]) -> VariantStats:
    """One variant's counters over the window, for canary analysis.

    ``match`` selects the variant's series, e.g. ``{"model": "churn", "variant": "canary"}``.
    Errors are 5xx answers: a client's bad request is not the model's failure.
    """
    requests = _select(samples, "ondeck_requests_total", match)
    errors = sum(v for labels, v in requests if labels.get("code", "").startswith("5"))
    buckets: dict[float, float] = {}
    for labels, value in _select(samples, "ondeck_request_duration_seconds_bucket", match):
        le = float(labels["le"]) if labels.get("le") not in ("+Inf", "Inf", "inf") else math.inf
        buckets[le] = buckets.get(le, 0.0) + value
    _, prediction_bins = bin_sizes(reference)
    return VariantStats(
        requests=sum(v for _, v in requests),
        errors=errors,
        latency=tuple(sorted(buckets.items())) if math.inf in buckets else (),
        prediction=_bins(samples, "ondeck_prediction_bin_total", match, "output", prediction_bins),
        feedback_total=_total(samples, "ondeck_feedback_total", match),
        feedback_correct=_total(samples, "ondeck_feedback_correct_total", match),
    )


def drift_window(samples: Samples, match: dict[str, str], reference: dict[str, Any], start: float, end: float) -> DriftWindow:
    """Rows a variant saw over ``[start, end)``, as counts over the reference bins."""
    feature_bins, prediction_bins = bin_sizes(reference)
    return DriftWindow(
        start=start,
        end=end,
        features=_bins(samples, "ondeck_feature_bin_total", match, "feature", feature_bins),
        prediction=_bins(samples, "ondeck_prediction_bin_total", match, "output", prediction_bins),
    )
