"""The plain data that goes into and comes out of every decision.

Inputs are windows of counters, as Prometheus ``increase(...[w])`` or a local scrape gives them; the
output is a :class:`Decision`. Everything converts to and from JSON-ready dicts (``to_dict`` /
``from_dict``) so that the operator can keep it in a status field and the local runtime in a file.
Times are seconds (any epoch): the decision code never reads a clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    """What to do, why in one sentence, and the numbers behind it."""

    action: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "evidence": self.evidence}


def number(value: Any, what: str) -> float:
    """``float(value)``, or a ValueError that names the field."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


def required(d: dict[str, Any], key: str, what: str) -> Any:
    """``d[key]``, or a ValueError that names the missing field."""
    if not isinstance(d, dict) or key not in d:
        raise ValueError(f"{what}: missing '{key}'")
    return d[key]


def _counts(values: Any, what: str) -> list[float]:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{what}: counts must be a list, got {type(values).__name__}")
    out = [number(v, what) for v in values]
    if any(not math.isfinite(v) or v < 0 for v in out):
        raise ValueError(f"{what}: counts must be finite and non-negative, got {values!r}")
    return out


def _count(value: Any, what: str) -> float:
    return _counts([value], what)[0]


@dataclass(frozen=True)
class DriftWindow:
    """Rows seen in ``[start, end)``: per feature and per prediction output, counts over the
    reference bins (``ondeck_feature_bin_total`` / ``ondeck_prediction_bin_total`` increases)."""

    start: float
    end: float
    features: dict[str, list[float]]
    prediction: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DriftWindow":
        return cls(number(required(d, "start", "window"), "start"), number(required(d, "end", "window"), "end"),
                   {k: _counts(v, f"feature {k}") for k, v in d.get("features", {}).items()},
                   {k: _counts(v, f"prediction {k}") for k, v in d.get("prediction", {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "features": self.features, "prediction": self.prediction}


@dataclass(frozen=True)
class VariantStats:
    """One variant's counters over a window, for canary analysis.

    ``latency`` holds Prometheus histogram buckets: ``(le, cumulative count)`` pairs, ascending,
    the last ``le`` being ``inf`` (``ondeck_request_duration_seconds_bucket`` increases).
    ``prediction`` maps an output (``class``, ``score``) to counts over its reference bins.
    ``ratios`` holds custom success/trial pairs for ``ratio`` metrics (e.g. conversions).
    """

    requests: float = 0
    errors: float = 0
    latency: tuple[tuple[float, float], ...] = ()
    prediction: dict[str, list[float]] = field(default_factory=dict)
    feedback_total: float = 0
    feedback_correct: float = 0
    ratios: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantStats":
        latency = d.get("latency") or ()
        if isinstance(latency, dict):  # {"0.1": 12, "+Inf": 40} as JSON has it
            latency = latency.items()
        buckets = tuple(sorted((number(le, "latency bucket le"), _count(c, "latency bucket")) for le, c in latency))
        if buckets and not math.isinf(buckets[-1][0]):
            raise ValueError("latency buckets must end with the +Inf bucket")
        if any(b[1] < a[1] for a, b in zip(buckets, buckets[1:])):
            raise ValueError("latency buckets must be cumulative (non-decreasing counts)")
        ratios = {k: (_count(v[0], f"ratio {k}"), _count(v[1], f"ratio {k}")) for k, v in d.get("ratios", {}).items()}
        stats = cls(_count(d.get("requests", 0), "requests"), _count(d.get("errors", 0), "errors"), buckets,
                    {k: _counts(v, f"prediction {k}") for k, v in d.get("prediction", {}).items()},
                    _count(d.get("feedback_total", 0), "feedback_total"),
                    _count(d.get("feedback_correct", 0), "feedback_correct"), ratios)
        if stats.errors > stats.requests or stats.feedback_correct > stats.feedback_total:
            raise ValueError("errors exceed requests or correct feedback exceeds feedback total")
        return stats

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "latency": [[("+Inf" if math.isinf(le) else le), c] for le, c in self.latency],
                "prediction": self.prediction, "feedback_total": self.feedback_total,
                "feedback_correct": self.feedback_correct, "ratios": {k: list(v) for k, v in self.ratios.items()}}

    def __add__(self, other: "VariantStats") -> "VariantStats":
        return VariantStats(
            self.requests + other.requests, self.errors + other.errors,
            _add_buckets(self.latency, other.latency), _add_maps(self.prediction, other.prediction),
            self.feedback_total + other.feedback_total, self.feedback_correct + other.feedback_correct,
            {k: tuple(a + b for a, b in zip(self.ratios.get(k, (0, 0)), other.ratios.get(k, (0, 0))))
             for k in {**self.ratios, **other.ratios}},
        )


def _add_buckets(a: tuple, b: tuple) -> tuple:
    if not a or not b:
        return a or b
    if [le for le, _ in a] != [le for le, _ in b]:
        raise ValueError("latency buckets differ between windows")
    return tuple((le, ca + cb) for (le, ca), (_, cb) in zip(a, b))


def _add_maps(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    out = {k: list(v) for k, v in a.items()}
    for k, v in b.items():
        if k in out and len(out[k]) != len(v):
            raise ValueError(f"prediction {k}: bin counts differ in length between windows")
        out[k] = [x + y for x, y in zip(out[k], v)] if k in out else list(v)
    return out


@dataclass(frozen=True)
class CanaryWindow:
    """Stable and canary over the same window ``[start, end)``."""

    start: float
    end: float
    stable: VariantStats
    canary: VariantStats

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CanaryWindow":
        return cls(number(required(d, "start", "window"), "start"), number(required(d, "end", "window"), "end"),
                   VariantStats.from_dict(required(d, "stable", "canary window")),
                   VariantStats.from_dict(required(d, "canary", "canary window")))

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "stable": self.stable.to_dict(), "canary": self.canary.to_dict()}


@dataclass(frozen=True)
class ABWindow:
    """New trials and successes per arm over ``[start, end)``: ``{"control": (trials, successes), ...}``."""

    start: float
    end: float
    arms: dict[str, tuple[float, float]]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ABWindow":
        arms = {}
        for name, v in required(d, "arms", "A/B window").items():
            trials, successes = (v["trials"], v["successes"]) if isinstance(v, dict) else v
            trials, successes = _count(trials, f"arm {name}"), _count(successes, f"arm {name}")
            if successes > trials:
                raise ValueError(f"arm {name}: {successes:g} successes out of {trials:g} trials")
            arms[name] = (trials, successes)
        return cls(number(required(d, "start", "window"), "start"), number(required(d, "end", "window"), "end"), arms)

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end,
                "arms": {k: {"trials": t, "successes": s} for k, (t, s) in self.arms.items()}}


@dataclass(frozen=True)
class AccuracyPoint:
    """Feedback joined in the window ending at ``time``: ``correct`` of ``total`` were right."""

    time: float
    total: float
    correct: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AccuracyPoint":
        point = cls(number(required(d, "time", "accuracy point"), "time"),
                    _count(required(d, "total", "accuracy point"), "total"),
                    _count(required(d, "correct", "accuracy point"), "correct"))
        if point.correct > point.total:
            raise ValueError(f"{point.correct:g} correct out of {point.total:g}")
        return point

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "total": self.total, "correct": self.correct}
