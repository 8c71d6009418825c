"""The demo's pictures, drawn from what the runs recorded (``series.jsonl`` and the decisions).

``weights.png``  canary and stable weights over time in the canary and rollback scenarios, with the
                 decisions that moved them;
``quality.png``  5xx error rate, p99 latency, live accuracy and the share of rows predicted positive
                 (the last class) per variant in the same scenarios;
``drift.png``    the drift statistic per feature over time in the drift scenario (the features with
                 the strongest evidence, and ``monthly_charges``), against the alarm threshold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"stable": "#1f77b4", "canary": "#ff7f0e"}
DECISION_STYLE = {"promote": ("#2ca02c", "-"), "rollback": ("#d62728", "-"), "set_weight": ("#7f7f7f", ":"),
                  "pause": ("#9467bd", "--"), "drift": ("#d62728", "-"), "retrain": ("#8c564b", "--")}
TOP_FEATURES = 4


def write_all(out: Path, outcomes: list[Any]) -> list[Path]:
    """Every plot the outcomes have data for; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    by_key = {o.scenario.key: o for o in outcomes}
    rollouts = [by_key[k] for k in ("canary", "rollback") if k in by_key and by_key[k].series]
    written = []
    if rollouts:
        written.append(weights(out / "weights.png", rollouts))
        written.append(quality(out / "quality.png", rollouts))
    if "drift" in by_key and any("drift" in r for r in by_key["drift"].series):
        written.append(drift(out / "drift.png", by_key["drift"]))
    return written


def _t0(outcome: Any) -> float:
    return outcome.series[0]["t"]


def _decision_lines(ax, outcome: Any, actions: tuple[str, ...], label: bool = True) -> None:
    t0 = _t0(outcome)
    for d in outcome.state.get("decisions", []):
        if d["action"] not in actions:
            continue
        colour, style = DECISION_STYLE.get(d["action"], ("#000000", "--"))
        ax.axvline(d["time"] - t0, color=colour, linestyle=style, linewidth=1.2, alpha=0.8)
        if label:
            ax.annotate(d["action"].replace("_", " "), (d["time"] - t0, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8, color=colour, rotation=90, va="top")


def weights(path: Path, outcomes: list[Any]) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(outcomes), 1, figsize=(9, 2.9 * len(outcomes)), squeeze=False)
    for ax, o in zip(axes[:, 0], outcomes):
        t0 = _t0(o)
        t = [r["t"] - t0 for r in o.series]
        for variant, colour in COLOURS.items():
            w = [r["weights"].get(variant, 0) for r in o.series]
            version = o.state["variants"][variant]["version"]
            ax.step(t, w, where="post", color=colour, linewidth=2, label=f"{variant} ({version})")
        _decision_lines(ax, o, ("set_weight", "promote", "rollback", "pause"))
        ax.set_ylim(-5, 105)
        ax.set_ylabel("traffic weight (%)")
        ax.set_title(f"{o.scenario.key}: {o.scenario.title}", fontsize=10, loc="left")
        ax.legend(loc="center right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the run started")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quality(path: Path, outcomes: list[Any]) -> Path:
    import matplotlib.pyplot as plt

    def last_class(live: dict[str, Any]) -> float | None:
        shares = live.get("classShares")
        return 100.0 * shares[-1] if shares else None

    rows = ((lambda live: _scaled(live.get("errorRate"), 100.0), "5xx error rate (%)"),
            (lambda live: _scaled(live.get("p99"), 1000.0), "p99 latency (ms)"),
            (lambda live: live.get("accuracy"), "live accuracy"),
            (last_class, "predicted positive (%)"))
    fig, axes = plt.subplots(len(rows), len(outcomes), figsize=(5.2 * len(outcomes), 9.5), squeeze=False, sharex="col")
    for col, o in enumerate(outcomes):
        t0 = _t0(o)
        for row, (value, label) in enumerate(rows):
            ax = axes[row, col]
            for variant, colour in COLOURS.items():
                points = [(r["t"] - t0, v) for r in o.series
                          if (v := value(r.get("variants", {}).get(variant, {}))) is not None]
                if points:
                    xs, ys = zip(*points)
                    version = o.state["variants"][variant]["version"]
                    ax.plot(xs, ys, color=colour, linewidth=1.5, label=f"{variant} ({version})")
            _decision_lines(ax, o, ("promote", "rollback"), label=row == 0)
            if row == 0:
                ax.set_ylim(-0.5, 5)
            if row == len(rows) - 1:
                ax.set_ylim(bottom=0)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(o.scenario.key, fontsize=10, loc="left")
                ax.legend(fontsize=8, loc="upper left")
        axes[-1, col].set_xlabel("seconds since the run started (each point: the last 10 s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def drift(path: Path, outcome: Any) -> Path:
    import matplotlib.pyplot as plt

    looks = [r for r in outcome.series if "drift" in r]
    t0 = _t0(outcome)
    features = _top_features(looks)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    t = [r["t"] - t0 for r in looks]
    for name in features:
        stat = [r["drift"]["columns"].get(name, {}).get("statistic", 0.0) for r in looks]
        effect = [r["drift"]["columns"].get(name, {}).get("effect", 0.0) for r in looks]
        width = 2.2 if name == "monthly_charges" else 1.2
        top.plot(t, stat, marker="o", markersize=3, linewidth=width, label=name)
        bottom.plot(t, effect, marker="o", markersize=3, linewidth=width, label=name)
    threshold = next((r["drift"].get("threshold") for r in looks if r["drift"].get("threshold")), None)
    if threshold:
        top.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label="alarm threshold")
    top.set_yscale("symlog", linthresh=10)
    top.set_ylabel("drift statistic (log e-value)")
    top.set_title(f"drift: {outcome.scenario.title}", fontsize=10, loc="left")
    top.legend(fontsize=8, loc="upper left")
    bottom.set_ylabel("effect size (chi distance)\nper window")
    bottom.set_xlabel(f"seconds since the run started (one look every {t[1] - t[0]:.0f} s)" if len(t) > 1 else "seconds")
    for ax in (top, bottom):
        for label, when in outcome.marks.items():
            ax.axvline(when - t0, color="#7f7f7f", linestyle=":", linewidth=1.2)
            if ax is bottom:
                ax.annotate(label, (when - t0, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                            textcoords="offset points", fontsize=8, color="#7f7f7f", rotation=90, va="top")
        _decision_lines(ax, outcome, ("drift",), label=ax is top)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _top_features(looks: list[dict[str, Any]]) -> list[str]:
    """The columns with the strongest evidence at any look, and monthly_charges (where drift goes in)."""
    peak: dict[str, float] = {}
    for r in looks:
        for name, c in r["drift"]["columns"].items():
            peak[name] = max(peak.get(name, 0.0), c["statistic"])
    top = sorted(peak, key=peak.get, reverse=True)[:TOP_FEATURES]
    return top + (["monthly_charges"] if "monthly_charges" in peak and "monthly_charges" not in top else [])
