"""Mirrored V2 JSON requests merged into one request to the shadow, and its answer split back.

A mirrored request costs the shadow server a whole request (HTTP, JSON, validation, metrics) for one
row; its adaptive batching merges the model runs of requests that arrive together, but not that
per-request work. The shadow's answers are only compared, never returned to anyone, so the router
sends a burst of mirrored requests that have the same form (same path, same inputs apart from the
row count, same requested outputs) as one request with all their rows, and splits the answer by
rows: each mirrored request is still compared, counted and logged on its own. Measured with the
router benchmark's setup, the shadow server's CPU per mirrored request went from ~160 us (sent one
by one) to ~55 us (sent in bursts, batched by the server) to ~25-40 us (10 ms bursts merged, ~11 per
request) to ~13 us (50 ms bursts, ~60 per request).

What the shadow server sees is then fewer, larger requests: its per-row series (feature and
prediction distributions, rows scored) are as with one request per mirror; its request count and
request latency are per merged request. ``shadow.merge: false`` sends every request as it came.
Only plain V2 JSON ``infer`` requests merge (flat ``data``, no parameters, no binary extension);
V1, gRPC and anything else are sent one by one.
"""
from __future__ import annotations

import math
import re
import uuid
from typing import Any, Sequence

import orjson

from ondeck.serving.router.compare import CompareError, Predictions, from_tensors

MAX_MERGED_ROWS = 256  # one merged request stays a modest body, and runs as a few model batches at most
V2_INFER_PATH = re.compile(rb"^/v2/models/[^/?]+(/versions/[^/?]+)?/infer$")
_REQUEST_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_INPUT_KEYS = frozenset({"name", "datatype", "shape", "data", "parameters"})


class Mergeable:
    """The parts of one mirrored V2 JSON request that a merge needs, or why it cannot merge (``key`` None)."""

    __slots__ = ("key", "rows", "inputs", "outputs")

    def __init__(self, key: tuple | None, rows: int = 0, inputs: Sequence[dict] = (), outputs: Any = None):
        self.key = key  # requests with equal keys merge: path, inputs' names/types/row shapes, outputs
        self.rows = rows
        self.inputs = inputs
        self.outputs = outputs


CANNOT = Mergeable(None)


def mergeable(path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Mergeable:
    """What merging ``body`` needs; ``CANNOT`` for anything but a plain V2 JSON infer request."""
    if not V2_INFER_PATH.match(path):
        return CANNOT
    for name, _ in headers:
        if name.lower() == b"inference-header-content-length":  # the binary extension: not JSON throughout
            return CANNOT
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return CANNOT
    if not isinstance(doc, dict) or not doc.keys() <= _REQUEST_KEYS or doc.get("parameters"):
        return CANNOT
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return CANNOT
    rows, signature = None, []
    for t in inputs:
        if not isinstance(t, dict) or not t.keys() <= _INPUT_KEYS or t.get("parameters"):
            return CANNOT
        shape, data = t.get("shape"), t.get("data")
        if (not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(data, list) or len(data) != math.prod(shape) or (data and isinstance(data[0], list))):
            return CANNOT  # nested data, or a shape the data does not fill: the shadow answers it alone
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            return CANNOT
        signature.append((t.get("name"), t.get("datatype"), tuple(shape[1:])))
    outputs = doc.get("outputs")
    if not rows or rows > MAX_MERGED_ROWS:
        return CANNOT
    return Mergeable((path, tuple(signature), orjson.dumps(outputs)), rows, inputs, outputs)


def merged_request(path: bytes, parts: Sequence[Mergeable]) -> tuple[str, bytes]:
    """(id, HTTP/1.1 request bytes) of one V2 request holding every part's rows, in order."""
    first = parts[0]
    total = sum(p.rows for p in parts)
    inputs = []
    for i, t in enumerate(first.inputs):
        data: list = []
        for p in parts:
            data += p.inputs[i]["data"]
        inputs.append({"name": t["name"], "datatype": t["datatype"], "shape": [total, *t["shape"][1:]], "data": data})
    request_id = "ondeck-shadow-" + uuid.uuid4().hex
    doc: dict[str, Any] = {"id": request_id, "inputs": inputs}
    if first.outputs is not None:
        doc["outputs"] = first.outputs
    body = orjson.dumps(doc)
    head = b"POST %s HTTP/1.1\r\nhost: shadow\r\ncontent-type: application/json\r\nx-request-id: %s\r\n" \
           b"content-length: %d\r\n\r\n" % (path, request_id.encode(), len(body))
    return request_id, head + body


def merged_answer(body: bytes, rows: int) -> Predictions:
    """The shadow's V2 JSON answer to a merged request of ``rows`` rows, read once for all its parts
    (:func:`compare.compare_part` then compares each request with its share)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CompareError(f"answer is not JSON: {exc}") from None
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise CompareError("answer has no 'outputs'")
    tensors = {}
    for o in outputs:
        if not isinstance(o, dict):
            continue
        shape, data = o.get("shape") or [], o.get("data") or []
        if not shape or shape[0] != rows or (data and isinstance(data[0], list)):
            raise CompareError(f"output {o.get('name')!r} of the merged answer has shape {shape}, not {rows} rows")
        tensors[o.get("name")] = (shape, data)
    return from_tensors(tensors)
