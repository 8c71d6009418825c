"""Drift of each feature and of the prediction against the package's reference profile.

Two entry points, one meaning of "drift":

* :class:`DriftDetector` watches a stream of windows of bin counts. Its expected number of false
  alarms over any period ``T`` is at most ``T / policy.false_alarm_every``, however much traffic flows
  and however often it looks, across all features and prediction outputs together.
* :func:`check_counts` is the one-shot version for a file (``ondeck drift``): a fixed-sample test
  per feature, Holm-corrected across features.

Both test the same null: *the live shares are within chi distance ``radius`` of the reference shares*,
where ``radius = min_effect + allowance for the reference's own sampling noise``
(:func:`ondeck.decide.stats.reference_allowance`). A shift below the minimum effect is never drift,
however much traffic shows it. The maths is in docs/decisions.md.

How the detector works. Each watched column (a feature or a prediction output) carries a handful
of *candidate alternatives*: fixed ones (location and spread shifts of a numeric column, a larger
share for each level of a categorical one) and adaptive ones pointing from the reference towards
the recent live shares (an exponentially weighted count with time constant ``memory``, at several
distances). Each candidate bets on every window with factors valid against the whole tolerance ball
(:func:`ondeck.decide.stats.ball_log_bets`) and keeps an e-CUSUM ``M = e * max(M, 1)``. An alarm is
raised when any ``M`` reaches ``A * N`` (``A`` looks per ``false_alarm_every``, ``N`` candidates in
all); the alarmed column's CUSUMs then restart. Averaging the Shiryaev-Roberts statistics of all
candidates gives a supermartingale argument for the bound above (Shin, Ramdas & Rinaldo 2023).

A column stays *drifting* from its first alarm until ``recovery`` seconds pass without another; a
column that keeps drifting re-alarms within a window or two after each restart.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ondeck.decide import stats
from ondeck.decide.types import Decision, DriftWindow, number

DAY = 86400.0
# Adaptive candidates sit at these multiples of the ball's radius along the recent direction.
ADAPTIVE_DISTANCES = (1.25, 1.6, 2.5, 4.0)
# ... along two directions: the previous window's shares (fast) and the recent shares (steady).
ADAPTIVE_CANDIDATES = 2 * len(ADAPTIVE_DISTANCES)
# Fixed candidates: distances for the location, spread and level-share tilts.
FIXED_DISTANCES = (1.25, 1.6, 2.5, 4.0)
SECTIONS = ("features", "prediction")


@dataclass(frozen=True)
class DriftPolicy:
    """How sensitive drift detection is, and what it may cost in false alarms.

    ``min_effect`` is Cohen's *w* over the reference bins (chi distance; 0.1 is "small", PSI is about
    ``w**2``). ``false_alarm_every``: the stream detector raises at most one false alarm per this many
    seconds on average, for the whole model, looking once per ``interval``. ``memory``: time constant
    of the recent shares the adaptive bets follow. ``recovery``: seconds without an alarm that end a
    drift episode. ``alpha``: level of the one-shot file check.
    """

    interval: float = 300.0
    false_alarm_every: float = 365 * DAY
    min_effect: float = 0.1
    reference_alpha: float = 0.001
    memory: float = 1800.0
    recovery: float = 3600.0
    alpha: float = 0.01

    def __post_init__(self) -> None:
        for name in ("interval", "false_alarm_every", "memory", "recovery"):
            if not getattr(self, name) > 0:
                raise ValueError(f"drift policy: {name} must be positive")
        if not 0 <= self.min_effect < 2:
            raise ValueError("drift policy: min_effect must be in [0, 2)")
        for name in ("reference_alpha", "alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"drift policy: {name} must be in (0, 1)")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DriftPolicy":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"drift policy: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**{k: number(v, f"drift policy: {k}") for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Column:
    """One watched column: its smoothed reference shares and the radius of its tolerance ball."""

    section: str
    name: str
    p: np.ndarray
    radius: float
    centres: np.ndarray | None          # numeric columns: bin centres in reference-std units

    @property
    def label(self) -> str:
        return self.name if self.section == "features" else f"prediction {self.name}"

    def effect(self, counts: np.ndarray) -> dict[str, float]:
        """Effect sizes of ``counts`` against the reference (for people; the test uses the ball)."""
        q = stats.shares_of(counts, self.p)
        out = {"chi_distance": round(stats.chi_distance(q, self.p), 6), "psi": round(stats.psi(q, self.p), 6)}
        if self.centres is not None:
            out["wasserstein_std"] = round(stats.binned_wasserstein(q, self.p, self.centres), 6)
        return out

    def adaptive_bets(self, *histories: np.ndarray) -> np.ndarray:
        """Bets pointing from the reference towards each history's shares, at several distances."""
        alts = []
        for counts in histories:
            q = stats.shares_of(counts, self.p, prior_rows=float(self.p.size))
            dist = stats.chi_distance(q, self.p)
            if counts.sum() <= 0 or dist <= 0:
                continue
            unit = (q - self.p) / dist
            for k in ADAPTIVE_DISTANCES:
                a = np.maximum(self.p + k * self.radius * unit, 1e-3 * self.p)
                alts.append(a / a.sum())
        bets = np.zeros((len(histories) * len(ADAPTIVE_DISTANCES), self.p.size))
        if alts:
            bets[: len(alts)] = stats.ball_log_bets(np.array(alts), self.p, self.radius)
        return bets


