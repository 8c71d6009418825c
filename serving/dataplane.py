"""The protocol-agnostic data plane: models by name and version, and what happens around a prediction.

REST and gRPC are thin front-ends over this: they decode a request into rows (via
``ondeck.serving.protocol``), ask :meth:`ServedModel.submit` for outputs, encode them, and tell the
plane how it ended (``answered`` / ``failed``) so that metrics, payload logging and the drain on
shutdown see every request the same way whatever protocol carried it.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from ondeck import __version__
from ondeck.errors import InvalidInput, NotFound
from ondeck.package.build import PROBA_OUTPUT, VALUE_OUTPUT
from ondeck.package.load import Model
from ondeck.package.profile import prediction_columns
from ondeck.serving import payload_log
from ondeck.serving.batching import Batcher, BatchPolicy
from ondeck.serving.feedback import PredictionStore, key_of, parse_items, truth_code
from ondeck.serving.metrics import ModelShape, ModelStats, SharedCounters

SERVER_NAME = "ondeck"
EXTENSIONS = ["binary_tensor_data", "ondeck_feedback"]


def new_request_id() -> str:
    """128 random bits as hex, like a uuid4 without the version bits (and 5x cheaper)."""
    return os.urandom(16).hex()


class ServedModel:
    """One model version being served: its predictor, batcher, counters and recent predictions."""

    def __init__(self, model: Model, shape: ModelShape, stats: ModelStats, store: PredictionStore, policy: BatchPolicy):
        self.model = model
        self.name, self.version = model.name, model.version
        self.schema = model.schema
        self.outputs = {o["name"]: o for o in model.metadata["outputs"]}
        self.classes = model.classes if model.task == "classification" else None
        self.stats = stats
        self.store = store
        self._prediction_columns = [name for name, _ in shape.predictions]
        self.batcher = Batcher(self._run_batch, policy)

    def submit(self, rows: np.ndarray, request_id: str) -> asyncio.Future:
        return self.batcher.submit(rows, request_id)

    def _run_batch(self, x: np.ndarray, request_ids: list[str], counts: list[int]) -> dict[str, np.ndarray]:
        out = self.model.run(x)
        cols = prediction_columns(out.get(PROBA_OUTPUT), out.get(VALUE_OUTPUT))
        self.stats.batch(x, [cols[c] for c in self._prediction_columns])
        self.store.record([key_of(r) for r in request_ids], counts, cols.get("class"), cols["score"])
        return out

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """V2 model metadata; the input also lists its features (for one-tensor-per-feature requests)."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.model.metadata.get("platform", "onnxruntime_onnx"),
            "inputs": [{"name": i["name"], "datatype": i["datatype"], "shape": i["shape"],
                        "parameters": {"features": i["features"]}} for i in self.model.metadata["inputs"]],
            "outputs": [{"name": o["name"], "datatype": o["datatype"], "shape": o["shape"]} for o in self.outputs.values()],
        }


class DataPlane:
    def __init__(self, served: list[ServedModel], unknown: ModelStats, counters: SharedCounters,
                 variant: str, log: payload_log.PayloadLog | None = None):
        self.by_name: dict[str, dict[str, ServedModel]] = {}
        for s in served:  # the last version given for a name is its default
            self.by_name.setdefault(s.name, {})[s.version] = s
        self.served = served
        self.unknown = unknown
        self.counters = counters
        self.variant = variant
        self.log = log
        self.ready = True
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lookup -------------------------------------------------------------------------------
    def resolve(self, name: str, version: str | None = None) -> ServedModel:
        versions = self.by_name.get(name)
        if versions is None:
            raise NotFound(f"model '{name}' is not served here; served: {', '.join(self.by_name) or 'none'}")
        if not version:
            return next(reversed(versions.values()))
        served = versions.get(version)
        if served is None:
            raise NotFound(f"model '{name}' has no version '{version}'; served versions: {', '.join(versions)}")
        return served

    def versions(self, name: str) -> list[str]:
        return list(self.by_name.get(name, {}))

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    # -- one request's life -------------------------------------------------------------------
    def begin(self) -> None:
        """A request was parsed; ``answered`` or ``failed`` ends it (the drain waits for that)."""
        self.in_flight += 1
        self._idle.clear()

    def answered(self, served: ServedModel, protocol: str, started: float, request_id: str,
                 rows: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        served.stats.request(protocol, "200", time.perf_counter() - started)
        log = self.log
        if log is not None and log.sampled():
            rec = payload_log.record(request_id, served.name, served.version, self.variant, protocol, rows, outputs)
            if not log.offer(rec, served.stats):
                served.stats.add(served.stats.s.payload_dropped)
        self._end()

    def failed(self, served: ServedModel | None, protocol: str, started: float, exc: BaseException) -> tuple[int, str, str]:
        """Count a request that got an error; returns (HTTP status, reason, message) to answer with."""
        status, reason, message = describe(exc)
        stats = served.stats if served is not None else self.unknown
        if isinstance(exc, InvalidInput):
            stats.rejected(reason)
        stats.request(protocol, str(status), time.perf_counter() - started)
        self._end()
        return status, reason, message

    def _end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self) -> None:
        for s in self.served:
            s.batcher.flush()
        await self._idle.wait()

    # -- feedback -----------------------------------------------------------------------------
    def feedback(self, name: str, version: str | None, doc: Any, *, count_unmatched: bool = True) -> dict[str, int]:
        """Join true labels to served predictions. ``count_unmatched=False``: this is one of the
        router's fanned-out copies (every variant gets one), and the router counts the ids that no
        variant matched, once."""
        default = self.resolve(name, version)
        candidates = [default] if version else list(self.by_name[name].values())
        items = parse_items(doc)
        codes = [truth_code(i, it.truth, default.classes) for i, it in enumerate(items)]
        wanted = {(it.key, it.row): None for it in items}
        found = {s: s.store.find(wanted) for s in candidates}
        matched = unmatched = duplicates = 0
        for item, code in zip(items, codes):
            served, where = next(((s, f[item.key, item.row]) for s, f in found.items() if (item.key, item.row) in f),
                                 (None, None))
            if served is None:
                unmatched += 1
                if count_unmatched:
                    default.stats.add(default.stats.s.feedback_unmatched)
                continue
            rec = served.store.take(where, item.key)
            if rec is None:
                duplicates += 1
                continue
            matched += 1
            served.stats.add(served.stats.s.feedback)
            if code == 1:  # a positive outcome (conversion): class 1 (the second class), or the value 1
                served.stats.add(served.stats.s.feedback_positive)
            if served.classes is not None:
                served.stats.add(served.stats.s.feedback_correct, float(int(rec["cls"]) == code))
            else:
                served.stats.add(served.stats.s.feedback_abs_error, abs(float(rec["score"]) - code))
        return {"matched": matched, "unmatched": unmatched, "duplicates": duplicates}

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self) -> bytes:
        self.flush_stats()
        return self.counters.render()

    def flush_stats(self) -> None:
        for s in self.served:
            s.stats.flush()


def describe(exc: BaseException) -> tuple[int, str, str]:
    if isinstance(exc, InvalidInput):
        return exc.status, exc.reason, str(exc)
    return 500, "internal", f"the model failed: {type(exc).__name__}: {exc}"
