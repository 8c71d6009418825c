"""False alarms, detection delays, canary verdicts and A/B false winners: ondeck's decision engine side
by side with Evidently, alibi-detect and fixed-threshold canary rules, on the same simulated streams.

Run through ``benchmarks/decisions/run``; writes results/results.json, the table in README.md and
detection-delay.png. Nothing here is asserted: it measures.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import streams  # noqa: E402

from ondeck.decide import ABPolicy, ABTest, AnalysisTemplate, CanaryAnalysis, DriftDetector, DriftPolicy  # noqa: E402
from ondeck.decide import stats  # noqa: E402

POOL_ROWS = 40_000
DELAY_REPLICATES = 20
DELAY_MAX_WINDOWS = 288          # give up a day after the change
CANARY_RUNS = 100
AB_SIMULATIONS = 1000
TOOLS_PYTHON = HERE.parent / ".venvs" / "drift-tools" / "bin" / "python"


# -- the streams ----------------------------------------------------------------------------------------
class Pools:
    """Row pools (unseen churn rows, and shifted copies) and every row's bin per watched column."""

    def __init__(self, examples: Path):
        import ondeck
        from ondeck.package.examples import CHURN_FEATURES, churn_frame
        from ondeck.package.profile import bin_index, prediction_columns

        self.model = ondeck.load(examples / "churn" / "v1")
        self.reference = self.model.reference
        self.features = list(CHURN_FEATURES)
        self.rows = {"reference": churn_frame(part="reference")[self.features].to_numpy()}
        self.rows["base"] = churn_frame(POOL_ROWS, seed=11)[self.features].to_numpy()
        for name, (_, shift) in streams.SHIFTS.items():
            self.rows[name] = churn_frame(POOL_ROWS, seed=11, shift=shift)[self.features].to_numpy()
        self.columns = [("features", f) for f in self.features] + [("prediction", o) for o in self.reference["prediction"]]
        self.bins = {}
        for name, x in self.rows.items():
            proba = self.model.predict_proba(x.astype(np.float32))
            pred = prediction_columns(proba, None)
            cols = [bin_index(self.reference["features"][f]["bin_edges"], x[:, i]) for i, f in enumerate(self.features)]
            cols += [bin_index(self.reference["prediction"][o]["bin_edges"], pred[o]) for o in self.reference["prediction"]]
            self.bins[name] = np.column_stack(cols)
        self.sizes = [len(self.reference[s][n]["bin_edges"]) + 1 for s, n in self.columns]

    def save(self, path: Path) -> None:
        np.savez(path, columns=np.array(self.features), **self.rows)

    def window(self, scenario: str, replicate: int, w: int, shifted: str | None = None, changes_at: int | None = None,
               rows: int = streams.ROWS_PER_WINDOW) -> dict:
        """The window's bin counts, from exactly the rows the other tools see."""
        base_idx, shift_idx = streams.window_rows(scenario, replicate, w, POOL_ROWS, rows, changes_at)
        b = self.bins["base"][base_idx]
        if shifted:
            b = np.concatenate([b, self.bins[shifted][shift_idx]])
        out = {"start": w * streams.INTERVAL, "end": (w + 1) * streams.INTERVAL, "features": {}, "prediction": {}}
        for j, ((section, name), k) in enumerate(zip(self.columns, self.sizes)):
            out[section][name] = np.bincount(b[:, j], minlength=k).tolist()
        return out


# -- drift ------------------------------------------------------------------------------------------------
def drift_no_alarm_run(pools: Pools, scenario: str, rows: int, looks: int) -> dict:
    detector = DriftDetector(pools.reference, DriftPolicy(interval=streams.INTERVAL))
    state = detector.initial_state()
    started = time.perf_counter()
    step_seconds = 0.0
    strongest = -math.inf
    for w in range(looks):
        window = pools.window(scenario, 0, w, rows=rows)
        t = time.process_time()  # CPU time: the machine is shared, wall time would measure the neighbours
        state, d = detector.step(state, window)
        step_seconds += time.process_time() - t
        strongest = max(strongest, max(e["log_e"] for s in ("features", "prediction") for e in d.evidence[s].values()))
    return {"looks": looks, "alarms": state["alarms"], "episodes": state["episodes"],
            "max_log_e": strongest, "log_threshold": detector.log_threshold,
            "ms_per_look": 1000 * step_seconds / looks, "seconds": time.perf_counter() - started}


