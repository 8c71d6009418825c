"""Paired comparison of a primary and a shadow answer to the same request.

Pure: response bodies in, per-request agreement and score difference out. It reads the outputs every
ondeck package serves (``label`` and ``probabilities`` for classifiers, ``predictions`` for
regressors) from V2 JSON, V2 gRPC and V1 JSON answers.

One request is one pair, whatever its row count: the classes agree when every row's class is the
same, and the difference is the mean over rows of |primary score - shadow score|. A classifier's
score is the positive-class probability when there are two classes, else the top probability; a
regressor's score is its prediction.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple, Sequence

import orjson


class CompareError(ValueError):
    """An answer without outputs we can read, or two answers that do not line up."""


class Predictions(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is made per answer compared, and it is 4x cheaper to make.
    classes: tuple | None  # one class per row (classifiers)
    scores: tuple[float, ...] | None  # one score per row
    request_id: str | None = None  # the answer's ``id``: V2 answers echo the request's

    @property
    def rows(self) -> int:
        return len(self.classes if self.classes is not None else self.scores or ())

    def part(self, start: int, rows: int) -> "Predictions":
        """Rows ``start`` .. ``start + rows`` (one request's share of a merged answer)."""
        end = start + rows
        return Predictions(self.classes[start:end] if self.classes is not None else None,
                           self.scores[start:end] if self.scores is not None else None, self.request_id)


class Pair(NamedTuple):
    agree: bool | None  # None when neither side predicts classes (regressors)
    abs_diff: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"agree": self.agree, "abs_diff": self.abs_diff}


def compare(primary: Predictions, shadow: Predictions) -> Pair:
    if primary.rows != shadow.rows:
        raise CompareError(f"primary answered {primary.rows} rows, shadow {shadow.rows}")
    return compare_part(primary, shadow, 0, primary.rows)


def compare_part(primary: Predictions, shadow: Predictions, start: int, rows: int) -> Pair:
    """``primary`` against the shadow's ``rows`` rows from ``start`` on: a merged answer holds many
    requests' rows, and slicing it into a :class:`Predictions` per request costs more than comparing."""
    n = primary.rows
    if n == 0 or n != rows or start + n > shadow.rows:
        raise CompareError(f"primary answered {n} rows, shadow {min(rows, shadow.rows - start)} for that request")
    agree = None
    if primary.classes is not None and shadow.classes is not None:
        agree = primary.classes == shadow.classes[start:start + n]
    abs_diff = None
    if primary.scores is not None and shadow.scores is not None:
        theirs = shadow.scores
        abs_diff = sum(abs(a - theirs[start + i]) for i, a in enumerate(primary.scores)) / n
    if agree is None and abs_diff is None:
        raise CompareError("the answers have no outputs in common to compare")
    return Pair(agree, abs_diff)


def compare_merged(docs: Sequence[Any], rows: Sequence[int], shadow: Predictions,
                   start: int = 0) -> list["Pair | CompareError"]:
    """Each primary's parsed JSON answer (or the :class:`CompareError` of one that is not JSON) against its
    own rows of the shadow's answer to the merged request, in order (request ``i`` had ``rows[i]`` rows,
    the first of them from row ``start``): that request's :class:`Pair`, or the error it met.

    A two-class classifier's answer (the common case) is compared as it was read, without building its
    :class:`Predictions`: per mirrored request, that is most of what the router spends on comparing."""
    shadow_classes = list(shadow.classes) if shadow.classes is not None else None
    out: list[Pair | CompareError] = []
    for doc, n in zip(docs, rows):
        try:
            pair = _two_class_pair(doc, n, shadow_classes, shadow.scores, start)
            out.append(pair if pair is not None else compare_part(from_doc(doc), shadow, start, n))
        except CompareError as exc:
            out.append(exc)
        start += n
    return out


def _two_class_pair(doc: Any, n: int, shadow_classes: list | None, shadow_scores: Sequence[float] | None,
                    start: int) -> Pair | None:
    """The pair of a V2 answer of exactly ``label`` [n] and ``probabilities`` [n, 2]; None for any other answer."""
    outputs = doc.get("outputs") if type(doc) is dict else None
    if type(outputs) is not list or len(outputs) != 2 or shadow_classes is None or shadow_scores is None:
        return None
    label = probabilities = None
    for o in outputs:
        if type(o) is not dict:
            return None
        name, shape, data = o.get("name"), o.get("shape"), o.get("data")
        if name == "label" and shape == [n] and type(data) is list and len(data) == n:
            label = data
        elif name == "probabilities" and shape == [n, 2] and type(data) is list and len(data) == 2 * n:
            probabilities = data
    end = start + n
    if label is None or probabilities is None or end > len(shadow_classes) or end > len(shadow_scores):
        return None
    try:
        if n == 1:
            diff = abs(probabilities[1] - shadow_scores[start])
        else:
            diff = sum(abs(a - b) for a, b in zip(probabilities[1::2], shadow_scores[start:end])) / n
    except TypeError:  # not numbers: the general path says what is wrong
        return None
    return Pair(label == shadow_classes[start:end], diff)


