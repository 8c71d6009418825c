"""Every automatic decision ondeck makes, as pure functions of plain data.

No I/O, no clock, no Kubernetes or HTTP: windows of counters go in (times are numbers the caller
supplies), a :class:`Decision` (``action``, ``reason``, ``evidence``) comes out. Stream decisions are
folds over windows with JSON-ready state, so the operator can keep the state in a status field and the
local runtime in a file::

    detector = DriftDetector(model.reference, DriftPolicy(interval=300))
    state = detector.initial_state()
    state, decision = detector.step(state, window)        # every interval

The public API (see docs/decisions.md for the maths and the guarantees):

``DriftDetector(reference, DriftPolicy)``  drift of each feature and the prediction against the
    reference profile; false alarms bounded per unit of time.  Actions: ``drift`` / ``no_drift``.
``check_counts(reference, window, DriftPolicy)``  the one-shot version for a file (``ondeck drift``).
``CanaryAnalysis(AnalysisTemplate)``  canary vs stable, Argo Rollouts style.  Actions: ``continue``,
    ``promote`` (Successful), ``rollback`` (Failed), ``pause`` (Inconclusive).
``ABTest(ABPolicy)``  always-valid A/B on a success rate.  Actions: ``continue``, ``winner``,
    ``equivalent``.
``assess_staleness(series, StalenessPolicy, drift=...)``  time until accuracy falls below the bar.
    Actions: ``retrain``, ``keep``, ``insufficient_data``.

Bad input (negative counts, bins that do not match the reference, unknown fields) raises
``ValueError`` with a message naming the problem.
"""
from __future__ import annotations

from ondeck.decide.abtest import ABPolicy, ABTest
from ondeck.decide.canary import AnalysisTemplate, CanaryAnalysis, Metric
from ondeck.decide.drift import DriftDetector, DriftPolicy, check_counts
from ondeck.decide.staleness import StalenessPolicy, assess_staleness
from ondeck.decide.types import ABWindow, AccuracyPoint, CanaryWindow, Decision, DriftWindow, VariantStats

__all__ = [
    "ABPolicy", "ABTest", "ABWindow", "AccuracyPoint", "AnalysisTemplate", "CanaryAnalysis", "CanaryWindow",
    "Decision", "DriftDetector", "DriftPolicy", "DriftWindow", "Metric", "StalenessPolicy", "VariantStats",
    "assess_staleness", "check_counts",
]
