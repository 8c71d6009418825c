"""V2 and V1 over REST: health, metadata, infer in its accepted forms, request ids, routing errors."""
from __future__ import annotations

import gzip
import json
import socket

import numpy as np
import pytest

import ondeck


def v2_body(rows: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}], **extra}


@pytest.fixture(scope="module")
def churn(examples_dir):
    return ondeck.load(str(examples_dir / "churn" / "v1"))


def test_health_and_server_metadata(server):
    assert server.json("GET", "/v2/health/live") == (200, {"live": True})
    assert server.json("GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = server.json("GET", "/v2")
    assert status == 200 and meta["name"] == "ondeck" and "binary_tensor_data" in meta["extensions"]
    assert server.json("GET", "/") == (200, {"status": "alive"})


def test_model_metadata_and_ready(server, churn):
    status, meta = server.json("GET", "/v2/models/churn")
    assert status == 200
    assert meta["versions"] == ["v1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"][0]["shape"] == [-1, 20] and meta["inputs"][0]["parameters"]["features"] == churn.features
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert server.json("GET", "/v2/models/churn/versions/v1")[1]["name"] == "churn"
    assert server.json("GET", "/v2/models/churn/ready") == (200, {"name": "churn", "ready": True})
    assert server.json("GET", "/v2/models/churn/versions/v9/ready")[0] == 404
    assert server.json("GET", "/v1/models/cancer") == (200, {"name": "cancer", "ready": True})
    assert server.json("GET", "/v1/models") == (200, {"models": ["churn", "cancer"]})


def test_infer_matches_the_package(server, churn, churn_rows):
    rows = churn_rows[0][:5]
    for path in ("/v2/models/churn/infer", "/v2/models/churn/versions/v1/infer"):
        status, out = server.json("POST", path, v2_body(rows))
        assert status == 200, out
        assert out["model_name"] == "churn" and out["model_version"] == "v1"
        by_name = {o["name"]: o for o in out["outputs"]}
        assert by_name["label"]["data"] == churn.predict(rows).tolist()
        assert by_name["probabilities"]["shape"] == [5, 2]
        np.testing.assert_allclose(np.array(by_name["probabilities"]["data"]).reshape(5, 2), churn.predict_proba(rows), rtol=1e-6)


def test_other_datatypes_nested_data_and_one_row_are_accepted(server, churn, churn_rows):
    rows = churn_rows[0][:3]
    expected = churn.predict(rows).tolist()
    for datatype, data in (("FP64", rows.astype(np.float64).tolist()), ("INT64", np.round(rows).astype(int).ravel().tolist())):
        body = {"inputs": [{"name": "input", "datatype": datatype, "shape": [3, 20], "data": data}]}
        status, out = server.json("POST", "/v2/models/churn/infer", body)
        assert status == 200, out
        if datatype == "FP64":
            assert out["outputs"][0]["data"] == expected
    one = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [20], "data": rows[0].tolist()}]}
    status, out = server.json("POST", "/v2/models/churn/infer", one)
    assert status == 200 and out["outputs"][0]["data"] == expected[:1]


def test_one_tensor_per_feature(server, churn, churn_rows):
    rows = churn_rows[0][:4]
    inputs = [{"name": f, "datatype": "FP64", "shape": [4, 1] if i % 2 else [4], "data": rows[:, i].tolist()}
              for i, f in enumerate(churn.features)]
    status, out = server.json("POST", "/v2/models/churn/infer", {"inputs": list(reversed(inputs))})
    assert status == 200, out
    assert out["outputs"][0]["data"] == churn.predict(rows).tolist()


def test_requested_outputs_and_binary_outputs(server, churn, churn_rows):
    rows = churn_rows[0][:2]
    body = v2_body(rows, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}])
    status, headers, raw = server.request("POST", "/v2/models/churn/infer", body)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    n = int(headers["inference-header-content-length"])
    head = json.loads(raw[:n])
    assert [o["name"] for o in head["outputs"]] == ["probabilities"]
    assert head["outputs"][0]["parameters"]["binary_data_size"] == len(raw) - n == 2 * 2 * 4
    np.testing.assert_allclose(np.frombuffer(raw[n:], "<f4").reshape(2, 2), churn.predict_proba(rows), rtol=1e-6)


def test_binary_input_extension(server, churn, churn_rows):
    rows = np.ascontiguousarray(churn_rows[0][:3])
    blob = rows.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 20],
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    status, headers, raw = server.request("POST", "/v2/models/churn/infer", head + blob,
                                          {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, raw
    assert json.loads(raw)["outputs"][0]["data"] == churn.predict(rows).tolist()


def test_gzip_body(server, churn_rows):
    body = gzip.compress(json.dumps(v2_body(churn_rows[0][:1])).encode())
    status, _, raw = server.request("POST", "/v2/models/churn/infer", body, {"Content-Encoding": "gzip"})
    assert status == 200, raw


def test_request_id_from_header_body_or_new(server, churn_rows):
    rows = churn_rows[0][:1]
    status, headers, raw = server.request("POST", "/v2/models/churn/infer", v2_body(rows), {"x-request-id": "abc-1"})
    assert headers["x-request-id"] == "abc-1" and json.loads(raw)["id"] == "abc-1"
    status, headers, raw = server.request("POST", "/v2/models/churn/infer", v2_body(rows, id="from-body"))
    assert headers["x-request-id"] == "from-body" and json.loads(raw)["id"] == "from-body"
    _, h1, _ = server.request("POST", "/v2/models/churn/infer", v2_body(rows))
    _, h2, _ = server.request("POST", "/v2/models/churn/infer", v2_body(rows))
    assert len(h1["x-request-id"]) == 32 and h1["x-request-id"] != h2["x-request-id"]


def test_v1_predict(server, churn, churn_rows, examples_dir):
    rows = churn_rows[0][:3]
    status, out = server.json("POST", "/v1/models/churn:predict", {"instances": rows.tolist()})
    assert status == 200 and out == {"predictions": churn.predict(rows).tolist()}
    named = [dict(zip(churn.features, map(float, r))) for r in rows]
    assert server.json("POST", "/v1/models/churn:predict", {"instances": named}) == (200, out)


def test_unknown_routes_and_wrong_methods(server):
    status, err = server.json("GET", "/v3/nothing")
    assert status == 404 and err["reason"] == "not_found"
    status, headers, raw = server.request("GET", "/v2/models/churn/infer")
    assert status == 405 and headers["allow"] == "POST" and "use POST" in json.loads(raw)["error"]
    assert server.request("POST", "/v2/health/ready", b"{}")[0] == 405
    assert server.request("POST", "/metrics", b"")[0] == 405


def test_keep_alive_and_pipelining(server, churn_rows):
    body = json.dumps(v2_body(churn_rows[0][:1])).encode()
    req = (b"POST /v2/models/churn/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(req * 3 + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert data.endswith(b'{"live":true}')


def test_malformed_http_gets_400_and_the_server_lives_on(server):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 400")
    assert server.json("GET", "/v2/health/live") == (200, {"live": True})