def loads_answer(body: bytes) -> Any:
    """A JSON answer parsed, or the :class:`CompareError` saying it is not JSON (so only its own pair fails)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return CompareError(f"answer is not JSON: {exc}")


def from_json(body: bytes) -> Predictions:
    """Predictions from a V2 (``outputs``) or V1 (``predictions``) JSON answer."""
    return from_doc(loads_answer(body))


def from_doc(doc: Any) -> Predictions:
    """Predictions from a parsed V2 or V1 JSON answer."""
    if isinstance(doc, CompareError):
        raise doc
    if not isinstance(doc, dict):
        raise CompareError("answer is not a JSON object")
    if isinstance(doc.get("outputs"), list):
        tensors = {o.get("name"): (o.get("shape") or [], o.get("data") or []) for o in doc["outputs"] if isinstance(o, dict)}
        request_id = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else None
        return from_tensors(tensors, request_id)
    if isinstance(doc.get("predictions"), list):
        return _from_v1(doc["predictions"])
    raise CompareError("answer has neither 'outputs' nor 'predictions'")


def from_grpc(response: Any) -> Predictions:
    """Predictions from a ``ModelInferResponse`` (typed contents or raw_output_contents)."""
    tensors = {}
    raw = list(response.raw_output_contents)
    for i, out in enumerate(response.outputs):
        data = _raw_values(out.datatype, raw[i]) if i < len(raw) else _typed_values(out.contents)
        tensors[out.name] = (list(out.shape), data)
    return from_tensors(tensors, response.id or None)


def from_tensors(tensors: dict[str, tuple[Sequence[int], Sequence[Any]]], request_id: str | None = None) -> Predictions:
    classes = scores = None
    if "label" in tensors:
        classes = tuple(_plain(v) for v in tensors["label"][1])
    if "probabilities" in tensors:
        shape, data = tensors["probabilities"]
        k = int(shape[-1]) if len(shape) >= 2 and shape[-1] > 0 else 1
        rows = [data[i:i + k] for i in range(0, len(data), k)]
        scores = tuple(float(r[1]) if k == 2 else float(max(r)) for r in rows)
        if classes is None:
            classes = tuple(max(range(k), key=r.__getitem__) for r in rows)
    elif "predictions" in tensors:
        scores = tuple(float(v) for v in tensors["predictions"][1])
    if classes is None and scores is None:
        raise CompareError(f"no 'label', 'probabilities' or 'predictions' output (got {sorted(map(str, tensors))})")
    return Predictions(classes=classes, scores=scores, request_id=request_id)


def _from_v1(predictions: list[Any]) -> Predictions:
    if predictions and all(isinstance(p, list) for p in predictions):  # probability rows
        return from_tensors({"probabilities": ([len(predictions), len(predictions[0])], [x for p in predictions for x in p])})
    if all(isinstance(p, float) for p in predictions):  # a regressor's values
        return Predictions(classes=None, scores=tuple(predictions))
    return Predictions(classes=tuple(predictions), scores=None)  # class labels


def _plain(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


_STRUCT = {"INT64": "q", "INT32": "i", "INT16": "h", "INT8": "b", "UINT64": "Q", "UINT32": "I", "UINT16": "H",
           "UINT8": "B", "FP64": "d", "FP32": "f", "BOOL": "?"}


def _raw_values(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":  # 4-byte little-endian length, then the bytes, repeated
        out, i = [], 0
        while i + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, i)
            out.append(raw[i + 4:i + 4 + n])
            i += 4 + n
        return out
    code = _STRUCT.get(datatype)
    if code is None:
        raise CompareError(f"cannot read raw {datatype} output")
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))


def _typed_values(contents: Any) -> list[Any]:
    for name in ("int64_contents", "int_contents", "uint64_contents", "uint_contents", "fp32_contents",
                 "fp64_contents", "bool_contents", "bytes_contents"):
        values = getattr(contents, name)
        if len(values):
            return list(values)
    return []
