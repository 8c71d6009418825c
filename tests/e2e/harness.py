"""The real parts of an end-to-end rollout, on loopback: servers, router, Prometheus, operator.

kwok pods run no containers, so a scenario starts what the pods would run as real processes: one
``ondeck serve`` per variant, ``ondeck route`` in front, Debian's ``prometheus`` scraping them with the
labels the pods would carry (``namespace``, ``pod``; the metrics carry ``model``/``variant``/``version``
themselves), and ``ondeck operator`` watching the scenario's namespace and reading that Prometheus.

The one piece of glue is :class:`RouterBridge`: the operator writes the router's config into the
ConfigMap, as in a cluster, and the bridge copies it to the real router's file, rewriting the
endpoints (cluster Service names, which do not resolve here) to the loopback ports of the servers.
Nothing else is faked: weights the router applies are the operator's.

Used by tests/e2e and by ``scripts/e2e-rollout``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from ondeck.local import processes
from ondeck.local.routing import apply as apply_router_config
from ondeck.local.traffic import Traffic, churn_requests
from ondeck.serving.router.config import RouterConfig
from tests.helpers import free_port, wait_for

ONDECK = [sys.executable, "-m", "ondeck.cli"]
PROMETHEUS = os.environ.get("ONDECK_PROMETHEUS", "/usr/bin/prometheus")
READY_TIMEOUT = 60.0
RATE = 60.0  # requests per second through the router
ROWS = 8  # rows per request: enough labelled rows for the accuracy and prediction checks
MAX_SECONDS = 240  # a traffic generator stops by itself after this long

# Short intervals (5s x 3): a scenario takes well under a minute. The metrics are the demo's: a
# chi distance of 0.3 in predicted classes is a different model, not a better one.
ANALYSIS = {"templates": [{
    "name": "health", "interval": "5s", "count": 3, "failureLimit": 0, "inconclusiveLimit": 2,
    "metrics": [
        {"name": "error-rate", "kind": "errorRate", "maxIncrease": 0.01},
        {"name": "accuracy", "kind": "accuracy", "maxDecrease": 0.02},
        {"name": "prediction-drift", "kind": "predictionDrift", "minEffect": 0.3},
    ]}]}
ANALYSED = [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "health"}]}}]
EVERY_STEP = [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 50},
              {"analysis": {"templates": [{"templateName": "health"}]}}, {"setWeight": 80}]
GATED = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}]


def manifest(name: str, examples: Path, *, canary: str | None, steps: list | None = None,
             **spec: Any) -> dict[str, Any]:
    variants = [{"name": "stable", "version": "v1", "uri": (examples / "churn" / "v1").as_uri()}]
    body: dict[str, Any] = {"model": {"name": "churn"}, "variants": variants, **spec}
    if canary:
        variants.append({"name": "canary", "version": canary, "uri": (examples / "churn" / canary).as_uri()})
        body["strategy"] = {"canary": {"canaryVariant": "canary", "steps": steps}}
        body.setdefault("analysis", ANALYSIS)
    return {"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}


class Prometheus:
    """Debian's prometheus scraping every second the targets written with :meth:`set_targets`."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.targets_dir = workdir / "targets"
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "ondeck", "scrape_timeout": "900ms",
                                      "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")],
                                                           "refresh_interval": "1s"}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: self._alive() and _get(f"{self.url}/-/ready") == 200, READY_TIMEOUT, 0.2, "prometheus ready")
        return self

    def set_targets(self, name: str, targets: list[tuple[str, dict[str, str]]]) -> None:
        """``[(host:port, labels)]`` as one file_sd file (written atomically)."""
        groups = [{"targets": [address], "labels": labels} for address, labels in targets]
        tmp = self.targets_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.targets_dir / f"{name}.json")

    def series(self, query: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    def stop(self) -> None:
        _stop(self.proc)

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return True


class RouterBridge:
    """Copies the router.yaml of the ModelDeployment's ConfigMap to the real router's file, with the
    endpoints rewritten to the servers' loopback addresses, and asks the router to reload."""

    def __init__(self, kubeconfig: str, namespace: str, configmap: str, path: Path,
                 endpoints: Callable[[str], list[dict[str, str]]], router: Callable[[], str | None]):
        from kubernetes import client, config

        self.api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        self.namespace, self.configmap, self.path = namespace, configmap, path
        self.endpoints, self.router = endpoints, router
        self.applied: str | None = None
        self.copies = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="router-bridge", daemon=True)

    def copy_once(self) -> bool:
        """Copy the ConfigMap's current text if it changed; False while there is no ConfigMap yet."""
        from kubernetes.client.exceptions import ApiException

        try:
            text = self.api.read_namespaced_config_map(self.configmap, self.namespace).data["router.yaml"]
        except ApiException:
            return False
        if text != self.applied:
            config = RouterConfig.from_text(text).to_dict()
            for v in config["variants"]:
                v["endpoints"] = self.endpoints(v["name"])  # Service DNS names -> loopback ports
            apply_router_config(RouterConfig.from_dict(config), self.path, self.router())
            self.applied = text
            self.copies += 1
        return True

    def start(self) -> "RouterBridge":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):  # polling the API, bounded by the scenario's life
            try:
                self.copy_once()
            except Exception:  # noqa: BLE001 - a failed poll is retried on the next one
                pass


