"""Paired comparison: predictions read from every answer shape, agreement and score difference."""
from __future__ import annotations

import struct

import orjson
import pytest

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.router.compare import CompareError, Predictions, compare, from_grpc, from_json


def v2(labels, probas, request_id=None) -> bytes:
    doc = {"outputs": [
        {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels},
        {"name": "probabilities", "datatype": "FP32", "shape": [len(probas), len(probas[0])],
         "data": [x for row in probas for x in row]},
    ]}
    if request_id:
        doc["id"] = request_id
    return orjson.dumps(doc)


def test_v2_classifier_two_classes_scores_positive_class():
    p = from_json(v2([1, 0], [[0.2, 0.8], [0.9, 0.1]], "r1"))
    assert p.classes == (1, 0) and p.scores == (0.8, 0.1) and p.request_id == "r1"


def test_three_classes_score_is_top_probability_and_argmax_without_label():
    body = orjson.dumps({"outputs": [{"name": "probabilities", "shape": [1, 3], "data": [0.2, 0.5, 0.3]}]})
    assert from_json(body) == Predictions(classes=(1,), scores=(0.5,))


def test_regressor_and_v1():
    assert from_json(orjson.dumps({"outputs": [{"name": "predictions", "shape": [2, 1], "data": [1.5, 2.0]}]})).scores == (1.5, 2.0)
    assert from_json(b'{"predictions": [[0.3, 0.7]]}') == Predictions(classes=(1,), scores=(0.7,))
    assert from_json(b'{"predictions": [1, 0]}').classes == (1, 0)


def test_agreement_and_mean_abs_diff():
    a = from_json(v2([1, 0], [[0.2, 0.8], [0.9, 0.1]]))
    b = from_json(v2([1, 1], [[0.3, 0.7], [0.4, 0.6]]))
    pair = compare(a, b)
    assert pair.agree is False and pair.abs_diff == pytest.approx((0.1 + 0.5) / 2)
    assert compare(a, a).agree is True and compare(a, a).abs_diff == 0


def test_grpc_raw_and_typed_contents():
    raw = pb.ModelInferResponse(id="g", outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="label", datatype="INT64", shape=[1]),
        pb.ModelInferResponse.InferOutputTensor(name="probabilities", datatype="FP32", shape=[1, 2])],
        raw_output_contents=[struct.pack("<q", 1), struct.pack("<2f", 0.25, 0.75)])
    p = from_grpc(raw)
    assert p.classes == (1,) and p.scores == (0.75,) and p.request_id == "g"
    typed = pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(
        name="probabilities", datatype="FP32", shape=[1, 2], contents=pb.InferTensorContents(fp32_contents=[0.25, 0.75]))])
    assert from_grpc(typed) == Predictions(classes=(1,), scores=(0.75,))
    strings = pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(name="label", datatype="BYTES", shape=[2])],
                                    raw_output_contents=[struct.pack("<I", 3) + b"yes" + struct.pack("<I", 2) + b"no"])
    assert from_grpc(strings).classes == ("yes", "no")


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"outputs": [{"name": "other", "data": [1]}]}', b"{}"])
def test_unreadable_answers_are_compare_errors(body):
    with pytest.raises(CompareError):
        from_json(body)


def test_row_mismatch_is_a_compare_error():
    with pytest.raises(CompareError, match="rows"):
        compare(from_json(v2([1], [[0.2, 0.8]])), from_json(v2([1, 1], [[0.2, 0.8], [0.2, 0.8]])))
