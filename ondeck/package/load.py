"""``ondeck.load(DIR)``: a model package as an in-process predictor.

The same object backs the server and ``ondeck batch``: ``validate`` + ``run`` are the two halves
of a prediction that the server's batcher calls separately (validate per request, run per batch).
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ondeck.errors import UserError
from ondeck.package.build import FORMAT, LABEL_OUTPUT, PROBA_OUTPUT, VALUE_OUTPUT
from ondeck.package.schema import InputSchema


class Model:
    """A loaded package. Thread-safe: onnxruntime sessions may be run concurrently."""

    def __init__(self, path: str | Path, *, threads: int | None = None, nan_policy: str | None = None):
        self.path = Path(path)
        meta_path = self.path / "ondeck.json"
        if not meta_path.is_file():
            raise UserError(f"{self.path} is not an ondeck package (no ondeck.json)")
        try:
            self.metadata: dict[str, Any] = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise UserError(f"{meta_path} is not valid JSON: {exc}") from None
        if self.metadata.get("format") != FORMAT:
            raise UserError(f"{meta_path}: unsupported package format {self.metadata.get('format')!r}")
        self.schema = InputSchema.from_metadata(self.metadata, nan_policy=nan_policy)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"cannot load {self.path / 'model.onnx'}: {exc}") from None
        self._output_names = [o.name for o in self.session.get_outputs()]

    # -- identity -------------------------------------------------------------------------------
    name = property(lambda self: self.metadata["name"])
    version = property(lambda self: self.metadata["version"])
    task = property(lambda self: self.metadata["task"])
    classes = property(lambda self: self.metadata.get("classes"))
    features = property(lambda self: list(self.schema.features))

    @cached_property
    def reference(self) -> dict[str, Any]:
        return json.loads((self.path / "reference.json").read_text())

    # -- prediction -----------------------------------------------------------------------------
    def validate(self, x: Any) -> np.ndarray:
        """Rows the model can take, as float32 ``[n, features]``; raises ``InvalidInput``."""
        return self.schema.validate(x)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name for already validated rows."""
        return dict(zip(self._output_names, self.session.run(self._output_names, {self.schema.input_name: x})))

    def predict(self, x: Any) -> np.ndarray:
        """Class labels (classifiers) or values (regressors), one per row."""
        out = self.run(self.validate(x))
        if self.task == "classification":
            return np.asarray(self.classes, dtype=object if self._string_labels else None)[
                out[PROBA_OUTPUT].argmax(axis=1)
            ]
        return out[VALUE_OUTPUT].reshape(-1)

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities ``[n, classes]`` in the order of ``classes``."""
        if self.task != "classification":
            raise UserError(f"{self.name} is a regressor: it has no predict_proba")
        return self.run(self.validate(x))[PROBA_OUTPUT]

    @cached_property
    def _string_labels(self) -> bool:
        return any(isinstance(c, str) for c in self.classes or [])

    def __repr__(self) -> str:
        return f"<ondeck.Model {self.name}:{self.version} {self.task}, {self.schema.n_features} features>"


def load(path: str | Path, **kwargs: Any) -> Model:
    return Model(path, **kwargs)


__all__ = ["Model", "load", "LABEL_OUTPUT", "PROBA_OUTPUT", "VALUE_OUTPUT"]
