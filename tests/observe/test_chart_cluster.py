"""The chart on the real control plane: `helm install` works, and the operator it configures, with
only the chart's ServiceAccount and Role, reconciles an example ModelDeployment.

kwok's pods run no containers, so the operator runs here as a subprocess with exactly the args of
the installed Deployment, authenticated as the chart's ServiceAccount.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import stop_process, wait_for
from tests.observe.conftest import Helm
from tests.observe.sources import CHART, REPO

pytestmark = pytest.mark.k8s

EXAMPLE = REPO / "manifests" / "examples" / "canary.yaml"
RELEASE = "ondeck"


def get(cluster, namespace: str, kind: str, name: str) -> dict | None:
    proc = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def names(cluster, namespace: str, kind: str, selector: str) -> list[str]:
    out = cluster.kubectl("-n", namespace, "get", kind, "-l", selector, "-o", "json").stdout
    return sorted(item["metadata"]["name"] for item in json.loads(out)["items"])


def service_account_kubeconfig(cluster, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig that authenticates as ``account`` (a short-lived token), nothing more."""
    token = cluster.kubectl("-n", namespace, "create", "token", account, "--duration=30m").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa", "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}]}))
    return str(path)


@pytest.fixture
def installed(k8s_cluster, k8s_namespace, helm: Helm):
    """The chart installed in the test namespace, watching only that namespace."""
    values = {"operator": {"watchNamespaces": [k8s_namespace]}}
    kube = ["--kubeconfig", k8s_cluster.kubeconfig, "--namespace", k8s_namespace]
    helm("install", RELEASE, str(CHART), *kube, "--values", "-", "--wait", "--timeout", "180s",
         input=yaml.safe_dump(values), timeout=240)
    try:
        yield k8s_namespace
    finally:
        helm("uninstall", RELEASE, *kube, "--wait", "--timeout", "60s", check=False, timeout=90)


def test_chart_installs_and_its_operator_reconciles_an_example(k8s_cluster, installed, tmp_path, request) -> None:
    cluster, ns = k8s_cluster, installed
    deployment = get(cluster, ns, "deployment", f"{RELEASE}-operator")
    assert deployment["status"].get("readyReplicas") == 1  # kwok "runs" it; --wait saw it Ready
    assert get(cluster, ns, "crd", "modeldeployments.ondeck.io") is not None
    assert names(cluster, ns, "configmaps", "grafana_dashboard=1") == [
        f"{RELEASE}-dashboard-model-health", f"{RELEASE}-dashboard-rollout"]
    assert names(cluster, ns, "roles", f"app.kubernetes.io/instance={RELEASE}") == [f"{RELEASE}-operator"]

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = service_account_kubeconfig(cluster, ns, account, tmp_path / "sa.kubeconfig")
    ondeck = str(Path(sys.executable).with_name(container["command"][0]))
    # The installed args as they are; only the liveness port moves out of the way (the last one wins).
    cmd = [ondeck, *container["args"], "--kubeconfig", kubeconfig, "--health-port=0"]
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        operator = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        cluster.kubectl("-n", ns, "apply", "-f", str(EXAMPLE))
        name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]

        def reconciled():
            assert operator.poll() is None, f"the operator exited {operator.returncode}"
            md = get(cluster, ns, "modeldeployment", name)
            status = (md or {}).get("status") or {}
            return md if status.get("observedGeneration") == md["metadata"]["generation"] else None

        md = wait_for(reconciled, timeout=120, interval=0.5, what=f"ModelDeployment {name} reconciled")
        owned = [d for d in json.loads(cluster.kubectl("-n", ns, "get", "deployments", "-o", "json").stdout)["items"]
                 if any(ref["uid"] == md["metadata"]["uid"] for ref in d["metadata"].get("ownerReferences", ()))]
        variants = [v["name"] for v in md["spec"]["variants"]]
        assert sorted(d["metadata"]["name"] for d in owned) == sorted([name] + [f"{name}-{v}" for v in variants])
    finally:
        stop_process(operator)
        request.node.add_report_section("call", "operator log", log.read_text()[-6000:])
    text = log.read_text()
    assert "Forbidden" not in text and " 403" not in text, text[-3000:]
