"""Every dashboard query and every alert's labels, against a real Prometheus fed by real processes.

Three `ondeck serve` processes (stable churn/v1, canary churn/v2, shadow candidate churn/v2-bad) sit
behind `ondeck route`; one of the canary's endpoints is a dead port, so the router fails over and
ejects it. The test sends a bounded amount of traffic through the router (good and bad requests,
REST V2 and V1), mirrors every request to the shadow, posts feedback to the servers, and lets a
Prometheus started here scrape them every second. Then each panel query, with the dashboards'
variables at their defaults, must parse and return a number, and each alert's grouping labels
must exist on the real series.
"""
from __future__ import annotations

import contextlib
import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port, wait_for
from tests.observe import sources

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

NAMESPACE = "observe"  # the `namespace` target label Prometheus adds, as in Kubernetes
# What a person picks in the dashboards' pickers to look at the test run ("All" is ".*").
VARIABLES = {"namespace": NAMESPACE, "model": "churn", "variant": ".*"}
VARIANTS = {"stable": "churn/v1", "canary": "churn/v2", "candidate": "churn/v2-bad"}
REQUESTS = 200  # good V2 requests through the router (each also mirrored to the shadow)
V1_REQUESTS = 10  # good V1 requests per half (mirrored too)
BAD_REQUESTS = [  # answered 400 by the server, through the router
    b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',  # feature count
    b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 20], "data": []}]}',  # zero rows
    b'{not json',
] * 4

# Controller series (docs/metrics.md, "Controllers"). They come from the controllers' real
# exporter (ondeck.controller_metrics) rendering the state of the real controller cores
# (ondeck.rollout, ondeck.monitor) fed at every scrape with the real servers' counters, as the
# operator and `ondeck run` do; only the cluster around them is absent.
CONTROLLER_METRICS = (
    "ondeck_rollout_phase", "ondeck_rollout_step", "ondeck_rollout_canary_weight",
    "ondeck_analysis_measurements_total", "ondeck_rollout_aborts_total", "ondeck_drift_detected",
    "ondeck_drift_statistic", "ondeck_drift_effect_size", "ondeck_live_accuracy",
    "ondeck_live_accuracy_bar", "ondeck_staleness_seconds_to_bar",
)
ACCURACY_BAR = 0.8


class Process:
    """A subprocess whose output goes to a file (read on failure), stopped at teardown."""

    def __init__(self, name: str, args: list[str], logs: Path):
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
        return True

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=15)


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def all_targets_up(prometheus: str, count: int) -> bool:
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
    return len(targets) == count and all(t["health"] == "up" for t in targets)


def controller_exporter(servers: dict[str, str], examples_dir: Path):
    """The controllers' exporter for a canary of churn v2 at 20% (a gate holds it there), whose
    drift and quality monitor watches the stable v1, fed by the stable server's counters."""
    import json
    import time

    from ondeck import rollout, windows
    from ondeck.controller_metrics import ControllerView, Exporter, exposition
    from ondeck.decide import AccuracyPoint, DriftPolicy, StalenessPolicy
    from ondeck.monitor import Monitor, MonitorSpec

    reference = json.loads((examples_dir / "churn" / "v1" / "reference.json").read_text())
    monitor = Monitor(MonitorSpec(model="churn", version="v1", drift=DriftPolicy(), feedback=True,
                                  staleness=StalenessPolicy(bar=ACCURACY_BAR)), reference)
    steps = [{"setWeight": 20}, {"pause": {}}]
    canary, _ = rollout.tick(steps, rollout.new_state("stable", "canary", 0.0, stable_version="v1", canary_version="v2"), 0.0)
    state: dict = {"monitor": None}

    def render() -> bytes:
        now = time.time()
        samples = windows.parse_exposition(httpx.get(f"http://{servers['stable']}/metrics", timeout=5).text)
        match = {"model": "churn", "variant": "stable"}
        stats = windows.variant_stats(samples, match, reference)
        state["monitor"], _, _ = monitor.tick(
            state["monitor"], now, windows.drift_window(samples, match, reference, 0.0, now),
            AccuracyPoint(now, stats.feedback_total, stats.feedback_correct))
        view = ControllerView(model="churn", rollout=canary, monitor=state["monitor"], monitor_variant="stable",
                              measurements={"Successful": 1}, accuracy_bar=ACCURACY_BAR, namespace=NAMESPACE)
        return exposition([view])

    return Exporter("127.0.0.1", 0, render=render)


