"""A/B test on a success proportion (conversion, accuracy), safe to look at every interval.

The test keeps an anytime-valid confidence sequence for ``treatment rate - control rate`` (a normal
mixture, :func:`ondeck.decide.stats.difference_sequence`): the chance that it *ever* excludes zero
when the arms are equal is at most ``alpha``, however often it is looked at. A winner is called when
it excludes zero; the lift (relative difference) comes with an anytime-valid interval of its own.
With ``equivalence`` set, the test also stops once the whole sequence lies within
``+-equivalence``: the arms do not differ by anything that matters.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ondeck.decide import stats
from ondeck.decide.types import ABWindow, Decision, number


@dataclass(frozen=True)
class ABPolicy:
    """``scale`` is the absolute difference in rates the test is tuned to find fastest."""

    control: str = "control"
    treatment: str = "treatment"
    alpha: float = 0.05
    scale: float = 0.02
    min_samples: int = 100
    equivalence: float | None = None

    def __post_init__(self) -> None:
        if self.control == self.treatment:
            raise ValueError("A/B policy: control and treatment must be different arms")
        if not 0 < self.alpha < 1 or self.scale <= 0 or self.min_samples < 1:
            raise ValueError("A/B policy: 0 < alpha < 1, scale > 0 and min_samples >= 1 are required")
        if self.equivalence is not None and self.equivalence <= 0:
            raise ValueError("A/B policy: equivalence must be positive")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ABPolicy":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"A/B policy: unknown field(s) {', '.join(sorted(unknown))}")
        for key in ("alpha", "scale", "min_samples", "equivalence"):
            if d.get(key) is not None:
                d[key] = number(d[key], f"A/B policy: {key}")
        if "min_samples" in d:
            d["min_samples"] = int(d["min_samples"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ABTest:
    """Pure: ``state, decision = test.step(state, window)``. Once decided, the decision stands."""

    policy: ABPolicy = ABPolicy()

    def initial_state(self) -> dict[str, Any]:
        arms = (self.policy.control, self.policy.treatment)
        return {"looks": 0, "arms": {a: {"trials": 0.0, "successes": 0.0} for a in arms}, "last": None}

    def step(self, state: dict[str, Any], window: ABWindow | dict[str, Any]) -> tuple[dict[str, Any], Decision]:
        if state["last"] and state["last"]["action"] != "continue":
            return state, Decision(**state["last"])
        if isinstance(window, dict):
            window = ABWindow.from_dict(window)
        p = self.policy
        unknown = set(window.arms) - {p.control, p.treatment}
        if unknown:
            raise ValueError(f"A/B window: unknown arm(s) {', '.join(sorted(unknown))}")
        arms = {a: dict(v) for a, v in state["arms"].items()}
        for a, (trials, successes) in window.arms.items():
            arms[a]["trials"] += trials
            arms[a]["successes"] += successes
        decision = self.decide(arms)
        return {"looks": state["looks"] + 1, "arms": arms, "last": decision.to_dict()}, decision

    def decide(self, arms: dict[str, dict[str, float]]) -> Decision:
        p = self.policy
        n1, x1 = arms[p.control]["trials"], arms[p.control]["successes"]
        n2, x2 = arms[p.treatment]["trials"], arms[p.treatment]["successes"]
        evidence: dict[str, Any] = {
            "arms": {a: {"trials": v["trials"], "successes": v["successes"],
                         "rate": round(v["successes"] / v["trials"], 6) if v["trials"] else None} for a, v in arms.items()},
            "alpha": p.alpha}
        if min(n1, n2) < p.min_samples:
            return Decision("continue", f"too few trials yet ({min(n1, n2):g} < {p.min_samples})", evidence)
        diff = stats.difference_sequence(x1, n1, x2, n2, p.alpha, p.scale)
        ratio = stats.log_ratio_sequence(x1, n1, x2, n2, p.alpha, p.scale / max(x1 / n1, 1e-3))
        lift = {k: round(math.exp(ratio[k]) - 1, 6) for k in ("estimate", "lower", "upper")}
        evidence.update(difference={k: round(v, 6) for k, v in diff.items()}, lift=lift)
        shown = f"lift {lift['estimate']:+.1%} (anytime {1 - p.alpha:.0%} interval {lift['lower']:+.1%} to {lift['upper']:+.1%})"
        if diff["lower"] > 0 or diff["upper"] < 0:
            winner, loser = (p.treatment, p.control) if diff["lower"] > 0 else (p.control, p.treatment)
            evidence["winner"] = winner
            return Decision("winner", f"{winner} beats {loser}: {shown}", evidence)
        if p.equivalence is not None and -p.equivalence < diff["lower"] and diff["upper"] < p.equivalence:
            return Decision("equivalent", f"no difference beyond +-{p.equivalence:g}: {shown}", evidence)
        return Decision("continue", f"no winner yet: {shown}", evidence)