def _columns(reference: dict[str, Any], policy: DriftPolicy) -> list[Column]:
    cols = []
    for section, profiles in (("features", reference.get("features", {})), ("prediction", reference.get("prediction", {}))):
        for name, prof in profiles.items():
            shares = np.asarray(prof["bin_shares"], dtype=np.float64)
            rows = int(prof.get("count", reference.get("rows", 0)))
            p = stats.smoothed_shares(shares, rows)
            radius = policy.min_effect + stats.reference_allowance(p.size, rows, policy.reference_alpha)
            centres = None
            if prof.get("kind") == "numeric" and prof.get("std", 0) > 0:
                centres = (stats.bin_centres(prof["bin_edges"]) - prof["mean"]) / prof["std"]
            cols.append(Column(section, name, p, radius, centres))
    if not cols:
        raise ValueError("the reference profile has no features")
    return cols


def _fixed_bets(c: Column) -> np.ndarray:
    """Log bets (candidates x bins) on the shifts worth watching from the first window on."""
    p = c.p
    if p.size < 2:
        return np.zeros((0, p.size))
    if c.centres is not None:
        z = c.centres
        spread = z * z - p @ (z * z)
        directions = [z, -z, spread, -spread]
    else:
        directions = list(np.eye(p.size))
    alts = [a for d in directions for k in FIXED_DISTANCES if (a := stats.tilt(p, d, k * c.radius)) is not None]
    return stats.ball_log_bets(np.array(alts), p, c.radius) if alts else np.zeros((0, p.size))


class DriftDetector:
    """The stream detector for one package's reference profile (``reference.json`` as a dict).

    Pure: ``state, decision = detector.step(state, window)``; ``state`` is JSON-ready plain data
    (keep it anywhere, hand it back unchanged). Build once per reference and policy.
    """

    def __init__(self, reference: dict[str, Any], policy: DriftPolicy | None = None):
        self.policy = policy or DriftPolicy()
        self.columns = _columns(reference, self.policy)
        self.fixed_bets = {(c.section, c.name): _fixed_bets(c) for c in self.columns}
        candidates = sum(b.shape[0] + ADAPTIVE_CANDIDATES for b in self.fixed_bets.values())
        looks = self.policy.false_alarm_every / self.policy.interval
        # Alarm when one candidate's CUSUM reaches looks * candidates (see the module docstring).
        self.log_threshold = math.log(looks) + math.log(candidates)

    def initial_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"looks": 0, "alarms": 0, "episodes": 0, "last_end": None}
        for section in SECTIONS:
            state[section] = {}
        for c in self.columns:
            state[c.section][c.name] = {
                "log_m": [0.0] * (self.fixed_bets[(c.section, c.name)].shape[0] + ADAPTIVE_CANDIDATES),
                "recent": [0.0] * c.p.size,
                "last": [0.0] * c.p.size,
                "since": None,
                "last_alarm": None,
            }
        return state

    def step(self, state: dict[str, Any], window: DriftWindow | dict[str, Any]) -> tuple[dict[str, Any], Decision]:
        """Fold one window in; returns the new state and this look's decision."""
        if isinstance(window, dict):
            window = DriftWindow.from_dict(window)
        counts = _window_counts(self.columns, window)
        duration = window.end - window.start
        decay = math.exp(-(duration if duration > 0 else self.policy.interval) / self.policy.memory)
        new: dict[str, Any] = {"looks": state["looks"] + 1, "alarms": state["alarms"],
                               "episodes": state["episodes"], "last_end": window.end}
        evidence: dict[str, Any] = {section: {} for section in SECTIONS}
        for section in SECTIONS:
            new[section] = {}
        for c in self.columns:
            old = state[c.section][c.name]
            n = counts[(c.section, c.name)]
            recent = np.asarray(old["recent"], dtype=np.float64)
            last = np.asarray(old["last"], dtype=np.float64)
            bets = np.vstack([self.fixed_bets[(c.section, c.name)], c.adaptive_bets(last, recent)])  # chosen before seeing n
            log_m = np.maximum(np.asarray(old["log_m"], dtype=np.float64), 0.0) + bets @ n
            recent = decay * recent + n
            peak = float(log_m.max())
            alarm = peak >= self.log_threshold
            since, last_alarm = old["since"], old["last_alarm"]
            started = False
            if alarm:
                new["alarms"] += 1
                if since is None:
                    since, started = window.end, True
                    new["episodes"] += 1
                last_alarm = window.end
                log_m = np.zeros_like(log_m)  # restart this column's CUSUMs
            elif since is not None and window.end - last_alarm >= self.policy.recovery:
                since = last_alarm = None
            new[c.section][c.name] = {"log_m": log_m.tolist(), "recent": recent.tolist(), "last": n.tolist(),
                                      "since": since, "last_alarm": last_alarm}
            evidence[c.section][c.name] = {
                "rows": float(n.sum()), "log_e": round(peak, 4), "alarm": alarm, "drift": since is not None,
                "since": since, "new": started, "radius": round(c.radius, 6), **c.effect(n)}
        evidence["log_threshold"] = round(self.log_threshold, 4)
        return new, self._decide(evidence)

    def _decide(self, evidence: dict[str, Any]) -> Decision:
        drifting = [(c, evidence[c.section][c.name]) for c in self.columns if evidence[c.section][c.name]["drift"]]
        if drifting:
            parts = [f"{c.label} ({'new; ' if e['new'] else ''}chi distance {e['chi_distance']:.3f} in this window, "
                     f"tolerance {e['radius']:.3f})" for c, e in drifting]
            return Decision("drift", "drift in " + ", ".join(parts), evidence)
        c, e = max(((c, evidence[c.section][c.name]) for c in self.columns), key=lambda ce: ce[1]["log_e"])
        rows = sum(evidence[c.section][c.name]["rows"] for c in self.columns if c.section == "features")
        if rows == 0:
            return Decision("no_drift", "no rows in this window: no evidence either way", evidence)
        return Decision("no_drift", f"no drift: strongest evidence on {c.label}, log e {e['log_e']:.1f} "
                                    f"< {self.log_threshold:.1f}", evidence)


