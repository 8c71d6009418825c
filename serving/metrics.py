"""The server's Prometheus metrics (names in docs/metrics.md), cheap enough for every request.

Every counter, gauge and histogram bucket is one float64 slot in a shared-memory array with one row
per worker: a worker only ever writes its own row (no locks: a slot has one writer), and a scrape
of ``/metrics`` on any worker sums the rows, so the figures are complete whichever worker answers.
The layout (which slot is which series) is a pure function of the models and the variant, so the
parent and every worker compute the same one.

Per-feature and prediction bins are the costly part (20 features binned per row), so rows are
buffered per model and binned in bulk with :func:`ondeck.package.profile.bin_index` when
``ROW_BUFFER`` rows wait, on a short timer, and before this worker renders a scrape.
"""
from __future__ import annotations

import mmap
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ondeck.package.profile import bin_index
from ondeck.package.schema import FEATURE_COUNT, MISSING_FEATURE, NAN, NON_NUMERIC, SHAPE, ZERO_ROWS
from ondeck.serving.protocol.tensors import BAD_JSON, BAD_REQUEST, DATATYPE, UNKNOWN_INPUT, UNKNOWN_OUTPUT

PROTOCOLS = ("rest_v2", "rest_v1", "grpc")
CODES = ("200", "400", "404", "405", "413", "500", "503")
BODY_TOO_LARGE = "body_too_large"
NOT_FOUND = "not_found"
REASONS = (ZERO_ROWS, SHAPE, FEATURE_COUNT, NON_NUMERIC, NAN, MISSING_FEATURE, DATATYPE, UNKNOWN_INPUT,
           UNKNOWN_OUTPUT, BODY_TOO_LARGE, BAD_JSON, BAD_REQUEST, NOT_FOUND)
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
ROW_BUFFER = 1024


@dataclass(frozen=True)
class ModelShape:
    """What the layout needs to know of a served model (read from its package, no ONNX needed)."""

    name: str
    version: str
    features: tuple[tuple[str, tuple[float, ...]], ...] = ()   # (feature, bin edges)
    predictions: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (output, bin edges)

    @classmethod
    def of(cls, model: Any) -> "ModelShape":
        ref = model.reference
        feats = tuple((f, tuple(ref["features"][f]["bin_edges"])) for f in model.features)
        preds = tuple((o, tuple(p["bin_edges"])) for o, p in ref["prediction"].items())
        return cls(model.name, model.version, feats, preds)


@dataclass
class Histogram:
    base: int  # len(bounds) + 1 bucket slots (the last is +Inf), then one slot for the sum
    bounds: tuple[float, ...]


