"""Shadow traffic: the client never waits for the shadow, and the paired comparison is exported and logged."""
from __future__ import annotations

import json
import os
import signal

import grpc
import pytest

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.protocol import grpc_predict_v2_pb2_grpc as pbg

from tests.helpers import free_port, wait_for
from tests.router.conftest import CHURN_ROW, config, infer_body, load, metric, request, variants, write_config

SHADOW_SLEEP = 2.0


@pytest.mark.parametrize("shadow_kind", ["sleeping", "down"])
def test_a_slow_or_dead_shadow_costs_the_client_nothing(procs, servers, shadow_kind):
    if shadow_kind == "sleeping":
        endpoint = procs.fake("candidate", sleep=SHADOW_SLEEP).endpoint()
    else:
        endpoint = {"http": f"127.0.0.1:{free_port()}", "grpc": f"127.0.0.1:{free_port()}"}
    vs = variants(servers, stable=100, canary=0) + [{"name": "candidate", "weight": 0, "endpoints": [endpoint]}]
    router = procs.router(config(vs, shadow={"variant": "candidate", "fraction": 1.0, "timeout_seconds": 0.5,
                                             "queue_size": 4, "concurrency": 2}))
    _, _, direct = request(servers["stable"][0].http, "POST", "/v2/models/churn/infer", infer_body())
    outcomes = load(router.http, total=300, clients=4)

    assert all(o.status == 200 for o in outcomes)
    assert all(json.loads(o.body)["outputs"] == json.loads(direct)["outputs"] for o in outcomes)
    # every answer came back long before a mirrored request could have: none waited for the shadow
    assert max(o.seconds for o in outcomes) < SHADOW_SLEEP / 2
    m = dict(model="churn", primary="stable", shadow="candidate")
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", **m) == 300, timeout=15,
             what="every mirrored request accounted for")
    count = {o: metric(router.http, "ondeck_shadow_requests_total", outcome=o, **m) for o in ("compared", "dropped", "timeout", "error")}
    assert count["compared"] == 0
    # a timeout or a refused connection is counted; after a few, the shadow is ejected and fails fast (error)
    assert count["timeout" if shadow_kind == "sleeping" else "error"] > 0
    if shadow_kind == "sleeping":
        assert count["dropped"] > 0  # 2 workers waiting 0.5 s each cannot keep up: the bounded queue overflowed

def candidate_router(procs, servers, pair_log=None, **shadow):
    """A router that sends every request to the stable and mirrors to the canary's server, named "candidate"
    (with ``shadow`` settings); and its variants."""
    vs = variants(servers, stable=100, canary=0)
    vs[1]["name"], vs[1]["version"] = "candidate", "v2"
    extra = ("--pair-log", str(pair_log)) if pair_log else ()
    return procs.router(config(vs, shadow={"variant": "candidate", **shadow}), *extra), vs


def test_paired_comparison_metrics_and_pair_log(procs, servers, tmp_path):
    pair_log = tmp_path / "pairs.jsonl"
    router, _ = candidate_router(procs, servers, pair_log, fraction=0.5)

    def answer(server) -> tuple[int, float]:
        out = {o["name"]: o["data"] for o in json.loads(request(server.http, "POST", "/v2/models/churn/infer", infer_body())[2])["outputs"]}
        return out["label"][0], out["probabilities"][1]

    (label1, p1), (label2, p2) = answer(servers["stable"][0]), answer(servers["canary"][0])
    for i in range(200):
        status, headers, _ = request(router.http, "POST", "/v2/models/churn/infer", infer_body(request_id=f"req-{i}"))
        assert status == 200 and headers["x-ondeck-variant"] == "stable"

    m = dict(model="churn", primary="stable", shadow="candidate")
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared", **m) == 100, timeout=15,
             what="100 compared pairs")
    assert metric(router.http, "ondeck_shadow_agreement_total", **m) == (100 if label1 == label2 else 0)
    assert metric(router.http, "ondeck_shadow_abs_diff_count", **m) == 100
    assert metric(router.http, "ondeck_shadow_abs_diff_sum", **m) == pytest.approx(100 * abs(p1 - p2), abs=1e-4)

    def pairs():
        return [json.loads(line) for line in pair_log.read_text().splitlines()] if pair_log.exists() else []

    wait_for(lambda: len(pairs()) == 100, timeout=10, what="100 logged pairs")
    logged = pairs()
    assert {p["request_id"] for p in logged} == {f"req-{i}" for i in range(1, 200, 2)}  # every 2nd: fraction 0.5
    assert all(p["primary"] == "stable" and p["shadow"] == "candidate" and p["agree"] == (label1 == label2)
               and p["abs_diff"] == pytest.approx(abs(p1 - p2), abs=1e-6) for p in logged)

    # gRPC ModelInfer calls are mirrored and compared the same way; the id comes from the metadata
    request_msg = pb.ModelInferRequest(model_name="churn", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, len(CHURN_ROW)], contents=pb.InferTensorContents(fp32_contents=CHURN_ROW))])
    with grpc.insecure_channel(router.grpc_address) as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        for i in range(20):
            stub.ModelInfer(request_msg, metadata=(("x-request-id", f"grpc-{i}"),), timeout=10)
    wait_for(lambda: len(pairs()) == 110, timeout=10, what="10 more logged pairs")
    grpc_pairs = [p for p in pairs() if p["protocol"] == "grpc"]
    assert {p["request_id"] for p in grpc_pairs} == {f"grpc-{i}" for i in range(1, 20, 2)}
    assert all(p["abs_diff"] == pytest.approx(abs(p1 - p2), abs=1e-6) for p in grpc_pairs)
    assert metric(router.http, "ondeck_shadow_requests_total", outcome="compared", **m) == 110


