"""``ondeck package``: a trained scikit-learn estimator -> a model package directory.

A package is ``model.onnx`` + ``ondeck.json`` (interface, lineage, parity) + ``reference.json``
(the reference profile, see :mod:`ondeck.package.profile`). This is the only place ondeck ever
unpickles anything, and only the user's own estimator file: nothing that serves or scores a
package loads a pickle.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ondeck.errors import UserError
from ondeck.package import profile

FORMAT = "ondeck.package/v1"
DEFAULT_PARITY_TOLERANCE = 1e-4
INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBA_OUTPUT = "probabilities"
VALUE_OUTPUT = "predictions"


def package_from_files(estimator_path: str, reference_path: str, **kwargs: Any) -> Path:
    """The CLI's entry point: read the user's files, then :func:`package`."""
    estimator = load_estimator(estimator_path)
    reference = read_reference(reference_path)
    return package(estimator, reference, reference_sha256=_sha256(reference_path), **kwargs)


def load_estimator(path: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"estimator file not found: {path}")
    import joblib

    try:
        est = joblib.load(p)
    except Exception as exc:  # a pickle can fail in many ways; all mean "not a readable estimator"
        raise UserError(f"cannot read estimator {path}: {type(exc).__name__}: {exc}") from None
    if not hasattr(est, "predict") or not hasattr(est, "get_params"):
        raise UserError(f"{path} does not hold a scikit-learn estimator (got {type(est).__name__})")
    return est


def read_reference(path: str):
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"reference file not found: {path}")
    try:
        frame = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as exc:
        raise UserError(f"cannot read reference data {path}: {exc}") from None
    if frame.empty:
        raise UserError(f"reference data {path} has no rows")
    return frame


def package(
    estimator: Any,
    reference: Any,
    *,
    name: str,
    version: str,
    out: str | os.PathLike,
    parity_tolerance: float = DEFAULT_PARITY_TOLERANCE,
    nan_policy: str = "reject",
    reference_sha256: str | None = None,
    created: str | None = None,
    evaluation: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert, check parity, profile and write a package; returns its directory.

    ``reference`` is a DataFrame whose columns are the estimator's features (a ``label`` or other
    extra column is ignored when the estimator knows its feature names).
    """
    out = Path(out)
    if out.exists() and not (overwrite and out.is_dir()):
        raise UserError(f"output directory already exists: {out}")
    _check_name(name, "name")
    _check_name(version, "version")
    features = _feature_names(estimator, reference)
    x = reference[features].to_numpy(dtype=np.float32, copy=True) if hasattr(reference, "columns") else reference
    if x.shape[0] == 0:
        raise UserError("reference data has no rows")
    if not np.isfinite(x).all():
        raise UserError("reference data has NaN or infinite values; clean them before packaging")

    onnx_model = _convert(estimator, len(features))
    is_classifier = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")
    onnx_outputs = _run_onnx(onnx_model.SerializeToString(), x)
    # scikit-learn sees the same float32 values ONNX sees, named as it was fitted.
    x_sk = _as_fitted(estimator, x, features)
    if is_classifier:
        theirs = np.asarray(estimator.predict_proba(x_sk), dtype=np.float64)
        ours = onnx_outputs[PROBA_OUTPUT]
    else:
        theirs = np.asarray(estimator.predict(x_sk), dtype=np.float64).reshape(-1, 1)
        ours = onnx_outputs[VALUE_OUTPUT].reshape(-1, 1)
    max_abs = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
    if not max_abs <= parity_tolerance:
        raise UserError(
            f"ONNX and scikit-learn disagree on the reference rows: max |onnx - sklearn| = {max_abs:.3g} "
            f"> {parity_tolerance:g} (change the bar with --parity-tolerance)"
        )

    classes = [_json_scalar(c) for c in estimator.classes_] if is_classifier else None
    pred_cols = profile.prediction_columns(ours if is_classifier else None, None if is_classifier else ours)
    reference_profile = profile.build_reference(x.astype(np.float64), features, pred_cols, classes)

    n = len(features)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "task": "classification" if is_classifier else "regression",
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, n], "features": features}],
        "outputs": (
            [
                {"name": LABEL_OUTPUT, "datatype": _label_datatype(classes), "shape": [-1]},
                {"name": PROBA_OUTPUT, "datatype": "FP32", "shape": [-1, len(classes)]},
            ]
            if is_classifier
            else [{"name": VALUE_OUTPUT, "datatype": "FP32", "shape": [-1, 1]}]
        ),
        "classes": classes,
        "nan_policy": nan_policy,
        "parity": {"max_abs_diff": max_abs, "tolerance": parity_tolerance, "rows": int(x.shape[0])},
        "evaluation": evaluation or {},
        "lineage": _lineage(estimator, reference_sha256 or _sha256_array(x), created),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "model.onnx").write_bytes(onnx_model.SerializeToString())
        _write_json(tmp / "ondeck.json", meta)
        _write_json(tmp / "reference.json", reference_profile)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # a reader never sees a half-written package
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _as_fitted(estimator: Any, x: np.ndarray, features: list[str]) -> Any:
    if getattr(estimator, "feature_names_in_", None) is None:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=features)


def _check_name(value: str, what: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value or ""):
        raise UserError(f"{what} {value!r} must be 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")


def _feature_names(estimator: Any, reference: Any) -> list[str]:
    if not hasattr(reference, "columns"):
        raise UserError("reference data must be a table with named columns")
    columns = [str(c) for c in reference.columns]
    known = getattr(estimator, "feature_names_in_", None)
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise UserError(f"the estimator ({type(estimator).__name__}) is not fitted")
    if known is not None:
        names = [str(f) for f in known]
        missing = [f for f in names if f not in columns]
        if missing:
            raise UserError(
                f"reference columns do not match the estimator: missing {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
        return names
    numeric = [c for c in columns if str(reference[c].dtype) != "object"]
    if len(numeric) != n_in:
        raise UserError(
            f"reference columns do not match the estimator: it takes {n_in} features, "
            f"the reference has {len(numeric)} numeric columns ({', '.join(numeric[:5])}...)"
        )
    return numeric


def _convert(estimator: Any, n_features: int):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        model = to_onnx(
            estimator,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={"zipmap": False} if hasattr(estimator, "predict_proba") else None,
            target_opset=17,
        )
    except Exception as exc:  # skl2onnx raises many types for "cannot convert this"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot convert {type(estimator).__name__} to ONNX: {first}") from None
    # Stable output names, so the served tensors are named the same for every estimator.
    renames = {}
    outs = list(model.graph.output)
    if hasattr(estimator, "predict_proba") and len(outs) == 2:
        renames = {outs[0].name: LABEL_OUTPUT, outs[1].name: PROBA_OUTPUT}
    elif len(outs) == 1:
        renames = {outs[0].name: VALUE_OUTPUT}
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
    for o in model.graph.output:
        o.name = renames.get(o.name, o.name)
    return model


def _run_onnx(model_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {INPUT_NAME: x})))


def _label_datatype(classes: list[Any]) -> str:
    return "BYTES" if any(isinstance(c, str) for c in classes) else "INT64"


def _json_scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _lineage(estimator: Any, reference_sha256: str, created: str | None) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "estimator": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "params": _json_safe(estimator.get_params(deep=False)),
        "libraries": {
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        },
        "reference_sha256": reference_sha256,
        "created": created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
    }


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            out[k] = v.item()
        else:
            out[k] = repr(v) if not hasattr(v, "get_params") else type(v).__name__
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_array(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
