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


# --- A/B tests and shadows (operator/experiments.py) ------------------------------------------------

from ondeck.operator.experiments import ExperimentController  # noqa: E402
from ondeck.operator.rollout_commands import render  # noqa: E402
from ondeck.spec.traffic import desired_weights, retired_variants, router_config  # noqa: E402


def experiment_md(examples_dir, strategy, second="v2", **spec):
    return parse_manifest({"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "churn"},
                           "spec": {"model": {"name": "churn"}, "strategy": strategy, **spec, "variants": [
                               {"name": "a", "version": "v1", "uri": (examples_dir / "churn" / "v1").as_uri()},
                               {"name": "b", "version": second, "uri": (examples_dir / "churn" / second).as_uri()}]}})


AB_STRATEGY = {"abTest": {"sticky": {"header": "x-user-id"}, "promoteWinner": True, "interval": "5s", "minSamples": 100}}
SHADOW_STRATEGY = {"shadow": {"variant": "b", "fraction": 0.5,
                              "promoteOn": {"minAgreement": 0.9, "minSamples": 500, "interval": "5s"}}}


class FakeCounters:
    """Prometheus answering increases of the experiment's series: ``{(name, labels...): value}`` per window."""

    def __init__(self, rows):
        self.rows = rows
        self.down = False
        self.asked = []

    def increase(self, match, start, end, metrics=WANTED):
        self.asked.append((match, tuple(metrics)))
        if self.down:
            raise PrometheusUnavailable("http://prometheus:9090 unreachable: connection refused")
        return {(name, tuple(sorted({**dict(labels), **match}.items()))): v
                for (name, labels), v in self.rows.items() if name in metrics}


def ticks(controller, md, n, state=None, start=1000.0, every=5.0):
    events, rerender = [], False
    for i in range(n):
        result = controller.tick(md, "ns", state, start + i * every)
        state, events, rerender = result.state, events + result.events, rerender or result.rerender
    return state, events, rerender


def ab_rows(a, b):
    rows = {}
    for arm, (total, correct) in {"a": a, "b": b}.items():
        rows[("ondeck_feedback_total", (("model", "churn"), ("variant", arm)))] = total
        rows[("ondeck_feedback_correct_total", (("model", "churn"), ("variant", arm)))] = correct
    return FakeCounters({(name, labels): v for (name, labels), v in rows.items()})


def test_ab_winner_is_promoted_and_the_router_sends_it_everything(examples_dir):
    md = experiment_md(examples_dir, AB_STRATEGY)
    prom = ab_rows(a=(1000, 850), b=(1000, 900))
    state, events, rerender = ticks(ExperimentController(prom), md, 4)
    assert state["outcome"] == "promoted" and state["winner"] == "b" and rerender
    assert prom.asked[0] == ({"namespace": "ns", "model": "churn"}, ("ondeck_feedback_total", "ondeck_feedback_correct_total"))
    assert [r for _, r, _ in events] == ["ExperimentStarted", "ABTestPromoted"]
    assert desired_weights(md.spec) == {"a": 50, "b": 50}  # before: the even split
    assert desired_weights(md.spec, None, state) == {"a": 0, "b": 100}
    assert retired_variants(md.spec, None, state) == {"a"}
    config = router_config(md, desired_weights(md.spec, None, state),
                           lambda v: [] if v == "a" else [{"http": "127.0.0.1:1"}]).to_dict()
    assert [(v["name"], v["weight"]) for v in config["variants"]] == [("b", 100)] and "fallback" not in config
    text = "\n".join(render({"metadata": {"namespace": "ns", "name": "churn"}, "spec": {},
                             "status": {"phase": "Healthy", "message": state["message"], "experiment": state}}))
    assert "A/B test on accuracy: b (v2) against a (v1): Healthy, promoted" in text
    assert "b: 900 successes of 1000 trials, rate 0.9000" in text and "lift +5.88%" in text