def drift_delays(pools: Pools, scenario: str, feature: str, replicates: int) -> dict:
    """Minutes from the change to the end of the look that flags ``feature``; other columns flagged."""
    detector = DriftDetector(pools.reference, DriftPolicy(interval=streams.INTERVAL))
    at = streams.WARMUP_WINDOWS
    delays, others = [], set()
    for r in range(replicates):
        state = detector.initial_state()
        change = (at + streams.change_fraction(scenario, r)) * streams.INTERVAL
        delay = None
        for w in range(at + DELAY_MAX_WINDOWS):
            state, d = detector.step(state, pools.window(scenario, r, w, scenario, changes_at=at))
            flagged = {n for s in ("features", "prediction") for n, e in d.evidence[s].items() if e["alarm"]}
            if w < at:
                others |= {f"{n} (before the change)" for n in flagged}
                continue
            others |= flagged - {feature}
            if feature in flagged:
                delay = ((w + 1) * streams.INTERVAL - change) / 60
                break
        delays.append(delay)
    return {"delays_minutes": delays, "also_flagged": sorted(others)}


# -- canaries ---------------------------------------------------------------------------------------------
CANARY_TEMPLATE = {
    "interval": streams.INTERVAL, "count": 6, "alpha": 0.01,
    "metrics": [
        {"name": "error-rate", "kind": "error_rate", "maxIncrease": 0.005},
        {"name": "latency-p99", "kind": "latency", "quantile": 0.99, "maxRatio": 1.1},
        {"name": "accuracy", "kind": "accuracy", "maxDecrease": 0.01},
        {"name": "prediction-drift", "kind": "prediction_drift", "output": "score", "maxEffect": 0.1},
    ],
}
GOOD = {"error_rate": 0.01, "median_latency": 0.02, "accuracy": 0.80}
CANARY_KINDS = {
    "good (same model twice)": GOOD,
    "bad: +2 points error rate": {**GOOD, "error_rate": 0.03},
    "bad: 1.5x latency": {**GOOD, "median_latency": 0.03},
    "bad: -5 points accuracy": {**GOOD, "accuracy": 0.75},
}
STABLE_SHARE, FEEDBACK_SHARE = 0.8, 0.5   # canary at 20% of 50 req/s; labels for half the requests


def variant_window(rng, requests: int, p: dict, score_shares: np.ndarray, buckets: tuple) -> dict:
    from scipy.stats import lognorm

    cdf = lognorm.cdf(buckets, 0.5, scale=p["median_latency"])
    latency = np.cumsum(rng.multinomial(requests, np.diff(np.concatenate([[0.0], cdf, [1.0]]))))
    labelled = rng.binomial(requests, FEEDBACK_SHARE)
    return {"requests": requests, "errors": int(rng.binomial(requests, p["error_rate"])),
            "latency": [[le, int(c)] for le, c in zip((*buckets, math.inf), latency)],
            "feedback_total": int(labelled), "feedback_correct": int(rng.binomial(labelled, p["accuracy"])),
            "prediction": {"score": rng.multinomial(requests, score_shares).tolist()}}


def threshold_rule(window: dict, failures: dict) -> bool:
    """Argo/Flagger-style: each interval's own numbers against fixed margins; roll back after 3 fails."""
    s, c = window["stable"], window["canary"]
    buckets = lambda v: [(float(le), float(n)) for le, n in v["latency"]]  # noqa: E731
    checks = {
        "error-rate": c["errors"] / c["requests"] - s["errors"] / s["requests"] > 0.005,
        "latency-p99": stats.histogram_quantile(0.99, buckets(c)) > 1.1 * stats.histogram_quantile(0.99, buckets(s)),
        "accuracy": s["feedback_correct"] / s["feedback_total"] - c["feedback_correct"] / c["feedback_total"] > 0.01,
    }
    for name, failed in checks.items():
        failures[name] = failures.get(name, 0) + failed
    return any(n > 2 for n in failures.values())


