"""The example packages and the synthetic churn data behind them (``ondeck examples``).

Everything is made offline from scikit-learn's generators and bundled datasets, deterministically:
the same call writes byte-identical ``model.onnx`` and ``reference.json`` files. The churn data
comes from one fixed pool of rows: models train on the first part, and live traffic for the demo,
tests and benchmarks is drawn from the rest, so "no drift" really means the same distribution.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

CHURN_FEATURES = (
    "tenure_months", "monthly_charges", "total_charges", "contract_type", "support_calls",
    "late_payments", "data_usage_gb", "num_products", "age", "avg_session_minutes",
    "days_since_last_login", "discount_pct", "payment_method", "region", "satisfaction_score",
    "referrals", "streaming_hours", "device_count", "outage_minutes", "promo_eligible",
)
CHURN_LABEL = "churned"
# (scale, shift) turn a generator column into a plausible range; a tuple of cut points instead
# makes it an integer-coded category. Fixed constants, not data-dependent, so live rows drawn
# later map exactly like the training rows.
_SHAPES: dict[str, Any] = {
    "tenure_months": (14.0, 30.0), "monthly_charges": (25.0, 70.0), "total_charges": (900.0, 2200.0),
    "contract_type": (-0.4, 0.6), "support_calls": (1.2, 3.0), "late_payments": (0.8, 1.5),
    "data_usage_gb": (12.0, 40.0), "num_products": (-0.8, 0.0, 0.8), "age": (11.0, 44.0),
    "avg_session_minutes": (9.0, 25.0), "days_since_last_login": (8.0, 15.0), "discount_pct": (5.0, 10.0),
    "payment_method": (-0.7, 0.0, 0.7), "region": (-1.0, -0.3, 0.3, 1.0), "satisfaction_score": (1.1, 3.2),
    "referrals": (1.0, 2.0), "streaming_hours": (10.0, 30.0), "device_count": (1.0, 3.0),
    "outage_minutes": (20.0, 45.0), "promo_eligible": (0.2,),
}
POOL_ROWS = 60_000
TRAIN_ROWS = 20_000
REFERENCE_ROWS = 5_000
FIXED_CREATED = "2026-01-01T00:00:00Z"


@lru_cache(maxsize=1)
def _churn_pool() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    raw, y = make_classification(
        n_samples=POOL_ROWS, n_features=len(CHURN_FEATURES), n_informative=10, n_redundant=4,
        n_clusters_per_class=2, weights=[0.78], flip_y=0.02, class_sep=0.8, random_state=20261125,
    )
    x = np.empty_like(raw)
    for i, name in enumerate(CHURN_FEATURES):
        shape = _SHAPES[name]
        if len(shape) == 2 and name not in ("contract_type",):
            scale, shift = shape
            x[:, i] = np.round(raw[:, i] * scale + shift, 2)
        else:
            x[:, i] = np.digitize(raw[:, i], shape).astype(np.float64)
    for name in ("support_calls", "late_payments", "referrals", "device_count"):
        i = CHURN_FEATURES.index(name)
        x[:, i] = np.clip(np.round(x[:, i]), 0, None)
    return x, y


def churn_frame(rows: int | None = None, *, seed: int = 0, part: str = "live", shift: dict[str, float] | None = None):
    """Churn rows as a DataFrame with the ``churned`` label column.

    ``part``: ``train`` (what the models learnt from), ``reference`` (the profile rows) or ``live``
    (rows the models never saw, drawn with replacement by ``seed``). ``shift`` moves features by
    that many reference standard deviations (``{"monthly_charges": 0.5}``), or for a categorical
    feature moves that share of rows to its next level: injected drift for the demo and benchmarks.
    """
    import pandas as pd

    x, y = _churn_pool()
    if part == "train":
        xs, ys = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
    elif part == "reference":
        xs, ys = x[:REFERENCE_ROWS], y[:REFERENCE_ROWS]
    elif part == "live":
        rng = np.random.default_rng(seed)
        idx = rng.integers(TRAIN_ROWS, POOL_ROWS, size=rows or 1000)
        xs, ys = x[idx].copy(), y[idx]
        for name, amount in (shift or {}).items():
            i = CHURN_FEATURES.index(name)
            if len(_SHAPES[name]) == 2 and name != "contract_type":
                xs[:, i] += amount * x[:TRAIN_ROWS, i].std()
            else:  # categorical: move a share of rows up one level (wrapping)
                levels = len(_SHAPES[name]) + 1
                moved = rng.random(xs.shape[0]) < amount
                xs[moved, i] = (xs[moved, i] + 1) % levels
    else:
        raise ValueError(f"part must be train, reference or live, not {part!r}")
    if rows is not None and part != "live":
        xs, ys = xs[:rows], ys[:rows]
    frame = pd.DataFrame(xs, columns=list(CHURN_FEATURES))
    frame[CHURN_LABEL] = ys
    return frame


def _evaluate(est: Any, features: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    import pandas as pd

    x, y = _churn_pool()
    xh, yh = pd.DataFrame(x[TRAIN_ROWS:].astype(np.float32), columns=features), y[TRAIN_ROWS:]
    proba = est.predict_proba(xh)[:, 1]
    return {"holdout_rows": int(len(yh)), "accuracy": float(accuracy_score(yh, proba >= 0.5)), "roc_auc": float(roc_auc_score(yh, proba))}


def _churn_models() -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    return {
        "v1": RandomForestClassifier(n_estimators=100, max_depth=8, random_state=1, n_jobs=1),
        "v2": GradientBoostingClassifier(n_estimators=150, max_depth=4, learning_rate=0.1, random_state=1),
        # Clearly worse: shallow, few trees, and (below) trained on a third of the labels flipped.
        "v2-bad": RandomForestClassifier(n_estimators=20, max_depth=3, random_state=1, n_jobs=1),
    }


def build_examples(out: str | Path, *, overwrite: bool = True, log=print) -> dict[str, Path]:
    """Write churn/v1, churn/v2, churn/v2-bad, cancer/v1 and data/*.csv under ``out``."""
    from ondeck.package.build import package

    out = Path(out)
    written: dict[str, Path] = {}
    train = churn_frame(part="train")
    features = list(CHURN_FEATURES)
    xt = train[features].to_numpy(dtype=np.float32)
    yt = train[CHURN_LABEL].to_numpy()
    reference = churn_frame(part="reference")[features]
    for version, est in _churn_models().items():
        y_fit = yt
        if version == "v2-bad":
            flip = np.random.default_rng(3).random(yt.size) < 0.33
            y_fit = np.where(flip, 1 - yt, yt)
        log(f"training churn/{version} ({type(est).__name__})")
        est.fit(train[features].astype(np.float32), y_fit)
        written[f"churn/{version}"] = package(
            est, reference, name="churn", version=version, out=out / "churn" / version,
            created=FIXED_CREATED, evaluation=_evaluate(est, features), overwrite=overwrite,
            reference_sha256=_frame_sha(reference),
        )
    written["cancer/v1"] = _build_cancer(out / "cancer" / "v1", overwrite, log)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    churn_frame(part="reference").to_csv(data / "churn-reference.csv", index=False)
    churn_frame(5000, seed=1).to_csv(data / "churn-live.csv", index=False)
    churn_frame(5000, seed=2, shift={"monthly_charges": 0.5}).to_csv(data / "churn-drifted.csv", index=False)
    log(f"wrote {', '.join(written)} and data/ under {out}")
    return written


def _build_cancer(out: Path, overwrite: bool, log) -> Path:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ondeck.package.build import package

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns=["target"]).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(frame, data.target, test_size=0.3, random_state=0, stratify=data.target)
    log("training cancer/v1 (StandardScaler + LogisticRegression)")
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xtr, ytr)
    evaluation = {"holdout_rows": int(len(yte)), "accuracy": float(accuracy_score(yte, est.predict(xte)))}
    return package(est, xtr, name="cancer", version="v1", out=out, created=FIXED_CREATED,
                   evaluation=evaluation, overwrite=overwrite, reference_sha256=_frame_sha(xtr))


def _frame_sha(frame: Any) -> str:
    import hashlib

    return hashlib.sha256(frame.to_numpy(dtype=np.float64).tobytes()).hexdigest()