def test_ab_state_of_other_versions_moves_no_traffic(examples_dir):
    state, _, _ = ticks(ExperimentController(ab_rows(a=(1000, 850), b=(1000, 900))),
                        experiment_md(examples_dir, AB_STRATEGY), 4)
    newer = experiment_md(examples_dir, AB_STRATEGY, second="v2-bad")
    assert desired_weights(newer.spec, None, state) == {"a": 50, "b": 50} and retired_variants(newer.spec, None, state) == set()
    again, events, rerender = ticks(ExperimentController(ab_rows(a=(0, 0), b=(0, 0))), newer, 1, state=state)
    assert again["phase"] == "Progressing" and again["treatmentVersion"] == "v2-bad" and rerender
    assert [r for _, r, _ in events] == ["ExperimentStarted"]


def test_experiment_without_prometheus_or_with_it_down_never_concludes(examples_dir):
    md = experiment_md(examples_dir, AB_STRATEGY)
    state, events, _ = ticks(ExperimentController(None), md, 5)
    assert state["phase"] == "Progressing" and "no --prometheus-url" in state["message"]
    prom = ab_rows(a=(1000, 850), b=(1000, 900))
    prom.down = True
    state, events, _ = ticks(ExperimentController(prom), md, 5)
    assert state["phase"] == "Progressing" and "unreachable" in state["message"]
    assert ("Warning", "ExperimentInconclusive") in [(k, r) for k, r, _ in events]


def shadow_rows(compared, agreed, timeouts=0):
    base = (("model", "churn"), ("primary", "a"), ("shadow", "b"))
    return FakeCounters({("ondeck_shadow_requests_total", base + (("outcome", "compared"),)): compared,
                         ("ondeck_shadow_requests_total", base + (("outcome", "timeout"),)): timeouts,
                         ("ondeck_shadow_agreement_total", base): agreed})


def test_agreeing_shadow_is_promoted_and_mirroring_stops(examples_dir):
    md = experiment_md(examples_dir, SHADOW_STRATEGY)
    prom = shadow_rows(compared=200, agreed=190)
    state, events, rerender = ticks(ExperimentController(prom), md, 4)
    assert state["outcome"] == "promoted" and state["winner"] == "b" and rerender
    assert prom.asked[0][1] == ("ondeck_shadow_requests_total", "ondeck_shadow_agreement_total")
    weights = desired_weights(md.spec, None, state)
    assert weights == {"a": 0, "b": 100} and retired_variants(md.spec, None, state) == {"a"}
    before = router_config(md, desired_weights(md.spec), lambda v: [{"http": "127.0.0.1:1"}]).to_dict()
    assert before["shadow"]["variant"] == "b"
    after = router_config(md, weights, lambda v: [] if v == "a" else [{"http": "127.0.0.1:1"}]).to_dict()
    assert "shadow" not in after and [(v["name"], v["weight"]) for v in after["variants"]] == [("b", 100)]


def test_disagreeing_or_failing_shadow_is_rejected_and_retired(examples_dir):
    md = experiment_md(examples_dir, SHADOW_STRATEGY, second="v2-bad")
    state, events, rerender = ticks(ExperimentController(shadow_rows(compared=150, agreed=140, timeouts=50)), md, 4)
    assert state["outcome"] == "rejected" and rerender
    assert ("Warning", "ShadowRejected") in [(k, r) for k, r, _ in events]
    assert state["looks"] == 3 and state["decision"]["evidence"]["timeouts"] == 150  # 600 samples at the third look
    assert desired_weights(md.spec, None, state) == {"a": 100, "b": 0}
    assert retired_variants(md.spec, None, state) == {"b"}
    config = router_config(md, desired_weights(md.spec, None, state),
                           lambda v: [] if v == "b" else [{"http": "127.0.0.1:1"}]).to_dict()
    assert "shadow" not in config and [v["name"] for v in config["variants"]] == ["a"]