def canaries(pools: Pools) -> dict:
    from ondeck.serving.metrics import DURATION_BUCKETS

    score_shares = np.bincount(pools.bins["base"][:, -1], minlength=pools.sizes[-1]) / POOL_ROWS
    analysis = CanaryAnalysis(AnalysisTemplate.from_dict(CANARY_TEMPLATE))
    per_window = streams.ROWS_PER_WINDOW
    out = {}
    for k, (label, params) in enumerate(CANARY_KINDS.items()):
        rng = np.random.default_rng([7, k])
        res = {"ondeck": {"rolled_back": 0, "promoted": 0, "paused": 0, "intervals_to_rollback": []},
               "thresholds": {"rolled_back": 0, "intervals_to_rollback": []}}
        for _ in range(CANARY_RUNS):
            state, failures, baseline_done = analysis.initial_state(), {}, False
            for i in range(CANARY_TEMPLATE["count"]):
                window = {"start": i * streams.INTERVAL, "end": (i + 1) * streams.INTERVAL,
                          "stable": variant_window(rng, rng.poisson(per_window * STABLE_SHARE), GOOD, score_shares, DURATION_BUCKETS),
                          "canary": variant_window(rng, rng.poisson(per_window * (1 - STABLE_SHARE)), params, score_shares, DURATION_BUCKETS)}
                if not baseline_done and threshold_rule(window, failures):
                    baseline_done = True
                    res["thresholds"]["rolled_back"] += 1
                    res["thresholds"]["intervals_to_rollback"].append(i + 1)
                if state["phase"] == "Running":
                    state, d = analysis.step(state, window)
                    if d.action == "rollback":
                        res["ondeck"]["intervals_to_rollback"].append(i + 1)
            res["ondeck"]["rolled_back"] += state["phase"] == "Failed"
            res["ondeck"]["promoted"] += state["phase"] == "Successful"
            res["ondeck"]["paused"] += state["phase"] == "Inconclusive"
        out[label] = res
    return out


# -- A/B --------------------------------------------------------------------------------------------------
AB_RATE = 0.10
AB_PER_ARM = streams.ROWS_PER_WINDOW // 2


def ab_false_winners(simulations: int) -> dict:
    """No true difference, a look every interval for 30 days: how often is a winner called?"""
    policy = ABPolicy(alpha=0.05)
    looks = streams.DAYS * streams.LOOKS_PER_DAY
    rng = np.random.default_rng(2026)
    ours = naive = 0
    first_checked = []
    for chunk in range(0, simulations, 50):
        m = min(50, simulations - chunk)
        a = np.cumsum(rng.binomial(AB_PER_ARM, AB_RATE, size=(m, looks)), axis=1).astype(float)
        b = np.cumsum(rng.binomial(AB_PER_ARM, AB_RATE, size=(m, looks)), axis=1).astype(float)
        n = AB_PER_ARM * np.arange(1, looks + 1, dtype=float)
        seq = stats.difference_sequence(a, n, b, n, policy.alpha, policy.scale)
        called = (seq["lower"] > 0) | (seq["upper"] < 0)
        ours += int(called.any(axis=1).sum())
        pooled = (a + b) / (2 * n)
        z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
        naive += int((np.abs(z) > 1.96).any(axis=1).sum())
        if chunk == 0:  # the vectorised rule is ABTest's: check on a few streams, step by step
            for i in range(3):
                test, state, first = ABTest(policy), None, None
                state = test.initial_state()
                for t in range(looks):
                    da, db = (a[i, t] - (a[i, t - 1] if t else 0)), (b[i, t] - (b[i, t - 1] if t else 0))
                    state, d = test.step(state, {"start": t, "end": t + 1, "arms": {"control": [AB_PER_ARM, da], "treatment": [AB_PER_ARM, db]}})
                    if d.action == "winner":
                        first = t
                        break
                vector_first = int(np.argmax(called[i])) if called[i].any() else None
                first_checked.append(first == vector_first)
    return {"simulations": simulations, "looks": looks, "ondeck_false_winners": ours, "naive_false_winners": naive,
            "vectorised_matches_ABTest": all(first_checked)}


def ab_power(simulations: int = 200, lift: float = 0.05) -> dict:
    """A true +5% relative lift: days until ondeck calls the winner."""
    policy = ABPolicy(alpha=0.05)
    looks = streams.DAYS * streams.LOOKS_PER_DAY
    rng = np.random.default_rng(2027)
    a = np.cumsum(rng.binomial(AB_PER_ARM, AB_RATE, size=(simulations, looks)), axis=1).astype(float)
    b = np.cumsum(rng.binomial(AB_PER_ARM, AB_RATE * (1 + lift), size=(simulations, looks)), axis=1).astype(float)
    n = AB_PER_ARM * np.arange(1, looks + 1, dtype=float)
    seq = stats.difference_sequence(a, n, b, n, policy.alpha, policy.scale)
    won = seq["lower"] > 0
    days = [(int(np.argmax(r)) + 1) / streams.LOOKS_PER_DAY for r in won if r.any()]
    return {"simulations": simulations, "lift": lift, "called": len(days), "median_days": float(np.median(days)) if days else None}


# -- report -----------------------------------------------------------------------------------------------
def median_or_none(xs: list) -> float | None:
    found = [x for x in xs if x is not None]
    return float(np.median(found)) if found else None