def _window_counts(columns: list[Column], window: DriftWindow) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    given = {"features": window.features, "prediction": window.prediction}
    for section in SECTIONS:
        known = {c.name for c in columns if c.section == section}
        unknown = set(given[section]) - known
        if unknown:
            raise ValueError(f"window {section}: not in the reference profile: {', '.join(sorted(unknown))}")
    for c in columns:
        values = given[c.section].get(c.name)
        if values is None:  # not scraped this time: no rows, so no evidence either way
            out[(c.section, c.name)] = np.zeros(c.p.size)
            continue
        if len(values) != c.p.size:
            raise ValueError(f"{c.label}: {len(values)} bin counts, the reference has {c.p.size} bins")
        out[(c.section, c.name)] = np.asarray(values, dtype=np.float64)
    return out


def check_counts(reference: dict[str, Any], window: DriftWindow | dict[str, Any],
                 policy: DriftPolicy | None = None) -> Decision:
    """One look at one batch of counts (a file): drift per column, Holm-corrected across columns.

    Evidence per column: ``statistic`` (Pearson), ``p_value`` (against the tolerance ball),
    ``p_adjusted`` (Holm), effect sizes and ``drift``.
    """
    policy = policy or DriftPolicy()
    columns = _columns(reference, policy)
    if isinstance(window, dict):
        window = DriftWindow.from_dict(window)
    counts = _window_counts(columns, window)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for c in columns:
        n = counts[(c.section, c.name)]
        stat, pval = stats.ball_test(n, c.p, c.radius)
        results[(c.section, c.name)] = {"rows": float(n.sum()), "statistic": round(stat, 4), "p_value": pval,
                                        "radius": round(c.radius, 6), **c.effect(n)}
    adjusted = stats.holm({f"{s}/{n}": r["p_value"] for (s, n), r in results.items()})
    evidence: dict[str, Any] = {section: {} for section in SECTIONS}
    for (section, name), r in results.items():
        r["p_adjusted"] = adjusted[f"{section}/{name}"]
        r["drift"] = r["p_adjusted"] < policy.alpha
        evidence[section][name] = r
    evidence["alpha"] = policy.alpha
    drifting = [c.label for c in columns if evidence[c.section][c.name]["drift"]]
    if drifting:
        return Decision("drift", "drift in " + ", ".join(drifting), evidence)
    return Decision("no_drift", f"no column moved beyond its tolerance (Holm-adjusted p >= {policy.alpha:g})", evidence)
