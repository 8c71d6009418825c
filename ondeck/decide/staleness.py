"""Staleness: is live accuracy heading below the bar, and should the model be retrained?

A weighted linear trend is fitted to the live-accuracy series (each window weighted by its feedback
count, with over-dispersion estimated from the residuals so that day-to-day wobble widens the
interval instead of faking precision). From it: today's level, the slope, and the time until the
line crosses the bar. The recommendation is ``retrain`` when drift was detected, when the level is
already below the bar with confidence, or when a significant decline reaches the bar within the
``horizon``; ``keep`` otherwise; ``insufficient_data`` when there is too little feedback to say.

A trend is only read from a series spanning at least ``min_span`` (a day by default): the controllers
look every few minutes, and a slope fitted to minutes of wobble, extrapolated to days, would call
for a retrain by chance sooner or later. Below that span only the level is judged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from ondeck.decide.stats import normal_quantile
from ondeck.decide.types import AccuracyPoint, Decision, number

DAY = 86400.0


@dataclass(frozen=True)
class StalenessPolicy:
    """``bar``: the lowest acceptable accuracy; ``horizon``: how far ahead (seconds) a predicted
    crossing triggers a retrain; ``alpha``: one-sided level for "below the bar" and "declining"."""

    bar: float
    horizon: float = 7 * DAY
    alpha: float = 0.05
    min_feedback: int = 200
    min_points: int = 3
    min_span: float = DAY

    def __post_init__(self) -> None:
        if not 0 < self.bar < 1 or self.horizon <= 0 or not 0 < self.alpha < 1:
            raise ValueError("staleness policy: 0 < bar < 1, horizon > 0 and 0 < alpha < 1 are required")
        if self.min_points < 3:
            raise ValueError("staleness policy: min_points must be >= 3 to fit a trend with its uncertainty")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StalenessPolicy":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"staleness policy: unknown field(s) {', '.join(sorted(unknown))}")
        values = {k: number(v, f"staleness policy: {k}") for k, v in d.items()}
        for key in ("min_feedback", "min_points"):
            if key in values:
                values[key] = int(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_staleness(series: Iterable[AccuracyPoint | dict[str, Any]], policy: StalenessPolicy,
                     drift: bool = False, now: float | None = None) -> Decision:
    """Recommendation from the accuracy series (any order), optionally with a drift verdict.

    ``now`` (seconds, default: the latest point) is where "today's level" is read off the trend.
    """
    points = sorted((p if isinstance(p, AccuracyPoint) else AccuracyPoint.from_dict(p) for p in series),
                    key=lambda p: p.time)
    points = [p for p in points if p.total > 0]
    total = sum(p.total for p in points)
    evidence: dict[str, Any] = {"bar": policy.bar, "points": len(points), "feedback": total, "drift": drift}
    if len(points) < policy.min_points or total < policy.min_feedback:
        if drift:
            return Decision("retrain", "drift detected (too little feedback to judge accuracy)", evidence)
        return Decision("insufficient_data", f"too little feedback to judge accuracy ({len(points)} windows, "
                                             f"{total:g} labels; need {policy.min_points} and {policy.min_feedback})",
                        evidence)
    now = points[-1].time if now is None else now
    fit = _trend(points, now)
    z = normal_quantile(1 - policy.alpha)
    level, slope = fit["level"], fit["slope_per_day"]
    level_upper = level + z * fit["level_se"]
    slope_upper = slope + z * fit["slope_se"]
    eta = _days_to_bar(level, slope, policy.bar)
    evidence.update(
        level=round(level, 6), level_upper=round(level_upper, 6), slope_per_day=round(slope, 6),
        slope_upper=round(slope_upper, 6), dispersion=round(fit["dispersion"], 3),
        days_to_bar=_rounded(eta),
        days_to_bar_range=[_rounded(_days_to_bar(level, slope - z * fit["slope_se"], policy.bar)),
                           _rounded(_days_to_bar(level, slope_upper, policy.bar))],
    )
    horizon_days = policy.horizon / DAY
    if drift:
        return Decision("retrain", f"drift detected; accuracy now {level:.3f} (bar {policy.bar:g})", evidence)
    if level_upper < policy.bar:
        return Decision("retrain", f"accuracy {level:.3f} is below the bar {policy.bar:g} "
                                   f"(upper bound {level_upper:.3f})", evidence)
    span = points[-1].time - points[0].time
    if span < policy.min_span:
        evidence["span"] = span
        return Decision("keep", f"accuracy {level:.3f} (bar {policy.bar:g}); a trend needs {policy.min_span:g}s of "
                                f"feedback, have {span:g}s", evidence)
    if slope_upper < 0 and eta < horizon_days:
        return Decision("retrain", f"accuracy {level:.3f} falls {-slope:.4f}/day and reaches the bar "
                                   f"{policy.bar:g} in about {eta:.1f} days (< {horizon_days:g})", evidence)
    if slope_upper < 0:
        return Decision("keep", f"accuracy {level:.3f} declines {-slope:.4f}/day; bar {policy.bar:g} in about "
                                f"{eta:.1f} days", evidence)
    return Decision("keep", f"accuracy {level:.3f}, no significant decline (bar {policy.bar:g})", evidence)


def _trend(points: list[AccuracyPoint], now: float) -> dict[str, float]:
    """Weighted least squares of accuracy on time (days, centred on ``now``)."""
    t = np.array([(p.time - now) / DAY for p in points])
    n = np.array([p.total for p in points])
    y = np.array([p.correct / p.total for p in points])
    pbar = float((y * n).sum() / n.sum())
    base_var = max(pbar * (1 - pbar), 1e-6)  # binomial variance of one label
    x = np.column_stack([np.ones_like(t), t])
    xtwx = x.T @ (x * n[:, None])
    coef = np.linalg.lstsq(xtwx, x.T @ (n * y), rcond=None)[0]
    resid = y - x @ coef
    # Over-dispersion: residual variance beyond the binomial's, never below it.
    dispersion = max(1.0, float((n * resid * resid).sum() / (len(points) - 2) / base_var)) if len(points) > 2 else 1.0
    cov = np.linalg.pinv(xtwx) * base_var * dispersion
    return {"level": float(coef[0]), "slope_per_day": float(coef[1]), "level_se": math.sqrt(max(cov[0, 0], 0)),
            "slope_se": math.sqrt(max(cov[1, 1], 0)), "dispersion": dispersion}


def _days_to_bar(level: float, slope: float, bar: float) -> float:
    if level <= bar:
        return 0.0
    return (level - bar) / -slope if slope < 0 else math.inf


def _rounded(days: float) -> float | None:
    return None if math.isinf(days) else round(days, 3)
