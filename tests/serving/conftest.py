"""`ondeck serve` as a real subprocess on loopback, started and torn down by fixtures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for


class Server:
    """A running `ondeck serve`; ``url`` for REST, ``grpc`` for ``host:port``."""

    def __init__(self, packages: list[str], *args: str, env: dict[str, str] | None = None, workers: int = 1):
        self.http_port, self.grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "ondeck.cli", "serve", *packages, "--host", "127.0.0.1",
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), "--workers", str(workers), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.output: list[str] = []  # read all along, so the pipe never fills
        self._reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self._reader.start()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        try:
            wait_for(self._ready, timeout=60, what="ondeck serve to be ready")
        except AssertionError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            self._reader.join(5)
            raise AssertionError(f"ondeck serve exited with {self.proc.returncode}: {''.join(self.output)}")
        started = sum("serving" in line for line in self.output)  # each worker prints one line when listening
        return started == self.workers and self.request("GET", "/v2/health/ready")[0] == 200

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def json(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
        status, _, raw = self.request(method, path, body, headers)
        return status, json.loads(raw)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as {'name{labels}': value}."""
        _, _, raw = self.request("GET", "/metrics")
        out = {}
        for line in raw.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def terminate(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM; the exit code and everything the server printed."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(10)
        return code, "".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)


def sample(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        have = dict(part.split("=", 1) for part in _split_labels(rest.rstrip("}")))
        if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
            total += value
    return total


def _split_labels(text: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + ([cur] if cur else [])


@pytest.fixture(scope="session")
def churn_rows(examples_dir: Path):
    """Live churn rows (float32 [n, 20]) and their labels."""
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(examples_dir / "data" / "churn-live.csv")
    return frame.drop(columns=["churned"]).to_numpy(dtype=np.float32), frame["churned"].to_numpy()


@pytest.fixture(scope="module")
def server(examples_dir: Path):
    """churn v1 + cancer v1 with a small body limit, shared by a module's read-only tests."""
    s = Server([str(examples_dir / "churn" / "v1"), str(examples_dir / "cancer" / "v1")],
               "--max-body-bytes", "65536", "--variant", "blue")
    yield s
    s.stop()


@pytest.fixture
def start_server(examples_dir: Path):
    """Start servers with custom flags; all are stopped after the test."""
    started: list[Server] = []

    def start(*args: str, packages: list[str] | None = None, **kwargs) -> Server:
        s = Server(packages or [str(examples_dir / "churn" / "v1")], *args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
