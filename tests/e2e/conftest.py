"""Fixtures of the end-to-end rollout tests: the CRD, one Prometheus per module, a scenario per test."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Prometheus, Scenario

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd.yaml"


@pytest.fixture(scope="session")
def md_crd(k8s_cluster):
    k8s_cluster.kubectl("apply", "-f", str(CRD))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.ondeck.io", "--timeout=60s")
    return k8s_cluster


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    prom = Prometheus(tmp_path_factory.mktemp("prometheus")).start()
    yield prom
    prom.stop()


@pytest.fixture
def scenario(md_crd, k8s_namespace, examples_dir, prometheus, tmp_path, request):
    """``scenario(manifest)`` starts the real parts of one ModelDeployment; all stopped afterwards."""
    started: list[Scenario] = []

    def start(md: dict, prom: Prometheus | None = None) -> Scenario:
        s = Scenario(md_crd.kubeconfig, lambda *a, **kw: md_crd.kubectl(*a, check=False, **kw), k8s_namespace, md,
                     examples_dir, prom or prometheus, tmp_path)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()
        request.node.add_report_section("teardown", "logs", s.logs()[-12000:])
