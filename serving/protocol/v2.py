"""Open Inference Protocol V2 over REST: JSON bodies and the binary tensor data extension.

Binary extension (what ``tritonclient.http`` and kserve send): the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors, in input order, each
announced by its ``parameters.binary_data_size``. Outputs come back the same way when an output
asks for ``parameters.binary_data`` or the request sets ``parameters.binary_data_output``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ondeck.errors import InvalidInput
from ondeck.package.schema import InputSchema
from ondeck.serving.protocol.tensors import (
    BAD_JSON, BAD_REQUEST, InputTensor, RequestedOutput, from_bytes, from_values, output_bytes,
    output_datatype, select_outputs, to_rows,
)

HEADER_LENGTH = "inference-header-content-length"


@dataclass
class InferRequest:
    id: str | None
    rows: np.ndarray
    outputs: list[RequestedOutput]


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(BAD_JSON, f"the body is not valid JSON: {exc}") from None


def decode_infer(body: bytes, header_length: int | None, schema: InputSchema,
                 outputs: dict[str, Any]) -> InferRequest:
    """A V2 infer body -> validated rows and the outputs to send back."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InvalidInput(BAD_REQUEST, f"Inference-Header-Content-Length is {header_length} "
                           f"but the body has {len(body)} bytes")
    doc = load_json(body[:header_length] if header_length is not None else body)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput(BAD_REQUEST, "a V2 infer request is a JSON object with an 'inputs' list")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    tensors, used = [], 0
    for i, spec in enumerate(doc["inputs"]):
        tensor, size = _decode_input(i, spec, binary[used:])
        tensors.append(tensor)
        used += size
    if used != len(binary):
        raise InvalidInput(BAD_REQUEST, f"the body carries {len(binary)} bytes of binary data but the inputs' "
                           f"binary_data_size add up to {used}")
    params = doc.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    request_id = doc.get("id")
    return InferRequest(
        id=str(request_id) if request_id not in (None, "") else None,
        rows=to_rows(schema, tensors),
        outputs=select_outputs(outputs, _requested(doc.get("outputs"), binary_default), binary_default),
    )


def _decode_input(i: int, spec: Any, binary: memoryview) -> tuple[InputTensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidInput(BAD_REQUEST, f"inputs[{i}] must be an object with a 'name', 'datatype', 'shape' and 'data'")
    name = spec["name"]
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise InvalidInput(BAD_REQUEST, f"input '{name}' announces binary_data_size {size!r} but "
                               f"{len(binary)} bytes of binary data are left")
        return from_bytes(name, spec.get("datatype"), spec.get("shape"), binary[:size]), size
    if "data" not in spec:
        raise InvalidInput(BAD_REQUEST, f"input '{name}' has no 'data' (nor parameters.binary_data_size)")
    return from_values(name, spec.get("datatype"), spec.get("shape"), spec["data"]), 0


def _requested(specs: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if specs is None:
        return None
    if not isinstance(specs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs):
        raise InvalidInput(BAD_REQUEST, "'outputs' must be a list of objects with a 'name'")
    out = []
    for s in specs:
        params = s.get("parameters") or {}
        binary = params.get("binary_data", binary_default) if isinstance(params, dict) else binary_default
        out.append(RequestedOutput(s["name"], bool(binary)))
    return out


def encode_infer(model: str, version: str, request_id: str, outputs: dict[str, np.ndarray],
                 requested: list[RequestedOutput]) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length."""
    tensors, raw = [], []
    for r in requested:
        arr = outputs[r.name]
        tensor: dict[str, Any] = {"name": r.name, "datatype": output_datatype(arr), "shape": list(arr.shape)}
        if r.binary:
            blob = output_bytes(arr)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            raw.append(blob)
        else:
            tensor["data"] = arr.reshape(-1) if arr.dtype.kind not in "OSU" else [str(v) for v in arr.reshape(-1)]
        tensors.append(tensor)
    header = orjson.dumps(
        {"model_name": model, "model_version": version, "id": request_id, "outputs": tensors},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not raw:
        return header, None
    return b"".join([header, *raw]), len(header)
