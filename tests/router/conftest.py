"""Router test fixtures: real `ondeck route` and upstream processes on loopback, torn down after each test."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ONDECK = [sys.executable, "-m", "ondeck.cli"]


@dataclass
class Proc:
    popen: subprocess.Popen
    http: int
    grpc: int | None
    log: Path
    config_path: Path | None = None  # a router's config file

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def endpoint(self) -> dict[str, str]:
        return {"http": self.http_address, "grpc": self.grpc_address}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=15)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Processes:
    tmp: Path
    examples: Any = None  # a callable giving the examples dir, resolved only when a real server is asked for
    procs: list[Proc] = field(default_factory=list)

    def _start(self, argv: list[str], name: str, ready_path: str, ports: tuple[int, int] | None = None,
               announce: str | None = None) -> Proc:
        """Start a server and wait until ``ready_path`` answers 200.

        Either ``ports`` are given, or the server binds port 0 and ``announce`` (a regex with two
        groups) finds the ports it got in its output: no window in which another process on this
        shared machine could take a port we picked.
        """
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        proc = Proc(popen, *(ports or (0, 0)), log)
        self.procs.append(proc)

        def ready() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"{name} exited with {popen.returncode}:\n{proc.output()}")
            if announce is not None and not proc.http:
                found = re.search(announce, proc.output())
                if not found:
                    return False
                proc.http, proc.grpc = int(found.group(1)), int(found.group(2))
            status, _, _ = request(proc.http, "GET", ready_path, timeout=2)
            return status == 200

        wait_for(ready, timeout=120, what=f"{name} to be ready")
        return proc

    def fake(self, name: str, proba: float = 0.8, sleep: float = 0.0) -> Proc:
        """A stand-in upstream (tests/router/fake_upstream.py) for faults the real server cannot fake."""
        http, grpc = free_port(), free_port()
        argv = [sys.executable, "-m", "tests.router.fake_upstream", "--http-port", str(http), "--grpc-port", str(grpc),
                "--name", name, "--proba", str(proba), "--sleep", str(sleep)]
        return self._start(argv, f"fake-{name}", "/v2/health/ready", ports=(http, grpc))

    def serve(self, package: str, variant: str) -> Proc:
        """A real `ondeck serve` of an example package (``churn/v1``, ``churn/v2`` ...)."""
        argv = ONDECK + ["serve", str(self.examples() / package), "--host", "127.0.0.1", "--http-port", "0",
                         "--grpc-port", "0", "--variant", variant]
        return self._start(argv, f"serve-{package.replace('/', '-')}", "/v2/health/ready",
                           announce=r"http=\S+:(\d+)\s+grpc=\S+:(\d+)")  # its startup line

    def router(self, config: dict | Path, *extra: str) -> Proc:
        path = config if isinstance(config, Path) else write_config(self.tmp / f"router-{len(self.procs)}.yaml", config)
        argv = ONDECK + ["route", "--config", str(path), "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
                         "--poll-seconds", "0.2", *extra]
        proc = self._start(argv, "router", "/healthz", announce=r"REST on 127\.0\.0\.1:(\d+), gRPC on 127\.0\.0\.1:(\d+)")
        proc.config_path = path
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=10)


@pytest.fixture
def procs(tmp_path, request):
    """Processes that live for one test."""
    p = Processes(tmp_path, lambda: request.getfixturevalue("examples_dir"))
    yield p
    p.stop_all()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, request):
    """Real `ondeck serve` replicas shared by a module's tests (they only read from them):
    two of churn/v1 (stable) and one of churn/v2 (canary)."""
    p = Processes(tmp_path_factory.mktemp("servers"), lambda: request.getfixturevalue("examples_dir"))
    yield {
        "stable": [p.serve("churn/v1", "stable"), p.serve("churn/v1", "stable")],
        "canary": [p.serve("churn/v2", "canary")],
    }
    p.stop_all()


def write_config(path: Path, config: dict) -> Path:
    """Write atomically, as the operator's ConfigMap volume and the local runtime do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
    return path


def request(port: int, method: str, path: str, body: Any = None, headers: dict | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


CHURN_ROW = [12.0, 70.0, 900.0, 1.0, 2.0, 1.0, 30.0, 1.0, 40.0, 20.0, 10.0, 5.0, 1.0, 2.0, 3.0, 1.0, 20.0, 2.0, 30.0, 0.0]


def infer_body(rows: int = 1, request_id: str | None = None) -> dict:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, len(CHURN_ROW)], "data": CHURN_ROW * rows}]}
    if request_id:
        body["id"] = request_id
    return body


INFER = "/v2/models/churn/infer"


@dataclass
class Outcome:
    status: int  # 0: the connection failed
    variant: str | None
    seconds: float
    body: bytes = b""


def load(port: int, total: int, clients: int, headers_for=None, body: Any = None, path: str = INFER,
         progress: list | None = None) -> list[Outcome]:
    """``total`` POSTs over ``clients`` keep-alive connections; every answer, failures included.

    ``progress`` gets one item per answered request, for a test that acts mid-load.
    """
    import time

    payload = json.dumps(body if body is not None else infer_body()).encode()

    def client(index: int) -> list[Outcome]:
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(index, total, clients):
            headers = {"content-type": "application/json", **(headers_for(i) if headers_for else {})}
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out.append(Outcome(resp.status, resp.getheader("x-ondeck-variant"), time.perf_counter() - start, data))
            except (OSError, http.client.HTTPException):
                out.append(Outcome(0, None, time.perf_counter() - start))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if progress is not None:
                progress.append(1)
        conn.close()
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [o for chunk in pool.map(client, range(clients)) for o in chunk]


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    from prometheus_client.parser import text_string_to_metric_families

    _, _, text = request(port, "GET", "/metrics")
    total = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def config(variants: list[dict], **extra: Any) -> dict:
    return {"model": "churn", "variants": variants, **extra}


def variants(servers: dict[str, list[Proc]], stable: int = 90, canary: int = 10) -> list[dict]:
    """Config variants over the module's ``servers``: stable (churn/v1, two replicas) and canary (churn/v2)."""
    return [
        {"name": "stable", "version": "v1", "weight": stable, "endpoints": [p.endpoint() for p in servers["stable"]]},
        {"name": "canary", "version": "v2", "weight": canary, "endpoints": [p.endpoint() for p in servers["canary"]]},
    ]


RULES = [{"header": "x-variant", "exact": "canary", "variant": "canary"},
         {"header": "x-beta-user", "regex": "^(yes|true)$", "variant": "canary"},
         {"header": "x-variant", "exact": "stable", "variant": "stable"}]
