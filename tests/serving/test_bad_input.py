"""Every kind of bad request, over REST and over gRPC: a 4xx naming the problem, never a 5xx or a hang.

Each case is one request in both protocols (where the protocol can carry it) with the reason code
and a fragment of the message it must get. The server is checked alive after each, and the
validation counter for the reason must have moved.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.protocol import grpc_predict_v2_pb2_grpc as pb_grpc

from .conftest import sample

ROW = [float(i) for i in range(20)]


def tensor(name="input", datatype="FP32", shape=(1, 20), data=None):
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": ROW if data is None else data}


@dataclass
class Case:
    id: str
    reason: str
    message: str                 # a fragment the error message must contain
    rest: dict | bytes | None    # REST body (None: not expressible over REST)
    grpc: pb.ModelInferRequest | None = None  # (None: not expressible over gRPC)
    status: int = 400
    model: str = "churn"
    version: str | None = None
    headers: dict = field(default_factory=dict)


def raw(*tensors, model="churn", version="", outputs=(), blobs=None):
    """A gRPC request sending each (name, datatype, shape, ndarray) as raw_input_contents."""
    req = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, arr in tensors:
        req.inputs.add(name=name, datatype=datatype, shape=shape)
        req.raw_input_contents.append(arr.tobytes())
    if blobs is not None:
        del req.raw_input_contents[:]
        req.raw_input_contents.extend(blobs)
    for o in outputs:
        req.outputs.add(name=o)
    return req


def row(values=ROW, dtype="<f4"):
    return np.array(values, dtype=dtype)


def binary_body(arr: np.ndarray, shape, datatype="FP32", size=None):
    blob = arr.tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": list(shape),
                                   "parameters": {"binary_data_size": len(blob) if size is None else size}}]}).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


NAN_ROW = row(ROW[:3] + [math.nan] + ROW[4:])
INF_ROW = row(ROW[:5] + [math.inf] + ROW[6:])
FEATURES = ("tenure_months", "monthly_charges", "total_charges", "contract_type", "support_calls",
            "late_payments", "data_usage_gb", "num_products", "age", "avg_session_minutes",
            "days_since_last_login", "discount_pct", "payment_method", "region", "satisfaction_score",
            "referrals", "streaming_hours", "device_count", "outage_minutes", "promo_eligible")

CASES = [
    Case("unknown model", "not_found", "model 'nope' is not served", {"inputs": [tensor()]},
         raw(("input", "FP32", [1, 20], row()), model="nope"), status=404, model="nope"),
    Case("unknown version", "not_found", "has no version 'v9'", {"inputs": [tensor()]},
         raw(("input", "FP32", [1, 20], row()), version="v9"), status=404, version="v9"),
    Case("unknown input name", "unknown_input", "unknown input 'input-0'", {"inputs": [tensor(name="input-0")]},
         raw(("input-0", "FP32", [1, 20], row()))),
    Case("BYTES datatype", "datatype", "datatype 'BYTES'", {"inputs": [tensor(datatype="BYTES", data=["a"] * 20)]},
         raw(("input", "BYTES", [1, 20], row()))),
    Case("made-up datatype", "datatype", "datatype 'FLOAT'", {"inputs": [tensor(datatype="FLOAT")]},
         raw(("input", "FLOAT", [1, 20], row()))),
    Case("shape does not match data", "shape", "shape [2, 20] (40 values) but 20 values", {"inputs": [tensor(shape=(2, 20))]},
         raw(("input", "FP32", [2, 20], row()))),
    Case("raw bytes not whole values", "shape", "not a whole number of FP32 values", None,
         raw(("input", "FP32", [1, 20], row()), blobs=[row().tobytes()[:-2]])),
    Case("three-dimensional input", "shape", "expected rows of shape [n, 20]", {"inputs": [tensor(shape=(1, 1, 20))]},
         raw(("input", "FP32", [1, 1, 20], row()))),
    Case("ragged rows", "shape", "ragged", {"inputs": [tensor(shape=(2, 20), data=[ROW, ROW[:19]])]}),
    Case("negative dimension", "shape", "non-negative integers", {"inputs": [tensor(shape=(-1, 20))]},
         raw(("input", "FP32", [-1, 20], row()))),
    Case("too few features", "feature_count", "expected 20 features", {"inputs": [tensor(shape=(1, 3), data=[1, 2, 3])]},
         raw(("input", "FP32", [1, 3], row([1, 2, 3])))),
    Case("strings as numbers", "non_numeric", "non-numeric data (found 'abc')",
         {"inputs": [tensor(data=ROW[:19] + ["abc"])]}),
    Case("null value", "non_numeric", "non-numeric data (found None)", {"inputs": [tensor(data=ROW[:19] + [None])]}),
    Case("NaN", "nan", "feature 'contract_type' is nan", binary_body(NAN_ROW, (1, 20))[0],
         raw(("input", "FP32", [1, 20], NAN_ROW)), headers=binary_body(NAN_ROW, (1, 20))[1]),
    Case("infinity", "nan", "feature 'late_payments' is inf", binary_body(INF_ROW, (1, 20))[0],
         raw(("input", "FP32", [1, 20], INF_ROW)), headers=binary_body(INF_ROW, (1, 20))[1]),
    Case("zero rows", "zero_rows", "zero rows", {"inputs": [tensor(shape=(0, 20), data=[])]},
         raw(("input", "FP32", [0, 20], row([])))),
    Case("a feature missing", "missing_feature", "missing feature input: promo_eligible",
         {"inputs": [tensor(name=f, shape=(1,), data=[1.0]) for f in FEATURES[:-1]]},
         raw(*[(f, "FP32", [1], row([1.0])) for f in FEATURES[:-1]])),
    Case("not JSON", "bad_json", "not valid JSON", b"{not json"),
    Case("no inputs", "bad_request", "'inputs' list", {"outputs": []}),
    Case("empty inputs", "bad_request", "no inputs", {"inputs": []}, raw()),
    Case("input without data", "bad_request", "has no 'data'", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20]}]}),
    Case("unknown output", "unknown_output", "unknown output 'score'", {"inputs": [tensor()], "outputs": [{"name": "score"}]},
         raw(("input", "FP32", [1, 20], row()), outputs=["score"])),
    Case("raw contents count", "bad_request", "one per input", None,
         raw(("input", "FP32", [1, 20], row()), blobs=[row().tobytes(), b""])),
    Case("binary size past the body", "bad_request", "binary_data_size", *binary_body(row(), (1, 20), size=10_000)[:1],
         headers=binary_body(row(), (1, 20), size=10_000)[1]),
    Case("binary bytes left over", "bad_request", "add up to", binary_body(row(), (1, 20))[0] + b"xx",
         headers=binary_body(row(), (1, 20))[1]),
    Case("body too large", "body_too_large", "larger than the limit", {"inputs": [tensor(shape=(2000, 20), data=ROW * 2000)]},
         status=413),
    Case("unsupported encoding", "bad_request", "Content-Encoding", {"inputs": [tensor()]}, headers={"Content-Encoding": "br"}),
]
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}


def _path(case: Case) -> str:
    return f"/v2/models/{case.model}" + (f"/versions/{case.version}" if case.version else "") + "/infer"


@pytest.mark.parametrize("case", [c for c in CASES if c.rest is not None], ids=lambda c: c.id)
def test_rest(server, case):
    before = server.metrics()
    status, headers, raw_body = server.request("POST", _path(case), case.rest, case.headers)
    err = json.loads(raw_body)
    assert (status, err["reason"]) == (case.status, case.reason), err
    assert case.message in err["error"]
    after = server.metrics()
    labels = {} if case.reason == "not_found" else {"model": "churn"}
    assert sample(after, "ondeck_validation_errors_total", reason=case.reason, **labels) == \
        sample(before, "ondeck_validation_errors_total", reason=case.reason, **labels) + 1
    assert sample(after, "ondeck_requests_total", protocol="rest_v2", code=str(case.status)) == \
        sample(before, "ondeck_requests_total", protocol="rest_v2", code=str(case.status)) + 1
    assert server.json("GET", "/v2/health/ready") == (200, {"ready": True})


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("case", [c for c in CASES if c.grpc is not None], ids=lambda c: c.id)
def test_grpc(server, stub, case):
    before = server.metrics()
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(case.grpc, timeout=30)
    err = info.value
    assert err.code() == GRPC_CODES[case.status]
    assert case.message in err.details()
    assert dict(err.trailing_metadata())["ondeck-reason"] == case.reason
    after = server.metrics()
    assert sample(after, "ondeck_requests_total", protocol="grpc", code=str(case.status)) == \
        sample(before, "ondeck_requests_total", protocol="grpc", code=str(case.status)) + 1
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


def test_grpc_message_over_the_limit_is_refused(server, stub):
    big = raw(("input", "FP32", [5000, 20], np.zeros((5000, 20), "<f4")))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(big, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live


def test_v1_bad_instances(server):
    for body, reason in (({"instances": [[1, 2, 3]]}, "feature_count"), ({"instances": []}, "zero_rows"),
                         ({"rows": []}, "bad_request"), ({"instances": [{"age": 1}]}, "missing_feature"),
                         ({"instances": [{"nope": 1}]}, "unknown_input"), ({"instances": [["x"] * 20]}, "non_numeric")):
        status, err = server.json("POST", "/v1/models/churn:predict", body)
        assert (status, err["reason"]) == (400, reason), err


def test_expect_100_continue_too_large_is_refused_before_the_body(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"POST /v2/models/churn/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 413")
