"""Open Inference Protocol V2 over gRPC: ``ModelInferRequest`` -> rows, outputs -> ``ModelInferResponse``.

Inputs come as ``raw_input_contents`` (what tritonclient and kserve send: one blob per input, in
order) or as typed ``contents``; outputs always go back as ``raw_output_contents``, which both
official clients read.
"""
from __future__ import annotations

import numpy as np

from ondeck.errors import InvalidInput
from ondeck.package.schema import InputSchema
from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.protocol.tensors import (
    BAD_REQUEST, DTYPES, RequestedOutput, check_datatype, from_bytes, from_values, output_bytes,
    output_datatype, select_outputs, to_rows,
)
from ondeck.serving.protocol.v2 import InferRequest

# Which InferTensorContents field carries each datatype.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP16": "fp32_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
}


def decode_infer(request: pb.ModelInferRequest, schema: InputSchema, outputs: dict) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(BAD_REQUEST, f"the request has {len(request.inputs)} inputs but "
                           f"{len(raw)} raw_input_contents; send one per input")
    tensors = []
    for i, spec in enumerate(request.inputs):
        shape = list(spec.shape)
        if raw:
            tensors.append(from_bytes(spec.name, spec.datatype, shape, raw[i]))
        else:
            check_datatype(spec.name, spec.datatype)
            values = getattr(spec.contents, CONTENTS_FIELD[spec.datatype])
            tensors.append(from_values(spec.name, spec.datatype, shape, np.asarray(values, dtype=DTYPES[spec.datatype])))
    requested = [RequestedOutput(o.name, True) for o in request.outputs] or None
    return InferRequest(
        id=request.id or None,
        rows=to_rows(schema, tensors),
        outputs=select_outputs(outputs, requested, True),
    )


def encode_infer(model: str, version: str, request_id: str, outputs: dict[str, np.ndarray],
                 requested: list[RequestedOutput]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for r in requested:
        arr = outputs[r.name]
        response.outputs.add(name=r.name, datatype=output_datatype(arr), shape=arr.shape)
        response.raw_output_contents.append(output_bytes(arr))
    return response
