"""Tensors in and out of the Open Inference Protocol, shared by the REST and gRPC codecs.

One place turns what a request sent (``input`` as ``[n, features]``, or one tensor per feature)
into the rows a model takes, and the model's raw outputs into response tensors. The row rules
themselves (feature count, NaN policy, zero rows) are :mod:`ondeck.package.schema`'s, so a bad row
gets the same reason and message over REST, gRPC, ``ondeck.load`` and ``ondeck batch``.

Accepted input datatypes: FP16, FP32, FP64, INT8-INT64, UINT8-UINT64 and BOOL; values are cast to
FP32, the models' input type. BYTES is refused: a model takes numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ondeck.errors import InvalidInput
from ondeck.package.schema import MISSING_FEATURE, NON_NUMERIC, SHAPE, InputSchema

# Reason codes of the protocol layer (the row-level ones come from ondeck.package.schema).
DATATYPE = "datatype"
UNKNOWN_INPUT = "unknown_input"
UNKNOWN_OUTPUT = "unknown_output"
BAD_JSON = "bad_json"  # the body is not JSON
BAD_REQUEST = "bad_request"  # JSON, but not a request document (or a broken binary framing)

# V2 datatype -> little-endian numpy dtype (the binary extension and raw_*_contents are little-endian).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPE_OF = {dtype: name for name, dtype in DTYPES.items()}
ACCEPTED = ", ".join(DTYPES)


@dataclass
class InputTensor:
    """One decoded request tensor: its values as a flat or shaped numpy array."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False


def check_datatype(name: str, datatype: Any) -> np.dtype:
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(DATATYPE, f"input '{name}' has datatype {datatype!r}; send one of {ACCEPTED}")
    return dtype


def check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(SHAPE, f"input '{name}' has shape {shape!r}; a shape is a list of non-negative integers")
    return list(shape)


def from_values(name: str, datatype: Any, shape: Any, data: Any) -> InputTensor:
    """A tensor whose values came as JSON (possibly nested) lists or protobuf repeated fields."""
    check_datatype(name, datatype)
    shape = check_shape(name, shape)
    try:
        arr = np.array(data)
    except ValueError:  # ragged nesting
        raise InvalidInput(SHAPE, f"input '{name}' has ragged nested data; rows must all have the same length") from None
    if arr.dtype.kind not in "fiub":
        raise InvalidInput(NON_NUMERIC, f"input '{name}' has non-numeric data{_sample_non_number(data)}")
    return _shaped(name, datatype, shape, arr.reshape(-1))


def from_bytes(name: str, datatype: Any, shape: Any, raw: bytes | memoryview) -> InputTensor:
    """A tensor sent as raw little-endian bytes (binary extension, gRPC raw_input_contents)."""
    dtype = check_datatype(name, datatype)
    shape = check_shape(name, shape)
    if len(raw) % dtype.itemsize:
        raise InvalidInput(SHAPE, f"input '{name}' has {len(raw)} bytes of data, not a whole number of {datatype} values")
    return _shaped(name, datatype, shape, np.frombuffer(raw, dtype=dtype))


def _shaped(name: str, datatype: str, shape: list[int], flat: np.ndarray) -> InputTensor:
    expected = math.prod(shape)
    if flat.size != expected:
        raise InvalidInput(
            SHAPE, f"input '{name}' has shape {shape} ({expected} values) but {flat.size} values were sent"
        )
    return InputTensor(name, datatype, shape, flat.reshape(shape))


def _sample_non_number(data: Any) -> str:
    stack, seen = [data], 0
    while stack and seen < 10_000:
        v = stack.pop()
        seen += 1
        if isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif not isinstance(v, (int, float)):
            return f" (found {v!r})"
    return ""


def to_rows(schema: InputSchema, inputs: list[InputTensor]) -> np.ndarray:
    """The rows a request carries, as float32 ``[n, features]``, validated by the model's schema.

    Either one tensor named like the model's input (``[n, features]``, or ``[features]`` for one
    row), or one tensor per feature named by feature name (``[n]`` or ``[n, 1]`` each).
    """
    if not inputs:
        raise InvalidInput(BAD_REQUEST, f"the request has no inputs; send '{schema.input_name}' {_layout(schema)}")
    if len(inputs) == 1 and inputs[0].name == schema.input_name:
        return schema.validate(_as_float32(inputs[0]))
    return schema.validate(_columns(schema, inputs))


def _columns(schema: InputSchema, inputs: list[InputTensor]) -> np.ndarray:
    positions = {name: i for i, name in enumerate(schema.features)}
    unknown = [t.name for t in inputs if t.name not in positions]
    if unknown:
        raise InvalidInput(
            UNKNOWN_INPUT,
            f"unknown input '{unknown[0]}'; this model takes '{schema.input_name}' {_layout(schema)}, "
            "or one tensor per feature named by feature",
        )
    if len({t.name for t in inputs}) != len(inputs):
        raise InvalidInput(SHAPE, "an input tensor is sent twice")
    missing = [f for f in schema.features if f not in {t.name for t in inputs}]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InvalidInput(MISSING_FEATURE, f"missing feature input{'s' if len(missing) > 1 else ''}: {shown}")
    rows = None
    out = None
    for t in inputs:
        if len(t.shape) == 2 and t.shape[1] != 1 or len(t.shape) not in (1, 2):
            raise InvalidInput(SHAPE, f"feature input '{t.name}' has shape {t.shape}; send [n] or [n, 1]")
        if rows is None:
            rows = t.shape[0]
            out = np.empty((rows, schema.n_features), dtype=np.float32)
        elif t.shape[0] != rows:
            raise InvalidInput(SHAPE, f"feature input '{t.name}' has {t.shape[0]} rows, the first feature input has {rows}")
        out[:, positions[t.name]] = _as_float32(t).reshape(-1)
    return out


def _as_float32(t: InputTensor) -> np.ndarray:
    if t.values.dtype == np.float32:
        return t.values
    return t.values.astype(np.float32)


def _layout(schema: InputSchema) -> str:
    return f"[n, {schema.n_features}] ({schema.describe_count()})"


def select_outputs(available: dict[str, dict[str, Any]], requested: list[RequestedOutput] | None,
                   binary_default: bool) -> list[RequestedOutput]:
    """The outputs to return: the requested ones (each must exist) or all of them."""
    if not requested:
        return [RequestedOutput(name, binary_default) for name in available]
    for r in requested:
        if r.name not in available:
            raise InvalidInput(UNKNOWN_OUTPUT, f"unknown output '{r.name}'; this model has {', '.join(available)}")
    return requested


def output_datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind in "OSU":
        return "BYTES"
    return DATATYPE_OF[arr.dtype.newbyteorder("<")]


def output_bytes(arr: np.ndarray) -> bytes:
    """Raw little-endian bytes of an output; BYTES elements are 4-byte length prefixed."""
    if arr.dtype.kind in "OSU":
        parts = []
        for v in arr.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