@dataclass
class ModelSlots:
    """Slot numbers of one model's series."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    duration: dict[str, Histogram] = field(default_factory=dict)
    validation: dict[str, int] = field(default_factory=dict)
    rows: int = -1
    batch: Histogram | None = None
    feature_base: int = -1   # features' bins, one after another
    feature_offsets: tuple[int, ...] = ()
    prediction_base: int = -1
    prediction_offsets: tuple[int, ...] = ()
    feedback: int = -1
    feedback_correct: int = -1
    feedback_abs_error: int = -1
    feedback_unmatched: int = -1
    feedback_positive: int = -1
    payload_records: int = -1
    payload_dropped: int = -1
    in_flight: int = -1


# (name, type, help); the order of exposition.
FAMILIES = (
    ("ondeck_requests_total", "counter", "Inference requests answered, by protocol and HTTP status."),
    ("ondeck_request_duration_seconds", "histogram", "Time from request parsed to response written."),
    ("ondeck_requests_in_flight", "gauge", "Inference requests parsed and not yet answered."),
    ("ondeck_inference_rows_total", "counter", "Rows predicted."),
    ("ondeck_batch_size", "histogram", "Rows per model run (adaptive batching)."),
    ("ondeck_validation_errors_total", "counter", "Requests rejected before the model ran, by reason."),
    ("ondeck_feature_bin_total", "counter", "Rows whose feature fell in that reference bin."),
    ("ondeck_prediction_bin_total", "counter", "Predictions that fell in that reference bin."),
    ("ondeck_feedback_total", "counter", "Feedback items joined to a served prediction."),
    ("ondeck_feedback_correct_total", "counter", "Joined feedback whose predicted class was the true label."),
    ("ondeck_feedback_absolute_error_total", "counter", "Sum of |prediction - truth| over joined feedback."),
    ("ondeck_feedback_unmatched_total", "counter", "Feedback ids that matched no served prediction."),
    ("ondeck_feedback_positive_total", "counter", "Joined feedback whose truth is a positive outcome (class 1 / value 1)."),
    ("ondeck_payload_log_records_total", "counter", "Request/response pairs written to the payload log."),
    ("ondeck_payload_log_dropped_total", "counter", "Pairs dropped because the payload log queue was full."),
    ("ondeck_model_info", "gauge", "1 per loaded model."),
)


class Layout:
    """Which slot holds which series, and how to render them all."""

    def __init__(self, variant: str, models: list[ModelShape]):
        self.variant = variant
        self.size = 0
        self.lines: dict[str, list[tuple[str, int, int]]] = {name: [] for name, _, _ in FAMILIES}
        # Requests for a model or version that is not served: counted once, with empty labels.
        self.unknown = self._add_model(ModelShape("", ""), served=False)
        self.models = {(m.name, m.version): self._add_model(m, served=True) for m in models}

    def _slot(self, family: str, labels: str, span: int = 1, render: bool = True) -> int:
        slot = self.size
        self.size += span
        if render:
            self.lines[family].append((labels, slot, slot + span))
        return slot

    def _histogram(self, family: str, labels: str, bounds: tuple[float, ...]) -> Histogram:
        h = Histogram(self.size, bounds)
        for i, bound in enumerate((*bounds, float("inf"))):
            le = "+Inf" if bound == float("inf") else _num(bound)
            # A bucket line sums the non-cumulative bucket slots up to it.
            self.lines[family + "_bucket"].append((f'{labels},le="{le}"', h.base, h.base + i + 1))
        self.lines[family + "_count"].append((labels, h.base, h.base + len(bounds) + 1))
        self.size += len(bounds) + 1
        self.lines[family + "_sum"].append((labels, self.size, self.size + 1))
        self.size += 1
        return h

    def _add_model(self, m: ModelShape, served: bool) -> ModelSlots:
        for name, kind, _ in FAMILIES:
            if kind == "histogram":
                for suffix in ("_bucket", "_count", "_sum"):
                    self.lines.setdefault(name + suffix, [])
        base = f'model="{_esc(m.name)}",version="{_esc(m.version)}",variant="{_esc(self.variant)}"'
        s = ModelSlots()
        for protocol in PROTOCOLS:
            for code in CODES:
                s.requests[protocol, code] = self._slot("ondeck_requests_total", f'{base},protocol="{protocol}",code="{code}"')
            s.duration[protocol] = self._histogram("ondeck_request_duration_seconds", f'{base},protocol="{protocol}"', DURATION_BUCKETS)
        for reason in REASONS:
            s.validation[reason] = self._slot("ondeck_validation_errors_total", f'{base},reason="{reason}"')
        if not served:
            return s
        s.in_flight = self._slot("ondeck_requests_in_flight", base)
        s.rows = self._slot("ondeck_inference_rows_total", base)
        s.batch = self._histogram("ondeck_batch_size", base, BATCH_BUCKETS)
        s.feature_base, s.feature_offsets = self._bins("ondeck_feature_bin_total", base, "feature", m.features)
        s.prediction_base, s.prediction_offsets = self._bins("ondeck_prediction_bin_total", base, "output", m.predictions)
        s.feedback = self._slot("ondeck_feedback_total", base)
        s.feedback_correct = self._slot("ondeck_feedback_correct_total", base)
        s.feedback_abs_error = self._slot("ondeck_feedback_absolute_error_total", base)
        s.feedback_unmatched = self._slot("ondeck_feedback_unmatched_total", base)
        s.feedback_positive = self._slot("ondeck_feedback_positive_total", base)
        s.payload_records = self._slot("ondeck_payload_log_records_total", base)
        s.payload_dropped = self._slot("ondeck_payload_log_dropped_total", base)
        self.lines["ondeck_model_info"].append((base, -1, -1))  # constant 1, not summed over workers
        return s

    def _bins(self, family: str, base: str, key: str, columns) -> tuple[int, tuple[int, ...]]:
        start, offsets = self.size, []
        for column, edges in columns:
            offsets.append(self.size - start)
            for b in range(len(edges) + 1):
                self._slot(family, f'{base},{key}="{_esc(column)}",bin="{b}"')
        return start, tuple(offsets)

    def render(self, totals: np.ndarray) -> bytes:
        out = []
        for name, kind, help_text in FAMILIES:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            for series in ((name + "_bucket", name + "_count", name + "_sum") if kind == "histogram" else (name,)):
                for labels, a, b in self.lines[series]:
                    value = 1.0 if a < 0 else (totals[a] if b == a + 1 else totals[a:b].sum())
                    out.append(f"{series}{{{labels}}} {_num(value)}\n")
        return "".join(out).encode()


class SharedCounters:
    """The slots of all workers in one shared, anonymous memory map (inherited by spawned workers)."""

    def __init__(self, layout: Layout, workers: int, fd: int | None = None):
        self.layout = layout
        nbytes = max(8, layout.size * workers * 8)
        if fd is None:
            fd = memfd("ondeck-metrics", nbytes)
        self.fd = fd
        self._map = mmap.mmap(fd, nbytes)
        self.all = np.frombuffer(self._map, dtype=np.float64)[: layout.size * workers].reshape(workers, layout.size)

    def worker(self, index: int) -> np.ndarray:
        return self.all[index]

    def render(self) -> bytes:
        return self.layout.render(self.all.sum(axis=0))


class ModelStats:
    """One worker's writer of one model's series; only the owning worker's event loop calls it.

    Writes go through a memoryview of the worker's row (~100 ns an update, where a numpy scalar
    ``+=`` takes ~180 ns), and a model run's rows and predictions are kept by reference and binned
    ``ROW_BUFFER`` rows at a time: a copy into a preallocated buffer cost more per run (~0.6 us) than
    the reference plus one concatenate per flush (~0.2 us a row).
    """

    def __init__(self, values: np.ndarray, slots: ModelSlots, shape: ModelShape | None = None):
        self.v = values
        self.s = slots
        self._m = memoryview(values)  # a C-contiguous float64 row of SharedCounters.all
        self._feature_edges = [np.asarray(e, dtype=np.float64) for _, e in shape.features] if shape else []
        self._prediction_edges = [np.asarray(e, dtype=np.float64) for _, e in shape.predictions] if shape else []
        self._xs: list[np.ndarray] = []  # runs' rows since the last flush
        self._ps: list[list[np.ndarray]] = [[] for _ in self._prediction_edges]  # and their predictions, by column
        self._n = 0

    def request(self, protocol: str, code: str, seconds: float) -> None:
        self._m[self.s.requests[protocol, code]] += 1
        _observe(self._m, self.s.duration[protocol], seconds)

    def rejected(self, reason: str) -> None:
        self._m[self.s.validation[reason]] += 1

    def in_flight(self, delta: int) -> None:
        self._m[self.s.in_flight] += delta

    def batch(self, x: np.ndarray, predictions: Sequence[np.ndarray]) -> None:
        """A model run: its rows, and the rows and predictions (one array per profiled prediction column,
        in the order of the model's shape) for the bin counters."""
        n = x.shape[0]
        self._m[self.s.rows] += n
        _observe(self._m, self.s.batch, n)
        self._xs.append(x)
        for kept, column in zip(self._ps, predictions):
            kept.append(column)
        self._n += n
        if self._n >= ROW_BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._n:
            xs, ps, self._n = self._xs, self._ps, 0
            self._xs, self._ps = [], [[] for _ in ps]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            _add_bins(self.v, self.s.feature_base, self.s.feature_offsets, self._feature_edges, x.T.astype(np.float64))
            _add_bins(self.v, self.s.prediction_base, self.s.prediction_offsets, self._prediction_edges,
                      [c[0] if len(c) == 1 else np.concatenate(c) for c in ps])

    def add(self, slot: int, amount: float = 1.0) -> None:
        self._m[slot] += amount


class NullStats(ModelStats):
    """Counts nothing: ``--no-metrics``, which exists to measure what counting costs."""

    def request(self, protocol: str, code: str, seconds: float) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def in_flight(self, delta: int) -> None:
        pass

    def batch(self, x: np.ndarray, predictions: Sequence[np.ndarray]) -> None:
        pass

    def flush(self) -> None:
        pass

    def add(self, slot: int, amount: float = 1.0) -> None:
        pass


def _add_bins(values: np.ndarray, base: int, offsets: tuple[int, ...], edges: list[np.ndarray],
              columns: Sequence[np.ndarray]) -> None:
    """Count each column into its bins, which lie one after another from ``base``: one bincount and one
    add for all columns (a bincount and a slice add per column cost ~60% more)."""
    if not edges:
        return
    total = offsets[-1] + len(edges[-1]) + 1
    index = np.concatenate([bin_index(e, c) + offsets[i] for i, (e, c) in enumerate(zip(edges, columns))])
    values[base:base + total] += np.bincount(index, minlength=total)


def _observe(values: memoryview, h: Histogram, x: float) -> None:
    values[h.base + bisect_left(h.bounds, x)] += 1
    values[h.base + len(h.bounds) + 1] += x


def memfd(name: str, nbytes: int) -> int:
    import os

    fd = os.memfd_create(name)  # close-on-exec; spawned workers get it through pass_fds
    os.ftruncate(fd, nbytes)
    return fd


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
