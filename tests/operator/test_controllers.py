"""The controllers' glue without a cluster: Prometheus answers -> windows -> decisions -> state and events."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ondeck.operator.packages import Packages
from ondeck.operator.prometheus import Prometheus, PrometheusUnavailable
from ondeck.operator.rolling import ABORT, PROMOTE, CanaryController
from ondeck.spec import parse_manifest
from ondeck.windows import WANTED
from tests.helpers import free_port

STEPS = [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "health"}]}}, {"pause": {}}]
HEALTH = {"templates": [{"name": "health", "interval": "5s", "count": 2, "failureLimit": 0, "inconclusiveLimit": 2,
                         "metrics": [{"name": "errors", "kind": "errorRate", "maxIncrease": 0.01}]}]}


@pytest.fixture
def md(examples_dir):
    def make(canary: str = "v2"):
        return parse_manifest({"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "churn"},
                               "spec": {"model": {"name": "churn"}, "analysis": HEALTH, "variants": [
                                   {"name": "stable", "version": "v1", "uri": (examples_dir / "churn" / "v1").as_uri()},
                                   {"name": "canary", "version": canary, "uri": (examples_dir / "churn" / canary).as_uri()}],
                                   "strategy": {"canary": {"canaryVariant": "canary", "steps": STEPS}}}})
    return make


class FakePrometheus:
    """Counter increases per variant: ``requests`` answered, ``errors`` of them 5xx."""

    def __init__(self, **variants: tuple[int, int]):
        self.variants = variants
        self.down = False
        self.asked: list[dict] = []

    def increase(self, match, start, end, metrics=WANTED):
        self.asked.append(match)
        if self.down:
            raise PrometheusUnavailable("http://prometheus:9090 unreachable: connection refused")
        out = {}
        for variant, (requests, errors) in self.variants.items():
            base = {"model": "churn", "variant": variant, "protocol": "rest_v2"}
            out[("ondeck_requests_total", tuple(sorted({**base, "code": "200"}.items())))] = requests - errors
            out[("ondeck_requests_total", tuple(sorted({**base, "code": "500"}.items())))] = errors
        return out


def run(controller, md, ticks, annotations=None, state=None, start=1000.0, every=5.0):
    events = []
    for i in range(ticks):
        result = controller.tick(md, "ns", state, annotations or {}, start + i * every)
        state = result.state
        events += result.events
    return state, events


def test_a_healthy_canary_passes_its_analysis_and_waits_at_the_gate(md):
    prom = FakePrometheus(stable=(1000, 1), canary=(1000, 1))
    state, events = run(CanaryController(prom, Packages()), md(), 4)
    assert state["phase"] == "Paused" and state["stepIndex"] == 2 and state["canaryWeight"] == 50
    assert state["analysisHistory"][-1]["verdict"] == "Successful"
    assert prom.asked[0] == {"namespace": "ns", "model": "churn"}
    assert [r for _, r, _ in events][:2] == ["RolloutStarted", "WeightSet"]


def test_errors_in_the_canary_abort_the_rollout_with_a_warning(md):
    state, events = run(CanaryController(FakePrometheus(stable=(1000, 0), canary=(1000, 300)), Packages()), md(), 3)
    assert state["phase"] == "Degraded" and state["canaryWeight"] == 0
    assert ("Warning", "RolloutAborted") in [(k, r) for k, r, _ in events]


def test_prometheus_down_is_inconclusive_and_pauses(md):
    prom = FakePrometheus(stable=(1000, 0), canary=(1000, 0))
    prom.down = True
    state, events = run(CanaryController(prom, Packages()), md(), 3)
    assert state["phase"] == "Paused" and state["stepIndex"] == 1 and "cannot measure" in state["message"]
    assert ("Warning", "AnalysisInconclusive") in [(k, r) for k, r, _ in events]


def test_no_prometheus_configured_never_promotes(md):
    state, _ = run(CanaryController(None, Packages()), md(), 4)
    assert state["phase"] == "Paused" and "no --prometheus-url" in state["message"]


def test_annotations_act_once_and_old_ones_do_not_count(md):
    controller = CanaryController(FakePrometheus(stable=(1000, 0), canary=(1000, 0)), Packages())
    # set before the rollout started: not a blessing of this one
    state, _ = run(controller, md(), 4, annotations={PROMOTE: "old"})
    assert state["phase"] == "Paused" and state["stepIndex"] == 2
    state, events = run(controller, md(), 1, annotations={PROMOTE: "t1"}, state=state, start=2000)
    assert state["phase"] == "Healthy" and state["lastCommand"] == {
        "command": "promote", "id": "t1", "applied": True, "message": state["lastCommand"]["message"]}
    assert ("Normal", "PromoteCommand") in [(k, r) for k, r, _ in events]
    again, events = run(controller, md(), 2, annotations={PROMOTE: "t1"}, state=state, start=3000)
    assert again["lastCommand"]["id"] == "t1" and not [r for _, r, _ in events if r == "PromoteCommand"]
    late, _ = run(controller, md(), 1, annotations={PROMOTE: "t1", ABORT: "t2"}, state=state, start=4000)
    assert late["phase"] == "Healthy" and late["lastCommand"]["applied"] is False
    assert "already finished" in late["lastCommand"]["message"]


def test_a_new_canary_version_starts_a_new_rollout(md):
    controller = CanaryController(FakePrometheus(stable=(1000, 0), canary=(1000, 0)), Packages())
    state, _ = run(controller, md("v2"), 4)
    state, events = run(controller, md("v2-bad"), 1, state=state, start=2000)
    assert state["canaryVersion"] == "v2-bad" and state["stepIndex"] == 1
    assert [r for _, r, _ in events][0] == "RolloutStarted"


@pytest.fixture
def prometheus_api():
    """A loopback stand-in for Prometheus' query API: records queries, answers with canned vectors."""
    answers: dict[str, list] = {}
    queries: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            queries.append(params)
            metric = next((m for m in answers if f"({m}{{" in params["query"]), None)
            body = {"status": "success", "data": {"resultType": "vector", "result": answers.get(metric, [])}}
            if params["query"].startswith("bad"):
                self.send_response(400)
                body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
            else:
                self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers, queries
    server.shutdown()
    server.server_close()


def test_prometheus_windows_come_back_keyed_like_scrapes(prometheus_api):
    url, answers, queries = prometheus_api
    answers["ondeck_requests_total"] = [
        {"metric": {"model": "churn", "variant": "canary", "code": "200", "namespace": "ns"}, "value": [1, "41.5"]}]
    samples = Prometheus(url).increase({"namespace": "ns", "model": "churn"}, 100.0, 130.0)
    assert samples == {("ondeck_requests_total", (("code", "200"), ("model", "churn"), ("namespace", "ns"),
                                                   ("variant", "canary"))): 41.5}
    q = queries[0]
    assert q["time"] == "130.000" and "[30000ms]" in q["query"]
    assert q["query"].startswith("sum without (pod, instance, job) (increase(ondeck_requests_total{")
    assert 'model="churn",namespace="ns"' in q["query"]
    assert len(queries) == len(WANTED)  # one query per metric the decisions read


def test_prometheus_errors_and_outages_are_unavailable(prometheus_api):
    url, _, _ = prometheus_api
    with pytest.raises(PrometheusUnavailable, match="HTTP 400: parse error"):
        Prometheus(url).query("bad(", at=1.0)
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        Prometheus(f"http://127.0.0.1:{free_port()}", timeout=2).query("up", at=1.0)
