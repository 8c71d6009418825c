"""``ondeck drift``: the offline drift check of a file of live rows against a package's reference.

The I/O half of the check: read the file in chunks (the same reader and row rules as ``ondeck
batch``), bin every valid row and its prediction over the reference bins, and hand the counts to the
pure one-shot test :func:`ondeck.decide.check_counts`. Rows the model cannot take are skipped and
counted, never silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ondeck.batch import DEFAULT_CHUNK_ROWS, features_array, open_chunks
from ondeck.decide import DriftPolicy, DriftWindow, check_counts
from ondeck.errors import UserError
from ondeck.package.build import PROBA_OUTPUT, VALUE_OUTPUT
from ondeck.package.load import Model
from ondeck.package.profile import bin_counts, prediction_columns


def check_file(package_dir: str | Path, live_path: str | Path, policy: DriftPolicy | None = None,
               *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, Any]:
    """The report ``ondeck drift --json`` prints: top-level ``drift``, one entry per feature and a
    ``prediction`` entry, each with its statistic, p-value, effect sizes and verdict."""
    policy = policy or DriftPolicy()
    model = Model(package_dir)
    live_path = Path(live_path)
    if not live_path.is_file():
        raise UserError(f"live data file not found: {live_path}")
    reference = model.reference
    features = list(model.schema.features)
    feature_counts = {f: np.zeros(len(reference["features"][f]["bin_edges"]) + 1) for f in features}
    prediction_counts = {o: np.zeros(len(p["bin_edges"]) + 1) for o, p in reference["prediction"].items()}
    rows = used = 0
    chunks, _ = open_chunks(live_path, features, [], chunk_rows)
    for table in chunks:
        x = features_array(table, features)
        valid, _ = model.schema.row_problems(x)
        rows += x.shape[0]
        x = x[valid]
        used += x.shape[0]
        if not x.shape[0]:
            continue
        for i, f in enumerate(features):
            feature_counts[f] += bin_counts(reference["features"][f]["bin_edges"], x[:, i])
        out = model.run(np.ascontiguousarray(x, dtype=np.float32))
        for o, values in prediction_columns(out.get(PROBA_OUTPUT), out.get(VALUE_OUTPUT)).items():
            if o in prediction_counts:
                prediction_counts[o] += bin_counts(reference["prediction"][o]["bin_edges"], values)
    if used == 0:
        raise UserError(f"{live_path.name} has no rows the model can take ({rows} rows read)")
    window = DriftWindow(0.0, 0.0, {f: c.tolist() for f, c in feature_counts.items()},
                         {o: c.tolist() for o, c in prediction_counts.items()})
    decision = check_counts(reference, window, policy)
    prediction = decision.evidence["prediction"]
    return {
        "package": f"{model.name}:{model.version}",
        "file": str(live_path),
        "rows": rows,
        "rows_used": used,
        "rows_skipped": rows - used,
        "drift": decision.action == "drift",
        "reason": decision.reason,
        "test": {"alpha": policy.alpha, "min_effect": policy.min_effect, "correction": "holm",
                 "null": "live shares within chi distance 'radius' of the reference shares"},
        "features": decision.evidence["features"],
        "prediction": {"drift": any(p["drift"] for p in prediction.values()), **prediction},
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a table for people (``ondeck drift`` without ``--json``)."""
    lines = [f"{report['package']} vs {report['file']}: {report['rows_used']:,} rows used"
             + (f", {report['rows_skipped']:,} skipped (rows the model cannot take)" if report["rows_skipped"] else "")]
    header = f"{'column':<28} {'chi dist':>9} {'radius':>7} {'PSI':>8} {'W1/std':>7} {'p (Holm)':>10}  drift"
    lines += [header, "-" * len(header)]
    entries = [(name, e) for name, e in report["features"].items()]
    entries += [(f"prediction {o}", e) for o, e in report["prediction"].items() if o != "drift"]
    for name, e in entries:
        w1 = f"{e['wasserstein_std']:.3f}" if "wasserstein_std" in e else "-"
        lines.append(f"{name:<28} {e['chi_distance']:>9.3f} {e['radius']:>7.3f} {e['psi']:>8.4f} {w1:>7} "
                     f"{e['p_adjusted']:>10.3g}  {'DRIFT' if e['drift'] else 'no'}")
    lines.append(("DRIFT: " if report["drift"] else "no drift: ") + report["reason"])
    return "\n".join(lines)
