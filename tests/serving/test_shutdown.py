"""SIGTERM: readiness off first, in-flight requests answered, payload log flushed, exit 0."""
from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.protocol import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers import wait_for

from .conftest import sample


def body(rows):
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": rows.tolist()}]}


def test_in_flight_requests_are_answered_and_logged(start_server, tmp_path, churn_rows):
    # Requests wait in a batch that only a full batch (64) or 30 s would close: they are in
    # flight when SIGTERM lands, and the drain must run them at once.
    server = start_server("--max-batch-size", "64", "--max-batch-delay-us", "30000000",
                          "--payload-log-dir", str(tmp_path), "--payload-log-fraction", "1")
    rows = churn_rows[0]
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(server.request, "POST", "/v2/models/churn/infer", body(rows[i]), {"x-request-id": f"d-{i}"})
                   for i in range(10)]
        wait_for(lambda: sample(server.metrics(), "ondeck_requests_in_flight") == 10, timeout=30,
                 what="10 requests waiting in the batch")
        code, out = server.terminate()
        results = [f.result(timeout=30) for f in futures]
    assert code == 0, out
    assert [r[0] for r in results] == [200] * 10
    logged = [json.loads(line)["id"] for line in (tmp_path / "payload-0.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(f"d-{i}" for i in range(10))


def test_readiness_turns_off_while_still_serving(start_server, churn_rows):
    server = start_server("--shutdown-delay", "3")
    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: server.request("GET", "/v2/health/ready")[0] == 503, timeout=10, what="readiness off")
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert server.request("POST", "/v2/models/churn/infer", body(churn_rows[0][0]))[0] == 200
        assert server.request("GET", "/v2/health/live")[0] == 200
    assert server.proc.wait(timeout=30) == 0


def test_two_workers_exit_cleanly(start_server):
    server = start_server(workers=2)
    code, out = server.terminate()
    assert code == 0, out
    assert out.count("serving churn:v1") == 2