def test_promote_and_abort_annotations_end_an_experiment_once(examples_dir):
    md = experiment_md(examples_dir, AB_STRATEGY)
    controller = ExperimentController(ab_rows(a=(0, 0), b=(0, 0)))  # no evidence either way: only a person decides
    old = {"ondeck.io/abort": "t0"}  # given before this experiment: not for it
    started = controller.tick(md, "ns", None, 1000.0, old)
    assert started.state["phase"] == "Progressing" and "lastCommand" not in started.state
    taken = controller.tick(md, "ns", started.state, 1001.0, {**old, "ondeck.io/promote": "t1"})
    state = taken.state
    assert state["outcome"] == "promoted" and state["winner"] == "b" and taken.rerender
    assert state["lastCommand"] == {"command": "promote", "id": "t1", "applied": True, "message": state["message"]}
    assert ("Normal", "PromoteCommand") in [(k, r) for k, r, _ in taken.events]
    assert desired_weights(md.spec, None, state) == {"a": 0, "b": 100} and retired_variants(md.spec, None, state) == {"a"}
    # the same value again is not a new command; a new abort on a finished experiment is answered, not applied
    same = controller.tick(md, "ns", state, 1002.0, {**old, "ondeck.io/promote": "t1"})
    assert same.state["lastCommand"]["id"] == "t1" and not same.events
    late = controller.tick(md, "ns", state, 1003.0, {"ondeck.io/abort": "t2", "ondeck.io/promote": "t1"})
    assert late.state["lastCommand"]["applied"] is False and "already over" in late.state["lastCommand"]["message"]
    assert late.state["outcome"] == "promoted" and ("Warning", "AbortCommand") in [(k, r) for k, r, _ in late.events]


def test_shadow_without_promote_on_has_nothing_to_decide(examples_dir):
    md = experiment_md(examples_dir, {"shadow": {"variant": "b", "fraction": 0.5}})
    state, events, rerender = ticks(ExperimentController(shadow_rows(100, 100)), md, 3)
    assert state is None and events == [] and not rerender


def test_status_follows_the_experiment_and_names_the_promoted_version(examples_dir):
    from ondeck.operator import status as st

    md = experiment_md(examples_dir, SHADOW_STRATEGY)
    running, _, _ = ticks(ExperimentController(shadow_rows(compared=100, agreed=95)), md, 2)
    status = st.compute(md, generation=1, weights={"a": 100, "b": 0}, problems=[], deployments={},
                        previous={"experiment": running}, now="2030-01-01T00:00:00Z")
    assert status["phase"] == "Progressing" and "too few samples" in status["message"]
    assert (status["stableVersion"], status["canaryVersion"]) == ("v1", "v2")
    done, _, _ = ticks(ExperimentController(shadow_rows(compared=300, agreed=290)), md, 3)
    status = st.compute(md, generation=1, weights={"a": 0, "b": 100}, problems=[], deployments={},
                        previous={"experiment": done}, now="2030-01-01T00:00:00Z")
    assert status["phase"] == "Healthy" and "promoted to primary" in status["message"]
    assert status["stableVersion"] == "v2" and status["canaryVersion"] is None
    problem = st.compute(md, generation=1, weights={}, problems=[st.Problem("ApplyFailed", "boom")], deployments={},
                         previous={"experiment": done}, now="2030-01-01T00:00:00Z")
    assert problem["phase"] == "Degraded"  # a problem still wins over the experiment's summary


def test_experiment_series_say_what_the_state_says(examples_dir):
    from prometheus_client.parser import text_string_to_metric_families

    from ondeck.controller_metrics import ControllerView, exposition

    def series(state) -> dict:
        text = exposition([ControllerView(model="churn", experiment=state, namespace="ns")]).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    base = (("kind", "shadow"), ("model", "churn"), ("namespace", "ns"), ("variant", "b"), ("version", "v2"))
    md = experiment_md(examples_dir, SHADOW_STRATEGY)
    running, _, _ = ticks(ExperimentController(shadow_rows(compared=100, agreed=95)), md, 3)  # 200 of 500 samples
    got = series(running)
    assert got[("ondeck_experiment_phase", tuple(sorted(base + (("phase", "Progressing"),))))] == 1
    assert got[("ondeck_experiment_looks_total", base)] == 2
    assert got[("ondeck_experiment_samples", base)] == 200 and got[("ondeck_experiment_agreement", base)] == 0.95
    assert not any(name == "ondeck_experiment_outcome" for name, _ in got)  # nothing ended yet
    done, _, _ = ticks(ExperimentController(shadow_rows(compared=200, agreed=190)), md, 4)
    got = series(done)
    assert got[("ondeck_experiment_outcome", tuple(sorted(base + (("outcome", "promoted"),))))] == 1
    assert got[("ondeck_experiment_outcome", tuple(sorted(base + (("outcome", "rejected"),))))] == 0
    assert got[("ondeck_experiment_phase", tuple(sorted(base + (("phase", "Healthy"),))))] == 1
