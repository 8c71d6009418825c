"""Fixtures for the operator's cluster tests: the CRD installed, an operator process per test."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd.yaml"


class Operator:
    """``ondeck operator`` as a subprocess watching one namespace; its log is kept for failures."""

    def __init__(self, cluster, namespace: str, log: Path, kubeconfig: str | None = None):
        self.cluster, self.namespace, self.log = cluster, namespace, log
        cmd = [sys.executable, "-m", "ondeck.cli", "operator", "--kubeconfig", kubeconfig or cluster.kubeconfig,
               "--namespace", namespace, "--health-port", "0", "--poll-seconds", "1", "--workers", "4",
               "--image", "ondeck:test"]
        self._out = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="session")
def md_crd(k8s_cluster):
    """The ModelDeployment CRD, installed and Established (left installed: other areas use it too)."""
    k8s_cluster.kubectl("apply", "-f", str(CRD))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.ondeck.io", "--timeout=60s")
    return k8s_cluster


@pytest.fixture
def operator(md_crd, k8s_namespace, tmp_path, request):
    op = Operator(md_crd, k8s_namespace, tmp_path / "operator.log")
    yield op
    op.stop()
    # shown with the test's report when it fails
    request.node.add_report_section("teardown", "operator log", op.text()[-8000:])


def get(cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def listed(cluster, namespace: str, kind: str, selector: str) -> list[dict[str, Any]]:
    return json.loads(cluster.kubectl("-n", namespace, "get", kind, "-l", selector, "-o", "json").stdout)["items"]


def apply(cluster, namespace: str, manifest: dict[str, Any], *args: str):
    return cluster.kubectl("-n", namespace, "apply", *args, "-f", "-", input=yaml.safe_dump(manifest), check=False)


def condition(md: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((md or {}).get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return c
    return {}
