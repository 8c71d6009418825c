"""`ondeck route` as a process in front of real `ondeck serve` replicas: weights, rules, stickiness,
fallback, admin endpoints, gRPC."""
from __future__ import annotations

import json
import signal
from collections import Counter

import grpc
import pytest

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.protocol import grpc_predict_v2_pb2_grpc as pbg
from tests.helpers import free_port
from tests.router.conftest import CHURN_ROW, INFER, RULES, config, infer_body, load, metric, request, variants


def test_weights_are_exact_and_every_answer_names_its_variant(procs, servers):
    router = procs.router(config(variants(servers)))
    outcomes = load(router.http, total=1000, clients=4)
    assert all(o.status == 200 for o in outcomes)
    assert Counter(o.variant for o in outcomes) == {"stable": 900, "canary": 100}
    # the answers really come from the variant named: v1 and v2 answer differently
    assert {json.loads(o.body)["model_version"] for o in outcomes if o.variant == "canary"} == {"v2"}
    assert {json.loads(o.body)["model_version"] for o in outcomes if o.variant == "stable"} == {"v1"}
    assert metric(router.http, "ondeck_router_requests_total", variant="canary", version="v2", code="200",
                  protocol="rest_v2") == 100
    assert metric(router.http, "ondeck_router_request_duration_seconds_count", variant="stable") == 900
    assert metric(router.http, "ondeck_router_weight", variant="stable", version="v1", model="churn") == 90


def test_header_rules_first_match_wins(procs, servers):
    router = procs.router(config(variants(servers, stable=100, canary=0), rules=RULES))
    for headers, expected in [({"X-Variant": "canary"}, "canary"), ({"x-beta-user": "true"}, "canary"),
                              ({"x-beta-user": "nope"}, "stable"), ({"x-variant": "stable", "x-beta-user": "yes"}, "canary")]:
        outcomes = load(router.http, total=20, clients=2, headers_for=lambda i: headers)
        assert {(o.status, o.variant) for o in outcomes} == {(200, expected)}, headers


def test_grpc_is_routed_by_metadata_with_the_same_rules(procs, servers):
    router = procs.router(config(variants(servers, stable=100, canary=0), rules=RULES))
    request_msg = pb.ModelInferRequest(model_name="churn", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, len(CHURN_ROW)], contents=pb.InferTensorContents(fp32_contents=CHURN_ROW))])
    with grpc.insecure_channel(router.grpc_address) as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        for md, expected, version in [((), "stable", "v1"), ((("x-variant", "canary"),), "canary", "v2")]:
            answer, call = stub.ModelInfer.with_call(request_msg, metadata=md, timeout=10)
            assert answer.model_version == version
            assert dict(call.initial_metadata())["x-ondeck-variant"] == expected
            meta, call = stub.ModelMetadata.with_call(pb.ModelMetadataRequest(name="churn"), metadata=md, timeout=10)
            assert dict(call.initial_metadata())["x-ondeck-variant"] == expected and meta.name == "churn"
        with pytest.raises(grpc.RpcError) as err:  # the replica's own error passes through unchanged
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert metric(router.http, "ondeck_router_requests_total", protocol="grpc", variant="canary", code="200") == 2


def test_sticky_users_keep_their_variant_across_a_router_restart(procs, servers):
    cfg = config(variants(servers, stable=50, canary=50), sticky={"header": "x-user-id"})
    users = [f"user-{i}" for i in range(200)]

    def assignment(router):
        outcomes = {}
        for user in users:
            status, headers, _ = request(router.http, "POST", INFER, infer_body(), {"x-user-id": user})
            assert status == 200
            outcomes[user] = headers["x-ondeck-variant"]
        return outcomes

    first = procs.router(cfg)
    before = assignment(first)
    again = assignment(first)
    first.kill(signal.SIGTERM)
    after = assignment(procs.router(cfg))
    assert before == again == after
    assert 60 <= Counter(before.values())["canary"] <= 140  # both variants get users, near the weights


def test_dead_variant_answers_503_naming_it_or_falls_back(procs, servers):
    dead = {"http": f"127.0.0.1:{free_port()}", "grpc": f"127.0.0.1:{free_port()}"}
    vs = variants(servers, stable=100, canary=0)
    vs[1]["endpoints"] = [dead]
    router = procs.router(config(vs, rules=RULES))
    status, headers, body = request(router.http, "POST", INFER, infer_body(), {"x-variant": "canary"})
    assert status == 503 and headers["x-ondeck-variant"] == "canary"
    assert "model 'churn' variant 'canary' is unavailable" in json.loads(body)["error"]
    with grpc.insecure_channel(router.grpc_address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pbg.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), metadata=(("x-variant", "canary"),),
                                                             timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "variant 'canary'" in err.value.details()
    assert metric(router.http, "ondeck_router_upstream_errors_total", variant="canary", kind="connect") >= 1
    assert metric(router.http, "ondeck_router_endpoint_ejections_total", variant="canary") >= 1

    fallback = procs.router(config(vs, rules=RULES, fallback="stable"))
    outcomes = load(fallback.http, total=50, clients=2, headers_for=lambda i: {"x-variant": "canary"})
    assert {(o.status, o.variant) for o in outcomes} == {(200, "stable")}


def test_admin_endpoints_and_bad_requests(procs, servers):
    router = procs.router(config(variants(servers)))
    status, _, body = request(router.http, "GET", "/admin/config")
    assert status == 200 and json.loads(body)["config"]["variants"][0]["weight"] == 90
    assert request(router.http, "POST", "/admin/config")[0] == 405
    assert request(router.http, "GET", "/admin/nothing")[0] == 404
    assert json.loads(request(router.http, "GET", "/healthz")[2])["status"] == "ok"
    # the replicas' own health endpoints are proxied, not answered by the router
    status, headers, _ = request(router.http, "GET", "/v2/health/ready")
    assert status == 200 and headers["x-ondeck-variant"] in ("stable", "canary")
    # bad input is the replica's to reject, and the 4xx reaches the client unchanged
    status, _, body = request(router.http, "POST", INFER, b'{"inputs": "nope"}')
    assert status == 400 and "error" in json.loads(body)
    import socket

    with socket.create_connection(("127.0.0.1", router.http), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
