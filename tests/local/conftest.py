"""`ondeck run` as a real subprocess on loopback, and manifests over the example packages."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ondeck.local.processes import STATE_DIR_ENV
from tests.helpers import wait_for

ONDECK = [sys.executable, "-m", "ondeck.cli"]

# Short intervals and 50% steps: enough requests per measurement for minSamples on a busy machine.
FAST_ANALYSIS = {"templates": [{
    "name": "health", "interval": "2s", "count": 4, "failureLimit": 0, "inconclusiveLimit": 3,
    "metrics": [
        {"name": "error-rate", "kind": "errorRate", "maxIncrease": 0.01},
        {"name": "accuracy", "kind": "accuracy", "maxDecrease": 0.02},
        {"name": "prediction-drift", "kind": "predictionDrift", "minEffect": 0.3},
    ]}]}


def manifest(tmp: Path, examples: Path, name: str, *, canary: str | None = "v2", steps: list | None = None,
             analysis: dict | None = None, **spec: Any) -> Path:
    variants = [{"name": "stable", "version": "v1", "uri": (examples / "churn" / "v1").as_uri()}]
    body: dict[str, Any] = {"model": {"name": "churn"}, "variants": variants, **spec}
    if canary:
        variants.append({"name": "canary", "version": canary, "uri": (examples / "churn" / canary).as_uri()})
        body["strategy"] = {"canary": {"canaryVariant": "canary", "steps": steps}}
    if analysis:
        body["analysis"] = analysis
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment",
                                    "metadata": {"name": name}, "spec": body}, sort_keys=False))
    return path


def processes_of(state_dir: Path) -> list[int]:
    """Every live process started for ``state_dir`` (each child carries it in its environment)."""
    marker = f"{STATE_DIR_ENV}={state_dir.resolve()}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if status != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


class Run:
    """One `ondeck run` subprocess with its state directory."""

    def __init__(self, manifest_path: Path, state_dir: Path, *args: str):
        self.state_dir = state_dir
        self.log = state_dir.parent / f"{state_dir.name}-run.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ONDECK + ["run", str(manifest_path), "--state-dir", str(state_dir), "--http-port", "0",
                          "--grpc-port", "0", "--no-view", *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None

    def wait(self, condition, timeout: float, what: str) -> dict[str, Any]:
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"ondeck run exited with {self.proc.returncode}:\n{self.output()}")
            state = self.state()
            return state if state and condition(state) else None

        try:
            return wait_for(check, timeout=timeout, interval=0.2, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstate: {json.dumps(_brief(self.state()))}\nlog:\n{self.output()[-3000:]}") from None

    def ready(self, timeout: float = 120) -> dict[str, Any]:
        return self.wait(lambda s: s.get("running") and (s.get("router") or {}).get("http"), timeout, "ondeck run to serve")

    @property
    def router(self) -> str:
        return f"127.0.0.1:{self.state()['router']['http']}"

    def feedback_to(self, variant: str) -> str | None:
        replicas = (self.state() or {}).get("variants", {}).get(variant, {}).get("replicas") or []
        return f"127.0.0.1:{replicas[0]['http']}" if replicas and replicas[0].get("http") else None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def _brief(state: dict[str, Any] | None) -> Any:
    if not state:
        return state
    r = state.get("rollout") or {}
    return {"rollout": {k: r.get(k) for k in ("phase", "stepIndex", "canaryWeight", "message")},
            "decisions": [(d["action"], d["reason"]) for d in state.get("decisions", [])],
            "events": [e["message"] for e in state.get("events", [])[-8:]]}


@pytest.fixture(scope="session")
def requests_v1(examples_dir):
    """Request bodies of 8 live churn rows each, with their labels (built once: seconds on a busy machine)."""
    from ondeck.local.traffic import churn_requests

    return churn_requests(examples_dir / "churn" / "v1", 500, rows=8, seed=3)


@pytest.fixture
def runs(tmp_path):
    """Start `ondeck run`s; every one (and every process it started) is gone after the test."""
    started: list[Run] = []

    def start(manifest_path: Path, name: str = "state", *args: str) -> Run:
        run = Run(manifest_path, tmp_path / name, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=30)
        for pid in processes_of(run.state_dir):
            os.kill(pid, signal.SIGKILL)