def test_a_burst_of_mirrors_reaches_the_shadow_as_fewer_requests_each_compared_alone(procs, servers, tmp_path):
    pair_log = tmp_path / "pairs.jsonl"
    # a long burst window, so that mirrors of concurrent requests surely share a burst
    router, _ = candidate_router(procs, servers, pair_log, fraction=1.0, burst_seconds=0.5)
    candidate = servers["canary"][0]

    def answered() -> float:
        return metric(candidate.http, "ondeck_requests_total", code="200")

    before = answered()
    outcomes = load(router.http, total=40, clients=8)
    assert all(o.status == 200 for o in outcomes)
    m = dict(model="churn", primary="stable", shadow="candidate")
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared", **m) == 40, timeout=15,
             what="40 compared pairs")
    assert metric(router.http, "ondeck_shadow_abs_diff_count", **m) == 40
    # 40 mirrored requests, compared one by one, but the shadow answered them in fewer, merged requests
    assert answered() - before < 40
    wait_for(lambda: pair_log.exists() and len(pair_log.read_text().splitlines()) == 40, timeout=10, what="40 logged pairs")
    logged = [json.loads(line) for line in pair_log.read_text().splitlines()]
    assert len({p["request_id"] for p in logged}) == 40  # each pair under its own request's id, none under the merged one
    assert not any(p["request_id"].startswith("ondeck-shadow-") for p in logged)


def _shadow_process(router) -> int:
    """The pid of the router's shadow process (its only child)."""
    pid = router.popen.pid
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    assert len(children) <= 1, children
    return int(children[0]) if children else 0


def test_the_shadow_runs_at_idle_priority_and_a_killed_shadow_process_is_replaced(procs, servers, tmp_path):
    pair_log = tmp_path / "pairs.jsonl"
    router, _ = candidate_router(procs, servers, pair_log, fraction=1.0, burst_seconds=0.05)
    m = dict(model="churn", primary="stable", shadow="candidate")
    for i in range(20):
        assert request(router.http, "POST", "/v2/models/churn/infer", infer_body(request_id=f"before-{i}"))[0] == 200
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared", **m) == 20, timeout=15,
             what="20 compared pairs")
    first = _shadow_process(router)
    assert os.sched_getscheduler(first) == os.SCHED_IDLE  # it gets a core only when no client request wants one

    os.kill(first, signal.SIGKILL)
    sent = iter(range(10_000))

    def replaced() -> bool:  # mirrors keep coming; the first after the death finds the pipe broken, a later one restarts
        assert request(router.http, "POST", "/v2/models/churn/infer", infer_body(request_id=f"after-{next(sent)}"))[0] == 200
        return _shadow_process(router) not in (0, first)

    wait_for(replaced, timeout=15, interval=0.05, what="a new shadow process")
    # set by the router right after the spawn, so a child seen at once may not have it yet
    wait_for(lambda: os.sched_getscheduler(_shadow_process(router)) == os.SCHED_IDLE, timeout=5,
             what="the new shadow process at idle priority")
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared", **m) > 20, timeout=15,
             what="the new process's comparisons added to the lost one's")
    wait_for(lambda: pair_log.exists() and any(json.loads(line)["request_id"].startswith("after-")
                                               for line in pair_log.read_text().splitlines()),
             timeout=10, what="pairs logged by the new shadow process")


def test_a_reload_reaches_the_shadow_process(procs, servers):
    router, vs = candidate_router(procs, servers, fraction=1.0, burst_seconds=0.05)
    load(router.http, total=10, clients=2)
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared", model="churn",
                            primary="stable", shadow="candidate") == 10, timeout=15, what="10 pairs with candidate")
    vs[1]["name"] = "challenger"  # the same server under another name: only the new config can say so
    write_config(router.config_path, config(vs, shadow={"variant": "challenger", "fraction": 1.0, "burst_seconds": 0.05}))
    assert request(router.http, "POST", "/admin/reload")[0] == 200
    load(router.http, total=10, clients=2)
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared", model="churn",
                            primary="stable", shadow="challenger") == 10, timeout=15, what="10 pairs with challenger")
