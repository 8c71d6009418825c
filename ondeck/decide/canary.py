"""Canary analysis in Argo Rollouts' vocabulary: an analysis template, measurements, a run verdict.

An :class:`AnalysisTemplate` lists metrics with their success conditions; every ``interval`` the
caller folds one :class:`~ondeck.decide.types.CanaryWindow` (stable and canary over the same window)
into the run with :meth:`CanaryAnalysis.step`. Each measurement compares the canary with the stable
variant on everything seen since the run started, so evidence grows with every interval:

* ``error_rate`` (``maxIncrease`` over stable, optional absolute ``max``), ``accuracy`` from feedback
  (``maxDecrease``, optional ``min``) and ``ratio`` (a custom success/trial pair, ``margin``): a
  one-sided test that the canary is worse than stable by more than the allowance;
* ``latency``: the canary's share of requests slower than ``maxRatio`` times the stable's
  ``quantile`` against the stable's share above its quantile (read from histogram buckets), the
  same one-sided test of two proportions;
* ``prediction_drift``: the prediction-bin counts of the two variants, a two-sample test against a
  tolerance of ``maxEffect`` (chi distance).

A measurement is **Failed** when the canary is worse than allowed with evidence at level
``alpha / (len(metrics) * count)`` (a run has a known number of looks, so Bonferroni over them is
tighter here than an open-ended confidence sequence), **Successful** when both variants have
``minSamples`` and the canary's estimate is within the allowance, and **Inconclusive** otherwise
(too little data, or worse-looking but not yet proven): no data is never a pass. As in Argo, a metric fails when its failed
measurements exceed ``failureLimit`` and is inconclusive when its inconclusive ones exceed
``inconclusiveLimit``; unlike Argo, a metric only succeeds if its last (``count``-th) measurement,
the one with the most data, is Successful. The run is Failed (roll back) if any metric failed,
Inconclusive (pause for a person) if any is inconclusive, Successful (promote) when all succeeded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ondeck.decide import stats
from ondeck.decide.types import CanaryWindow, Decision, VariantStats, number

SUCCESSFUL, FAILED, INCONCLUSIVE, RUNNING = "Successful", "Failed", "Inconclusive", "Running"
ACTIONS = {RUNNING: "continue", SUCCESSFUL: "promote", FAILED: "rollback", INCONCLUSIVE: "pause"}

# kind -> (field holding its allowance, default allowance, optional absolute-bound field, default minSamples)
KINDS: dict[str, tuple[str, float, str | None, int]] = {
    "error_rate": ("maxIncrease", 0.01, "max", 200),
    "accuracy": ("maxDecrease", 0.02, "min", 100),
    "ratio": ("margin", 0.01, None, 100),
    "latency": ("maxRatio", 1.2, None, 200),
    "prediction_drift": ("maxEffect", 0.1, None, 200),
}
_EXTRA = {"latency": {"quantile"}, "prediction_drift": {"output"}, "ratio": {"series", "higherIsBetter"}}
_COMMON = {"name", "kind", "minSamples", "failureLimit", "inconclusiveLimit"}


@dataclass(frozen=True)
class Metric:
    """One metric of a template; field names follow the manifest (camelCase there)."""

    name: str
    kind: str
    allowance: float
    bound: float | None = None
    min_samples: int = 100
    failure_limit: int | None = None
    inconclusive_limit: int | None = None
    quantile: float = 0.99
    output: str = "score"
    series: str = ""
    higher_is_better: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metric":
        name, kind = d.get("name"), d.get("kind")
        if not name or kind not in KINDS:
            raise ValueError(f"analysis metric {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        allowance_key, allowance_default, bound_key, min_default = KINDS[kind]
        allowed = _COMMON | {allowance_key} | ({bound_key} if bound_key else set()) | _EXTRA.get(kind, set())
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"analysis metric {name!r} ({kind}): unknown field(s) {', '.join(sorted(unknown))}; "
                             f"allowed: {', '.join(sorted(allowed))}")

        def num(key: str, default: Any = None) -> Any:  # an absent or null field takes the default
            value = default if d.get(key) is None else d[key]
            return None if value is None else number(value, f"analysis metric {name!r}: {key}")

        m = cls(
            name=str(name), kind=kind, allowance=num(allowance_key, allowance_default),
            bound=num(bound_key) if bound_key else None,
            min_samples=int(num("minSamples", min_default)),
            failure_limit=None if d.get("failureLimit") is None else int(num("failureLimit")),
            inconclusive_limit=None if d.get("inconclusiveLimit") is None else int(num("inconclusiveLimit")),
            quantile=num("quantile", 0.99), output=str(d.get("output", "score")),
            series=str(d.get("series", "")), higher_is_better=bool(d.get("higherIsBetter", True)),
        )
        if kind == "ratio" and not m.series:
            raise ValueError(f"analysis metric {name!r}: a ratio metric needs 'series'")
        if kind == "latency" and not (0 < m.quantile < 1 and m.allowance >= 1):
            raise ValueError(f"analysis metric {name!r}: quantile must be in (0, 1) and maxRatio >= 1")
        if kind != "latency" and m.allowance < 0:
            raise ValueError(f"analysis metric {name!r}: {allowance_key} must be >= 0")
        if m.min_samples < 1:
            raise ValueError(f"analysis metric {name!r}: minSamples must be >= 1")
        return m

    def to_dict(self) -> dict[str, Any]:
        allowance_key, _, bound_key, _ = KINDS[self.kind]
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, allowance_key: self.allowance,
                             "minSamples": self.min_samples}
        if bound_key and self.bound is not None:
            d[bound_key] = self.bound
        for key, value in (("failureLimit", self.failure_limit), ("inconclusiveLimit", self.inconclusive_limit)):
            if value is not None:
                d[key] = value
        d.update({"latency": {"quantile": self.quantile}, "prediction_drift": {"output": self.output},
                  "ratio": {"series": self.series, "higherIsBetter": self.higher_is_better}}.get(self.kind, {}))
        return d


@dataclass(frozen=True)
class AnalysisTemplate:
    """``interval`` seconds between measurements, ``count`` measurements per run, the run-wide
    ``failureLimit`` / ``inconclusiveLimit`` (a metric may override them; an unset
    ``inconclusiveLimit`` tolerates inconclusive measurements before the last one) and ``alpha``,
    the chance that a canary as good as stable is rolled back by this run."""

    metrics: tuple[Metric, ...]
    interval: float = 60.0
    count: int = 10
    failure_limit: int = 0
    inconclusive_limit: int | None = None
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("an analysis template needs at least one metric")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"analysis metric names must be unique, got {names}")
        if self.count < 1 or self.interval <= 0 or not 0 < self.alpha < 1:
            raise ValueError("analysis template: count >= 1, interval > 0 and 0 < alpha < 1 are required")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnalysisTemplate":
        unknown = set(d) - {"metrics", "interval", "count", "failureLimit", "inconclusiveLimit", "alpha"}
        if unknown:
            raise ValueError(f"analysis template: unknown field(s) {', '.join(sorted(unknown))}")

        def num(key: str, default: Any) -> Any:  # an absent or null field takes the default
            value = default if d.get(key) is None else d[key]
            return None if value is None else number(value, f"analysis template: {key}")

        limit = num("inconclusiveLimit", None)
        return cls(tuple(Metric.from_dict(m) for m in d.get("metrics", [])), num("interval", 60),
                   int(num("count", 10)), int(num("failureLimit", 0)), None if limit is None else int(limit),
                   num("alpha", 0.01))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"metrics": [m.to_dict() for m in self.metrics], "interval": self.interval,
                             "count": self.count, "failureLimit": self.failure_limit, "alpha": self.alpha}
        if self.inconclusive_limit is not None:
            d["inconclusiveLimit"] = self.inconclusive_limit
        return d


@dataclass(frozen=True)
class CanaryAnalysis:
    """One analysis run. Pure: ``state, decision = analysis.step(state, window)``."""

    template: AnalysisTemplate

    def initial_state(self) -> dict[str, Any]:
        return {"phase": RUNNING, "measurements": 0, "stable": VariantStats().to_dict(),
                "canary": VariantStats().to_dict(),
                "metrics": {m.name: {"phase": RUNNING, SUCCESSFUL: 0, FAILED: 0, INCONCLUSIVE: 0}
                            for m in self.template.metrics},
                "last": None}

    def step(self, state: dict[str, Any], window: CanaryWindow | dict[str, Any]) -> tuple[dict[str, Any], Decision]:
        """Measure once more; a finished run keeps returning its verdict and ignores new windows."""
        if state["phase"] != RUNNING:
            return state, Decision(**state["last"])
        if isinstance(window, dict):
            window = CanaryWindow.from_dict(window)
        t = self.template
        stable = VariantStats.from_dict(state["stable"]) + window.stable
        canary = VariantStats.from_dict(state["canary"]) + window.canary
        k = state["measurements"] + 1
        # Bonferroni over metrics and over the run's count looks: a canary as good as stable fails
        # this run with probability at most alpha.
        alpha = t.alpha / (len(t.metrics) * t.count)
        metrics_state, evidence = {}, {}
        for m in t.metrics:
            phase, ev = measure(m, stable, canary, alpha)
            ms = dict(state["metrics"][m.name])
            ms[phase] += 1
            ms["phase"] = _metric_phase(m, t, ms, phase, k)
            metrics_state[m.name] = ms
            counts = {p: ms[p] for p in (SUCCESSFUL, FAILED, INCONCLUSIVE)}
            evidence[m.name] = {"measurement": phase, "phase": ms["phase"], **counts, **ev}
        phases = {ms["phase"] for ms in metrics_state.values()}
        run = FAILED if FAILED in phases else INCONCLUSIVE if INCONCLUSIVE in phases else (
            SUCCESSFUL if phases == {SUCCESSFUL} else RUNNING)
        decision = Decision(ACTIONS[run], _reason(run, evidence, k, t.count),
                            {"phase": run, "measurement": k, "count": t.count, "window": [window.start, window.end],
                             "metrics": evidence})
        new = {"phase": run, "measurements": k, "stable": stable.to_dict(), "canary": canary.to_dict(),
               "metrics": metrics_state, "last": decision.to_dict()}
        return new, decision


def _metric_phase(m: Metric, t: AnalysisTemplate, counts: dict[str, Any], phase: str, k: int) -> str:
    failure_limit = t.failure_limit if m.failure_limit is None else m.failure_limit
    inconclusive_limit = m.inconclusive_limit if m.inconclusive_limit is not None else t.inconclusive_limit
    if counts[FAILED] > failure_limit:
        return FAILED
    if inconclusive_limit is not None and counts[INCONCLUSIVE] > inconclusive_limit:
        return INCONCLUSIVE
    # The last measurement has the most data: it alone decides a metric that stayed within its limits.
    return phase if k >= t.count else RUNNING


def _reason(run: str, evidence: dict[str, Any], k: int, count: int) -> str:
    def names(phase: str) -> str:
        return ", ".join(f"{n} ({e.get('summary', e['measurement'])})" for n, e in evidence.items() if e["phase"] == phase)

    if run == FAILED:
        return f"canary failed analysis at measurement {k}/{count}: {names(FAILED)}"
    if run == INCONCLUSIVE:
        return f"analysis inconclusive at measurement {k}/{count}: {names(INCONCLUSIVE)}"
    if run == SUCCESSFUL:
        return f"canary passed all {count} measurements"
    return f"measurement {k}/{count}: " + ", ".join(f"{n} {e['measurement']}" for n, e in evidence.items())


def measure(m: Metric, stable: VariantStats, canary: VariantStats, alpha: float) -> tuple[str, dict[str, Any]]:
    """One measurement of one metric on cumulative stats, at level ``alpha``: (phase, evidence)."""
    if m.kind == "latency":
        return _measure_latency(m, stable, canary, alpha)
    if m.kind == "prediction_drift":
        return _measure_prediction(m, stable, canary, alpha)
    return _measure_proportion(m, stable, canary, alpha)


def _bad_events(m: Metric, v: VariantStats) -> tuple[float, float]:
    """(bad events, trials): every proportion metric is turned into "higher is worse"."""
    if m.kind == "error_rate":
        return v.errors, v.requests
    if m.kind == "accuracy":
        return v.feedback_total - v.feedback_correct, v.feedback_total
    successes, trials = v.ratios.get(m.series, (0.0, 0.0))
    return (trials - successes, trials) if m.higher_is_better else (successes, trials)


def _measure_proportion(m: Metric, stable: VariantStats, canary: VariantStats, alpha: float) -> tuple[str, dict[str, Any]]:
    xs, ns = _bad_events(m, stable)
    xc, nc = _bad_events(m, canary)
    flip = m.kind == "accuracy" or (m.kind == "ratio" and m.higher_is_better)

    def shown(bad_rate: float) -> float:  # report in the metric's own terms (accuracy, not error)
        return round(1 - bad_rate if flip else bad_rate, 6)

    ev: dict[str, Any] = {"stable": {"samples": ns, "value": shown(xs / ns) if ns else None},
                          "canary": {"samples": nc, "value": shown(xc / nc) if nc else None},
                          "allowance": m.allowance}
    if ns < m.min_samples or nc < m.min_samples:
        ev["summary"] = f"{min(ns, nc):g} samples < minSamples {m.min_samples}"
        return INCONCLUSIVE, ev
    # Split alpha between the comparison with stable and the absolute bound, when there is one.
    a = alpha / 2 if m.bound is not None else alpha
    test = stats.excess_test(xs, ns, xc, nc, m.allowance, a)
    ev["degradation"] = {k: round(v, 6) for k, v in test.items()}
    failed = test["p_value"] < a
    within = test["estimate"] <= m.allowance
    if m.bound is not None:
        bad_bound = 1 - m.bound if flip else m.bound
        absolute = stats.excess_test(0, 0, xc, nc, bad_bound, a)
        ev["bound"] = {"value": m.bound, "p_value": round(absolute["p_value"], 8)}
        failed = failed or absolute["p_value"] < a
        within = within and xc / nc <= bad_bound
    if failed:
        ev["summary"] = f"canary {ev['canary']['value']} vs stable {ev['stable']['value']}, beyond the allowance"
        return FAILED, ev
    if within:
        return SUCCESSFUL, ev
    ev["summary"] = f"canary {ev['canary']['value']} vs stable {ev['stable']['value']}, not yet conclusive"
    return INCONCLUSIVE, ev


def _measure_latency(m: Metric, stable: VariantStats, canary: VariantStats, alpha: float) -> tuple[str, dict[str, Any]]:
    ns = stable.latency[-1][1] if stable.latency else 0.0
    nc = canary.latency[-1][1] if canary.latency else 0.0
    ev: dict[str, Any] = {"stable": {"samples": ns}, "canary": {"samples": nc}, "quantile": m.quantile,
                          "maxRatio": m.allowance}
    if ns < m.min_samples or nc < m.min_samples:
        ev["summary"] = f"{min(ns, nc):g} samples < minSamples {m.min_samples}"
        return INCONCLUSIVE, ev
    qs = stats.histogram_quantile(m.quantile, list(stable.latency))
    qc = stats.histogram_quantile(m.quantile, list(canary.latency))
    # "canary's q-quantile <= maxRatio x stable's" <=> the canary's share above maxRatio x stable's
    # quantile is at most the stable's share above its quantile: two proportions again.
    above_s = stats.share_above(qs, list(stable.latency))
    above_c = stats.share_above(m.allowance * qs, list(canary.latency))
    test = stats.excess_test(above_s * ns, ns, above_c * nc, nc, 0.0, alpha)
    ev["stable"].update(value=round(qs, 6), share_above=round(above_s, 6))
    ev["canary"].update(value=round(qc, 6), share_above=round(above_c, 6))
    ev["ratio"] = round(qc / qs, 4) if qs > 0 else None
    ev["excess_share"] = {k: round(v, 6) for k, v in test.items()}
    if test["p_value"] < alpha:
        ev["summary"] = f"p{m.quantile * 100:g} {qc:.4g}s vs {qs:.4g}s, beyond x{m.allowance:g}"
        return FAILED, ev
    if above_c <= above_s:
        return SUCCESSFUL, ev
    ev["summary"] = f"p{m.quantile * 100:g} {qc:.4g}s vs {qs:.4g}s, not yet conclusive"
    return INCONCLUSIVE, ev


def _measure_prediction(m: Metric, stable: VariantStats, canary: VariantStats, alpha: float) -> tuple[str, dict[str, Any]]:
    s, c = stable.prediction.get(m.output, []), canary.prediction.get(m.output, [])
    ns, nc = sum(s), sum(c)
    ev: dict[str, Any] = {"stable": {"samples": ns}, "canary": {"samples": nc}, "output": m.output,
                          "maxEffect": m.allowance}
    if ns < m.min_samples or nc < m.min_samples:
        ev["summary"] = f"{min(ns, nc):g} samples < minSamples {m.min_samples}"
        return INCONCLUSIVE, ev
    if len(s) != len(c):
        raise ValueError(f"prediction {m.output}: stable has {len(s)} bins, canary {len(c)}")
    stat, pval, effect = stats.two_sample_ball_test(s, c, m.allowance)
    ev.update(statistic=round(stat, 4), p_value=pval, alpha=alpha, chi_distance=round(effect, 6))
    if pval < alpha:
        ev["summary"] = f"prediction {m.output} shifted by chi distance {effect:.3f} > {m.allowance:g}"
        return FAILED, ev
    if effect <= m.allowance:
        return SUCCESSFUL, ev
    ev["summary"] = f"prediction {m.output} chi distance {effect:.3f}, not yet conclusive"
    return INCONCLUSIVE, ev
