"""The official tritonclient (HTTP and gRPC), unmodified, against `ondeck serve`."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

import ondeck


@pytest.fixture(scope="module")
def churn(examples_dir):
    return ondeck.load(str(examples_dir / "churn" / "v1"))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer(server, churn, churn_rows, binary):
    client = thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("churn")
    assert client.get_model_metadata("churn")["inputs"][0]["name"] == "input"
    rows = np.ascontiguousarray(churn_rows[0][:7])
    inp = thttp.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outputs = [thttp.InferRequestedOutput("label", binary_data=binary),
               thttp.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("churn", [inp], outputs=outputs, request_id="triton-http-1")
    assert result.get_response()["id"] == "triton-http-1"
    np.testing.assert_array_equal(result.as_numpy("label"), churn.predict(rows))
    np.testing.assert_allclose(result.as_numpy("probabilities"), churn.predict_proba(rows), rtol=1e-6)
    # No outputs named: tritonclient asks for all of them in binary.
    everything = client.infer("churn", [inp], model_version="v1")
    np.testing.assert_array_equal(everything.as_numpy("label"), churn.predict(rows))
    client.close()


def test_http_error_is_readable(server):
    client = thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    inp = thttp.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="expected 20 features"):
        client.infer("churn", [inp])
    client.close()


def test_grpc_infer(server, churn, churn_rows):
    client = tgrpc.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("churn")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("churn", as_json=True)
    assert meta["inputs"][0]["shape"] == ["-1", "20"]
    assert client.get_server_metadata(as_json=True)["name"] == "ondeck"
    rows = np.ascontiguousarray(churn_rows[0][:9])
    inp = tgrpc.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    result = client.infer("churn", [inp], request_id="triton-grpc-1",
                          outputs=[tgrpc.InferRequestedOutput("label"), tgrpc.InferRequestedOutput("probabilities")])
    assert result.get_response().id == "triton-grpc-1"
    np.testing.assert_array_equal(result.as_numpy("label"), churn.predict(rows))
    np.testing.assert_allclose(result.as_numpy("probabilities"), churn.predict_proba(rows), rtol=1e-6)
    with pytest.raises(InferenceServerException, match="no version 'v7'"):
        client.infer("churn", [inp], model_version="v7")
    client.close()


def test_grpc_fp64_per_feature_tensors(server, churn, churn_rows):
    client = tgrpc.InferenceServerClient(server.grpc)
    rows = churn_rows[0][:3].astype(np.float64)
    inputs = []
    for i, name in enumerate(churn.features):
        t = tgrpc.InferInput(name, [3], "FP64")
        t.set_data_from_numpy(np.ascontiguousarray(rows[:, i]))
        inputs.append(t)
    result = client.infer("churn", inputs)
    np.testing.assert_array_equal(result.as_numpy("label"), churn.predict(rows))
    client.close()