@pytest.fixture(scope="module")
def prometheus_url(examples_dir: Path, tmp_path_factory) -> str:
    """Servers, router, controller exporter and Prometheus running, traffic sent; the Prometheus base URL."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("Debian's prometheus is not installed (scripts/test installs it)", pytrace=False)
    procs: list[Process] = []
    with contextlib.ExitStack() as stack:
        try:
            url = start_and_feed(stack, procs, prometheus, examples_dir, tmp_path_factory.mktemp("observe"))
        except Exception as exc:  # the processes' last words explain most failures here
            logs = "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in procs)
            raise AssertionError(f"{exc}\n{logs}") from exc
        yield url


def start_and_feed(stack: contextlib.ExitStack, procs: list[Process], prometheus: str, examples_dir: Path,
                   tmp: Path) -> str:
    def start(name: str, args: list[str]) -> Process:
        process = Process(name, args, tmp)
        procs.append(process)
        stack.callback(process.stop)
        return process

    ondeck = str(Path(sys.executable).with_name("ondeck"))
    health: list[tuple[Process, str]] = []  # each server and the router, with its health URL
    servers = {}
    for variant, package in VARIANTS.items():
        servers[variant] = f"127.0.0.1:{free_port()}"
        server = start(f"serve-{variant}", [
            ondeck, "serve", str(examples_dir / package), "--host", "127.0.0.1",
            "--http-port", servers[variant].rsplit(":", 1)[1], "--grpc-port", str(free_port()), "--variant", variant,
            "--payload-log-dir", str(tmp / f"payload-{variant}"), "--payload-log-fraction", "1"])
        health.append((server, f"http://{servers[variant]}/v2/health/ready"))

    dead = f"127.0.0.1:{free_port()}"  # nothing listens here: the router must fail over and eject it
    config = {"model": "churn", "variants": [
        {"name": "stable", "version": "v1", "weight": 80, "endpoints": [{"http": servers["stable"]}]},
        {"name": "canary", "version": "v2", "weight": 20, "endpoints": [{"http": servers["canary"]}, {"http": dead}]},
        {"name": "candidate", "version": "v2-bad", "weight": 0, "endpoints": [{"http": servers["candidate"]}]}],
        # Generous timeout: on a busy machine a slow shadow answer must still be compared.
        "shadow": {"variant": "candidate", "fraction": 1.0, "timeout_seconds": 30}}
    (tmp / "router.yaml").write_text(yaml.safe_dump(config))
    router = f"127.0.0.1:{free_port()}"
    route = start("route", [ondeck, "route", "--config", str(tmp / "router.yaml"), "--host", "127.0.0.1",
                            "--http-port", router.rsplit(":", 1)[1]])
    health.append((route, f"http://{router}/healthz"))

    exporter = controller_exporter(servers, examples_dir)
    stack.callback(exporter.close)
    controller = f"127.0.0.1:{exporter.port}"

    prom = f"127.0.0.1:{free_port()}"
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "ondeck-serve", "static_configs": [
                {"targets": list(servers.values()), "labels": {"namespace": NAMESPACE}}]},
            {"job_name": "ondeck-route", "static_configs": [{"targets": [router], "labels": {"namespace": NAMESPACE}}]},
            # As the chart's operator ServiceMonitor: the controller's own `namespace` label wins.
            {"job_name": "controller", "honor_labels": True, "static_configs": [{"targets": [controller]}]},
        ]}))
    prometheus_process = start("prometheus", [
        prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={prom}", "--log.level=warn"])
    url = f"http://{prom}"

    for process, health_url in health:
        wait_for(lambda: process.alive() and http_ok(health_url), timeout=60, what=f"{process.name} ready")
    # Counters must be scraped before and after the traffic for increase() and rate() to see it.
    wait_for(lambda: prometheus_process.alive() and all_targets_up(url, len(health) + 1), timeout=60,
             what="Prometheus scraping every target")
    # In two halves, each seen by Prometheus before the next: every counter, even one born with its
    # first event, then rises inside the query windows, as it does with steady traffic.
    features, labels = read_rows(examples_dir / "data" / "churn-live.csv")
    good = 0
    for half in (range(0, REQUESTS // 2), range(REQUESTS // 2, REQUESTS)):
        good += send_traffic(f"http://{router}", servers, features, labels, half)
        wait_for(lambda: prometheus_process.alive() and scraped(url, good), timeout=60,
                 what=f"Prometheus holding {good} answers")
    outcomes = {s["metric"]["outcome"]: s["value"][1] for s in query(url, "sum by (outcome) (ondeck_shadow_requests_total)")}
    assert outcomes.get("compared"), f"no shadow answer was compared: {outcomes}"
    return url


def read_rows(csv_path: Path) -> tuple[list[list[float]], list[int]]:
    """Feature rows and their true labels from the example's live data."""
    with csv_path.open() as f:
        reader = csv.reader(f)
        label = next(reader).index("churned")
        rows = [[float(x) for x in line] for _, line in zip(range(4 * REQUESTS), reader)]
    return [r[:label] + r[label + 1:] for r in rows], [int(r[label]) for r in rows]