def delay_cell(xs: list) -> str:
    found = [x for x in xs if x is not None]
    if not found:
        return f"not caught (0/{len(xs)})"
    text = f"{np.median(found):.0f} min (max {max(found):.0f})"
    return text + ("" if len(found) == len(xs) else f", caught {len(found)}/{len(xs)}")


def table(results: dict) -> str:
    d, t = results["drift"], results.get("tools")
    days = streams.DAYS
    lines = ["### Drift: false alarms with no drift, 30 simulated days", "",
             "| tool | 50 rows/s, looks | false alarms | 1 row/s, looks | false alarms |", "|---|---|---|---|---|"]
    lines.append(f"| **ondeck** (every 5 min) | {d['none']['looks']} | **{d['none']['episodes']}** "
                 f"| {d['low_traffic']['looks']} | **{d['low_traffic']['episodes']}** |")
    if t:
        for key, name in (("ks", "alibi-detect KSDrift"), ("evidently", "Evidently DataDriftPreset, any column")):
            a, b = t["none"][key], t["low_traffic"][key]
            scale = a["every_windows"]
            lines.append(f"| {name} (every {scale * 5 // 60} h) | {a['checks']} | {a['alarms']} "
                         f"(~{a['alarms'] * scale:,} at one look per 5 min) | {b['checks']} | {b['alarms']} "
                         f"(~{b['alarms'] * scale:,} at one look per 5 min) |")
        ev_a, ev_b = t["none"]["evidently"], t["low_traffic"]["evidently"]
        lines.append(f"| Evidently, dataset-drift flag | {ev_a['checks']} | {ev_a['dataset_drift']} | {ev_b['checks']} | {ev_b['dataset_drift']} |")
        c = t["none"]["cvm_online"]
        lines.append(f"| alibi-detect CVMDriftOnline (ERT {c['ert']:,} rows, fed 1 row / 15 min) | {c['rows_fed']:,} rows "
                     f"| {c['alarms']} (~{round(c['alarms'] * 45_000):,} if fed all 50 rows/s) | - | - |")
    lines += ["", "### Drift: detection delay after a shift (median over replicates, from the change to the alarm naming the feature)", "",
              "| shift | ondeck | alibi KSDrift | Evidently | alibi CVMDriftOnline |", "|---|---|---|---|---|"]
    for name, (label, _) in streams.SHIFTS.items():
        row = [label, delay_cell(d["delay"][name]["delays_minutes"])]
        if t:
            row += [delay_cell(t["delay"][name][k]) for k in ("ks", "evidently", "cvm_online")]
        else:
            row += ["-"] * 3
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "### Canaries: 100 runs of each kind, 6 intervals of 5 min, canary at 20% of 50 req/s", "",
              "| canary | ondeck rolled back | within 3 intervals | promoted | paused | fixed thresholds (Argo/Flagger style) rolled back |",
              "|---|---|---|---|---|---|"]
    for label, r in results["canary"].items():
        o, b = r["ondeck"], r["thresholds"]
        within = sum(1 for i in o["intervals_to_rollback"] if i <= 3)
        lines.append(f"| {label} | **{o['rolled_back']}**/{CANARY_RUNS} | {within} | {o['promoted']} | {o['paused']} "
                     f"| {b['rolled_back']}/{CANARY_RUNS} |")
    ab = results["ab"]
    lines += ["", "### A/B: no true difference, a look every 5 min for 30 days", "",
              "| test | simulations | false winners |", "|---|---|---|",
              f"| **ondeck** (anytime-valid, alpha 0.05) | {ab['simulations']} | **{ab['ondeck_false_winners'] / ab['simulations']:.1%}** |",
              f"| fixed-sample z-test at 5%, looked at every interval | {ab['simulations']} | {ab['naive_false_winners'] / ab['simulations']:.1%} |",
              "", f"With a true +{results['ab_power']['lift']:.0%} relative lift ({AB_RATE:.0%} -> {AB_RATE * (1 + results['ab_power']['lift']):.1%}) "
              f"ondeck called the winner in {results['ab_power']['called']}/{results['ab_power']['simulations']} runs, "
              f"after {results['ab_power']['median_days']:.2f} days (median)."]
    lines += ["", f"ondeck's drift step costs {d['none']['ms_per_look']:.1f} ms of CPU per look for {len(results['columns'])} columns "
              f"(20 features + 2 prediction outputs)."]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [("mean_025", 0.25), ("mean_05", 0.5), ("mean_1", 1.0)]
    series = {"ondeck": [results["drift"]["delay"][n]["delays_minutes"] for n, _ in sizes]}
    if results.get("tools"):
        for key, label in (("ks", "alibi-detect KSDrift"), ("evidently", "Evidently DataDriftPreset"),
                           ("cvm_online", "alibi-detect CVMDriftOnline")):
            series[label] = [results["tools"]["delay"][n][key] for n, _ in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cap = 24 * 60 * 30
    for (label, per_size), marker, style in zip(series.items(), "osD^", ("-", "--", ":", "-.")):
        ys = [median_or_none(xs) for xs in per_size]
        xs = [s for (_, s), y in zip(sizes, ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], marker=marker, linestyle=style, label=label)
        missed = [s for (_, s), y in zip(sizes, ys) if y is None]
        if missed:
            ax.scatter(missed, [cap] * len(missed), marker="x", color=ax.lines[-1].get_color())
    ax.axhline(10, color="grey", linestyle=":", linewidth=1)
    ax.text(0.55, 11, "goal for 0.5 std: 10 min", color="grey", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks([0.25, 0.5, 1.0], ["0.25", "0.5", "1"])
    ax.set_xlabel("mean shift of monthly_charges (reference std)")
    ax.set_ylabel("median minutes from change to alarm")
    ax.set_title("Detection delay at 50 rows/s, looks every 5 min (x: not caught)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_readme(results: dict, command: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- results -->", "<!-- /results -->"
    block = (f"{start}\nLatest run: `{command}` ({results['seconds'] / 60:.0f} min on a shared 2-core machine, "
             f"{results.get('cpu_seconds', 0) / 60:.0f} CPU-minutes; "
             f"tools: {', '.join(f'{k} {v}' for k, v in (results.get('tools') or {}).get('versions', {}).items()) or 'not run'}).\n\n"
             f"{table(results)}\n\n![detection delay](detection-delay.png)\n{end}")
    head, rest = text.split(start, 1)
    readme.write_text(head + block + rest.split(end, 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=Path, help="already built example packages (default: build them)")
    parser.add_argument("--no-tools", action="store_true", help="ondeck only (skip Evidently and alibi-detect)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the looks and replicates, to try the harness")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the README table and the plot from the last results/results.json")
    args = parser.parse_args()
    started = time.perf_counter()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        plot(results, HERE / "detection-delay.png")
        write_readme(results, results["command"])
        return 0
    examples = args.examples
    if examples is None:
        from ondeck.package.examples import build_examples

        examples = out / "examples"
        build_examples(examples, log=lambda m: print(m, file=sys.stderr))
    pools = Pools(examples)
    pools.save(out / "pools.npz")
    tools_proc = None
    if not args.no_tools:
        cmd = [str(TOOLS_PYTHON), str(HERE / "tools.py"), str(out / "pools.npz"), str(out / "tools.json")]
        tools_proc = subprocess.Popen(cmd + (["--quick"] if args.quick else []))
    looks = streams.DAYS * streams.LOOKS_PER_DAY // (10 if args.quick else 1)
    replicates = 4 if args.quick else DELAY_REPLICATES
    results: dict = {"columns": [f"{s}/{n}" for s, n in pools.columns], "drift": {}}
    print("ondeck: 30 days without drift at 50 rows/s and at 1 row/s ...", file=sys.stderr)
    results["drift"]["none"] = drift_no_alarm_run(pools, "none", streams.ROWS_PER_WINDOW, looks)
    results["drift"]["low_traffic"] = drift_no_alarm_run(pools, "low_traffic", streams.INTERVAL, looks)
    print("ondeck: detection delays ...", file=sys.stderr)
    results["drift"]["delay"] = {name: drift_delays(pools, name, next(iter(shift)), replicates)
                                 for name, (_, shift) in streams.SHIFTS.items()}
    print("ondeck: canaries and A/B ...", file=sys.stderr)
    results["canary"] = canaries(pools)
    results["ab"] = ab_false_winners(AB_SIMULATIONS // (10 if args.quick else 1))
    results["ab_power"] = ab_power()
    if tools_proc is not None:
        print("waiting for Evidently and alibi-detect ...", file=sys.stderr)
        if tools_proc.wait() != 0:
            print("the tools run failed; see above", file=sys.stderr)
            return 1
        results["tools"] = json.loads((out / "tools.json").read_text())
    results["seconds"] = time.perf_counter() - started
    results["cpu_seconds"] = time.process_time() + (results.get("tools") or {}).get("cpu_seconds", 0.0)
    results["command"] = "benchmarks/decisions/run" + (" --quick" if args.quick else "") + (" --no-tools" if args.no_tools else "")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, HERE / "detection-delay.png")
    write_readme(results, results["command"])
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
