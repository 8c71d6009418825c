"""What rows a model takes, and the one set of rules that rejects rows it cannot take.

Shared by ``ondeck.load`` (in-process), ``ondeck batch`` (offline) and the server's protocol layer,
so a bad row gets the same reason code and message wherever it is sent. Protocol-level checks (tensor
names, datatypes, shape versus data length, body size) belong to ``ondeck.serving.protocol``; this
module starts from a 2-D array or a DataFrame.

Reason codes are metric label values (``ondeck_validation_errors_total{reason}``): keep the set small.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ondeck.errors import InvalidInput

NAN_POLICIES = ("reject", "allow")

# Stable reason codes, one per kind of problem.
ZERO_ROWS = "zero_rows"
SHAPE = "shape"
FEATURE_COUNT = "feature_count"
NON_NUMERIC = "non_numeric"
NAN = "nan"
MISSING_FEATURE = "missing_feature"


@dataclass(frozen=True)
class InputSchema:
    """The model's single input tensor: ``[rows, len(features)]`` of FP32, features in this order."""

    features: tuple[str, ...]
    nan_policy: str = "reject"
    input_name: str = "input"

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], nan_policy: str | None = None) -> "InputSchema":
        spec = meta["inputs"][0]
        policy = nan_policy or meta.get("nan_policy", "reject")
        if policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {policy!r}")
        return cls(tuple(spec["features"]), policy, spec["name"])

    @property
    def n_features(self) -> int:
        return len(self.features)

    def describe_count(self) -> str:
        names = ", ".join(self.features[:5]) + (", ..." if self.n_features > 5 else "")
        return f"{self.n_features} features ({names})"

    def validate(self, x: Any) -> np.ndarray:
        """Rows as a C-contiguous float32 ``[n, n_features]`` array, or :class:`InvalidInput`."""
        if hasattr(x, "columns"):  # a pandas DataFrame: match columns by name, not position
            x = self.frame_to_array(x)
        arr = _as_float32(x)
        if arr.ndim == 1 and arr.size == self.n_features:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise InvalidInput(SHAPE, f"expected rows of shape [n, {self.n_features}], got shape {list(arr.shape)}")
        if arr.shape[0] == 0:
            raise InvalidInput(ZERO_ROWS, "the request has zero rows; send at least one")
        if arr.shape[1] != self.n_features:
            raise InvalidInput(
                FEATURE_COUNT, f"expected {self.describe_count()} per row, got {arr.shape[1]}"
            )
        if self.nan_policy == "reject":
            self._reject_non_finite(arr)
        return arr

    def _reject_non_finite(self, arr: np.ndarray) -> None:
        # One vectorised pass; the slow search for *where* only runs on the error path.
        if np.isfinite(arr.sum()) or np.isfinite(arr).all():
            return
        rows, cols = np.nonzero(~np.isfinite(arr))
        r, c = int(rows[0]), int(cols[0])
        raise InvalidInput(
            NAN,
            f"row {r} feature '{self.features[c]}' is {arr[r, c]}; this model rejects NaN and infinity "
            f"({rows.size} such value{'s' if rows.size != 1 else ''} in the request)",
        )

    def frame_to_array(self, frame: Any) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InvalidInput(MISSING_FEATURE, f"missing feature column{'s' if len(missing) > 1 else ''}: {shown}")
        return _as_float32(frame[list(self.features)], columns=self.features)

    def row_problems(self, arr: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """For offline scoring: a mask of rows the model can take and, for the others, why not.

        ``arr`` is float64 ``[n, n_features]`` with NaN where a value was missing or not a number.
        Returns (valid_mask, reasons for the invalid rows in order).
        """
        if self.nan_policy == "allow":
            return np.ones(arr.shape[0], dtype=bool), []
        bad = ~np.isfinite(arr)
        valid = ~bad.any(axis=1)
        reasons = []
        for r in np.flatnonzero(~valid):
            cols = np.flatnonzero(bad[r])
            reasons.append("; ".join(f"feature '{self.features[c]}' is {arr[r, c]}" for c in cols[:3]))
        return valid, reasons


def _as_float32(x: Any, columns: tuple[str, ...] | None = None) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float32, order="C")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(NON_NUMERIC, _non_numeric_message(x, columns, exc)) from None
    return arr


def _non_numeric_message(x: Any, columns: tuple[str, ...] | None, exc: Exception) -> str:
    if columns is not None and hasattr(x, "dtypes"):
        for name in columns:
            col = x[name]
            try:
                np.asarray(col, dtype=np.float32)
            except (TypeError, ValueError):
                sample = next((v for v in col if not _is_number(v)), None)
                return f"feature '{name}' has a non-numeric value {sample!r}"
    return f"rows must be numbers: {exc}"


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