class Operator:
    def __init__(self, kubeconfig: str, namespace: str, prometheus_url: str, log: Path):
        self.args = ONDECK + ["operator", "--kubeconfig", kubeconfig, "--namespace", namespace, "--health-port", "0",
                              "--poll-seconds", "1", "--workers", "4", "--image", "ondeck:test",
                              "--prometheus-url", prometheus_url, "--tick-seconds", "1", "--metrics-port", "0"]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Operator":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up, as a node failure or an OOM kill would do."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        _stop(self.proc)


class Scenario:
    """One ModelDeployment in its namespace, with its real servers, router and operator."""

    def __init__(self, kubeconfig: str, kubectl: Callable[..., subprocess.CompletedProcess], namespace: str,
                 md: dict[str, Any], examples: Path, prometheus: Prometheus, workdir: Path):
        self.kubeconfig, self.kubectl, self.namespace = kubeconfig, kubectl, namespace
        self.md, self.examples, self.prometheus = md, examples, prometheus
        self.name = md["metadata"]["name"]
        self.dir = workdir
        self.servers: dict[str, processes.Child] = {}
        self.router: processes.Child | None = None
        self.operator = Operator(kubeconfig, namespace, prometheus.url, workdir / "operator.log")
        self.bridge = RouterBridge(kubeconfig, namespace, f"{self.name}-router", workdir / "router.yaml",
                                   self._endpoints, lambda: self.router.http_address if self.router else None)
        self.traffic: Traffic | None = None

    def start(self) -> "Scenario":
        for v in self.md["spec"]["variants"]:
            self.servers[v["name"]] = processes.server(self.dir, v["name"], 0, v["uri"][len("file://"):],
                                                       max_batch_size=32, max_batch_delay_us=0)
        for child in self.servers.values():
            child.start()
        processes.wait_ready(list(self.servers.values()), READY_TIMEOUT)
        result = self.kubectl("-n", self.namespace, "apply", "-f", "-", input=yaml.safe_dump(self.md))
        assert result.returncode == 0, result.stderr
        self.operator.start()
        wait_for(self.bridge.copy_once, READY_TIMEOUT, 0.2, "the router ConfigMap")
        self.router = processes.router(self.dir, self.dir / "router.yaml", "127.0.0.1", 0, None)
        self.router.start()
        processes.wait_ready([self.router], READY_TIMEOUT)
        self.bridge.start()
        pods = [(c.http_address, {"namespace": self.namespace, "pod": f"{self.name}-{variant}-0"})
                for variant, c in self.servers.items()]
        pods.append((self.router.http_address, {"namespace": self.namespace, "pod": f"{self.name}-router-0"}))
        self.prometheus.set_targets(self.namespace, pods)
        wait_for(lambda: len(self.prometheus.series(f'up{{namespace="{self.namespace}"}} == 1')) == len(pods),
                 READY_TIMEOUT, 0.5, "prometheus scraping the servers and the router")
        return self

    def send(self, *, drifted: bool = False, seed: int = 11, feedback: float = 0.5, via_router: bool = False,
             headers_for: Callable[[int], dict[str, str]] | None = None) -> Traffic:
        """Start bounded traffic through the router (with feedback labels for ``feedback`` of the
        requests, posted to the server that answered, or ``via_router`` to the router)."""
        package = self.examples / "churn" / "v1"
        shift = {"monthly_charges": 1.0} if drifted else None
        bodies, labels = churn_requests(package, 500, rows=ROWS, seed=seed, shift=shift)
        if self.traffic is None:
            feedback_to = (lambda variant: self.router.http_address) if via_router else self._feedback_to
            self.traffic = Traffic(self.router.http_address, "churn", bodies, labels, rate=RATE, feedback=feedback,
                                   feedback_to=feedback_to, max_requests=int(RATE * MAX_SECONDS),
                                   prefix=self.namespace, headers_for=headers_for).start()
        else:
            self.traffic.use(bodies, labels)
        return self.traffic

    def status(self) -> dict[str, Any]:
        result = self.kubectl("-n", self.namespace, "get", "modeldeployment", self.name, "-o", "json")
        return json.loads(result.stdout).get("status") or {}

    def rollout(self) -> dict[str, Any]:
        return self.status().get("rollout") or {}

    def router_weights(self) -> dict[str, int]:
        """The weights the real router applies (its own metric), not what the operator meant."""
        with urllib.request.urlopen(f"http://{self.router.http_address}/metrics", timeout=5) as r:
            from ondeck.windows import parse_exposition

            samples = parse_exposition(r.read().decode(), wanted=["ondeck_router_weight"])
        return {dict(labels)["variant"]: int(v) for (_, labels), v in samples.items()}

    def events(self) -> list[dict[str, Any]]:
        out = self.kubectl("-n", self.namespace, "get", "events", "-o", "json")
        return [e for e in json.loads(out.stdout)["items"] if e["involvedObject"].get("name") == self.name]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(ONDECK + [*args, self.name, "-n", self.namespace, "--kubeconfig", self.kubeconfig],
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        if self.traffic:
            self.traffic.stop()
        self.bridge.stop()
        self.operator.stop()
        processes.stop_all([c for c in [self.router, *self.servers.values()] if c])

    def logs(self) -> str:
        parts = [f"--- operator ---\n{_tail(self.operator.log)}"]
        for child in [self.router, *self.servers.values()]:
            if child:
                parts.append(f"--- {child.describe()} ---\n{_tail(child.log_path)}")
        return "\n".join(parts)

    def _endpoints(self, variant: str) -> list[dict[str, str]]:
        child = self.servers.get(variant)
        return [{"http": child.http_address, "grpc": child.grpc_address}] if child and child.alive() else []

    def _feedback_to(self, variant: str) -> str | None:
        child = self.servers.get(variant)
        return child.http_address if child else None


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