def send_traffic(router: str, servers: dict[str, str], features: list[list[float]], labels: list[int],
                 requests: range) -> int:
    """Bounded traffic through the router, bad requests included, then feedback to the servers that
    served it; returns how many requests succeeded (each is mirrored to the shadow: fraction 1)."""
    served: dict[str, list[tuple[str, int, int]]] = {"stable": [], "canary": []}
    with httpx.Client(timeout=10) as client:
        for i in requests:
            rows = range(4 * i, 4 * i + 1 + i % 4)
            request_id = f"req-{i}"
            r = client.post(f"{router}/v2/models/churn/infer", headers={"x-request-id": request_id}, json={
                "id": request_id, "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 20],
                                              "data": [v for k in rows for v in features[k]]}]})
            assert r.status_code == 200, r.text
            served[r.headers["x-ondeck-variant"]] += [(request_id, n, labels[k]) for n, k in enumerate(rows)]
        for i in requests[:V1_REQUESTS]:
            r = client.post(f"{router}/v1/models/churn:predict", json={"instances": [features[i]]})
            assert r.status_code == 200, r.text
        for body in BAD_REQUESTS:
            r = client.post(f"{router}/v2/models/churn/infer", content=body)
            assert r.status_code == 400, r.text
        for variant, items in served.items():
            assert items, f"the router sent nothing to {variant}"
            r = client.post(f"http://{servers[variant]}/v2/models/churn/feedback", json={"items": [
                {"id": request_id, "row": row, "truth": truth} for request_id, row, truth in items]
                + [{"id": "never-served", "truth": 1}]})
            assert r.status_code == 200, r.text
    return len(requests) + len(requests[:V1_REQUESTS])


def scraped(prometheus: str, good: int) -> bool:
    """Prometheus holds the router's count of ``good`` answers and every mirrored request settled."""
    def total(promql: str) -> float:
        return sum(numbers(query(prometheus, promql)))

    return (total('sum(ondeck_router_requests_total{code="200"})') >= good
            and total("sum(ondeck_shadow_requests_total)") >= good)


def query(url: str, promql: str) -> list[dict]:
    """An instant query's result; a query Prometheus rejects fails at once with its message."""
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise AssertionError(f"Prometheus rejected the query ({body.get('errorType')}: {body.get('error')}):\n{promql}")
    return body["data"]["result"]


def numbers(result: list[dict]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


@pytest.mark.parametrize("q", sources.panel_queries(), ids=lambda q: q.id)
def test_panel_query_parses_and_returns_data(prometheus_url: str, q: sources.Query) -> None:
    promql = sources.substitute(q.expr, VARIABLES)
    query(prometheus_url, promql)  # parse errors fail here, without waiting
    # Scraped every second: wait until the series are in (bounded), then demand a real number.
    result = wait_for(lambda: [v for v in numbers(query(prometheus_url, promql)) if not math.isnan(v)],
                      timeout=30, interval=0.5, what=f"data for panel {q.panel!r}:\n{promql}")
    assert result


def test_variables_list_what_runs(prometheus_url: str) -> None:
    """The namespace, model and variant pickers offer the running model and all its variants."""
    expected = {"namespace": {NAMESPACE}, "model": {"churn"}, "variant": set(VARIANTS)}
    for name, definition in sources.variable_queries().items():
        selector, label = definition[len("label_values("):-1].rsplit(", ", 1)
        selector = sources.substitute(selector, VARIABLES)

        def values():
            r = httpx.get(f"{prometheus_url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10)
            assert r.json()["status"] == "success", r.text
            return set(r.json()["data"]) >= expected[name]

        wait_for(values, timeout=30, interval=0.5, what=f"variable {name}: {definition}")


@pytest.mark.parametrize("rule", sources.alert_rules(), ids=lambda r: r["alert"])
def test_alert_reads_real_series_with_its_labels(prometheus_url: str, rule: dict) -> None:
    """Each metric an alert reads exists in a real export with every label the alert groups by.

    promtool's unit tests feed hand-written series; this catches an alert grouping by a label
    the real exporters do not set (its annotations would render empty, its routing would break).
    """
    by = sources.grouping_labels(rule["expr"])
    for metric in sources.metric_names(rule["expr"]):
        # Series with all of them (a server's requests for models it does not serve have no model).
        complete = ", ".join(f'{label}!=""' for label in by)
        wait_for(lambda: query(prometheus_url, f"group by ({', '.join(by)}) ({metric}{{{complete}}})"),
                 timeout=30, interval=0.5, what=f"{rule['alert']}: series of {metric} with labels {by}")


def test_the_controller_exports_every_controller_metric(prometheus_url: str) -> None:
    """Every controller series the dashboards and alerts read comes from the controllers' exporter."""
    for metric in CONTROLLER_METRICS:
        jobs = wait_for(lambda: {s["metric"]["job"] for s in query(prometheus_url, f"group by (job) ({metric})")},
                        timeout=30, interval=0.5, what=f"{metric} in Prometheus")
        assert jobs == {"controller"}, f"{metric} comes from {jobs}"
