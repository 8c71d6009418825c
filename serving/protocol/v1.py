"""The V1 (TensorFlow-Serving style) REST protocol: ``{"instances": [...]}`` -> ``{"predictions": [...]}``.

An instance is a list of feature values in the model's order, or an object keyed by feature name.
A prediction is the class label (classifiers) or the value (regressors).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ondeck.errors import InvalidInput
from ondeck.package.build import LABEL_OUTPUT, VALUE_OUTPUT
from ondeck.package.schema import MISSING_FEATURE, InputSchema
from ondeck.serving.protocol.tensors import BAD_REQUEST, UNKNOWN_INPUT, from_values
from ondeck.serving.protocol.v2 import load_json


def decode_predict(body: bytes, schema: InputSchema) -> np.ndarray:
    doc = load_json(body)
    instances = doc.get("instances", doc.get("inputs")) if isinstance(doc, dict) else None
    if not isinstance(instances, list):
        raise InvalidInput(BAD_REQUEST, "a V1 predict request is a JSON object with an 'instances' list")
    if instances and all(isinstance(i, dict) for i in instances):
        instances = [_ordered(schema, k, inst) for k, inst in enumerate(instances)]
    shape = [len(instances), len(instances[0])] if instances and isinstance(instances[0], list) else [len(instances)]
    tensor = from_values("instances", "FP32", shape, instances) if instances else None
    return schema.validate(tensor.values if tensor is not None else np.empty((0, schema.n_features), np.float32))


def _ordered(schema: InputSchema, k: int, instance: dict[str, Any]) -> list[Any]:
    unknown = [name for name in instance if name not in set(schema.features)]
    if unknown:
        raise InvalidInput(UNKNOWN_INPUT, f"instance {k} has unknown feature '{unknown[0]}'")
    missing = [f for f in schema.features if f not in instance]
    if missing:
        raise InvalidInput(MISSING_FEATURE, f"instance {k} is missing feature{'s' if len(missing) > 1 else ''} "
                           + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))
    return [instance[f] for f in schema.features]


def encode_predict(outputs: dict[str, np.ndarray]) -> bytes:
    values = outputs[LABEL_OUTPUT] if LABEL_OUTPUT in outputs else outputs[VALUE_OUTPUT].reshape(-1)
    if values.dtype.kind in "OSU":
        values = [str(v) for v in values]
    return orjson.dumps({"predictions": values}, option=orjson.OPT_SERIALIZE_NUMPY)
