"""The local control plane (scripts/k8s-up) behaves like a real cluster.

Pods are scheduled onto kwok's fake nodes and made Ready by kwok, so a
Deployment becomes Available without any container runtime; CRDs with CEL
validation are enforced by the real kube-apiserver; k8s-down leaves nothing
running.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.cluster import K8S_DOWN, K8S_UP, K8sCluster, run_script

pytestmark = pytest.mark.k8s

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        # kwok never pulls or runs it: any image name will do.
        image: registry.invalid/ondeck/never-pulled:1.0
        resources:
          requests: {cpu: 100m, memory: 64Mi}
"""

CRD_GROUP = "ondeck-test.example.com"
CRD_NAME = f"ranges.{CRD_GROUP}"
CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {CRD_NAME}
spec:
  group: {CRD_GROUP}
  scope: Namespaced
  names: {{plural: ranges, singular: range, kind: Range}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [min, max]
            properties:
              min: {{type: integer}}
              max: {{type: integer}}
            x-kubernetes-validations:
            - rule: self.min <= self.max
              message: min must not exceed max
"""


def range_object(name: str, lo: int, hi: int) -> str:
    return f"""
apiVersion: {CRD_GROUP}/v1
kind: Range
metadata: {{name: {name}}}
spec: {{min: {lo}, max: {hi}}}
"""


def pid_running(pid: int, state_dir: Path) -> bool:
    """True if pid is a live (non-zombie) process of the cluster in state_dir."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and f"{state_dir}/" in cmdline


def test_deployment_becomes_available_on_kwok_nodes(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOYMENT)
    k8s_cluster.kubectl(
        "-n", ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=120s",
        timeout=150,
    )

    pods = json.loads(k8s_cluster.kubectl("-n", ns, "get", "pods", "-l", "app=web", "-o", "json").stdout)
    live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2
    nodes = json.loads(k8s_cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)
    kwok_nodes = {n["metadata"]["name"] for n in nodes["items"]}
    assert len(kwok_nodes) >= 3
    for pod in live:
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready.get("Ready") == "True", pod["status"]
        assert pod["spec"]["nodeName"] in kwok_nodes
        assert pod["status"].get("podIP"), "kwok assigns a pod IP from its --cidr"

    deploy = json.loads(k8s_cluster.kubectl("-n", ns, "get", "deployment/web", "-o", "json").stdout)
    assert deploy["status"].get("readyReplicas") == 2
    assert deploy["status"].get("availableReplicas") == 2


def test_crd_cel_validation(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("apply", "-f", "-", input=CRD)
    try:
        k8s_cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s", timeout=90
        )

        bad = k8s_cluster.kubectl(
            "-n", ns, "apply", "-f", "-", input=range_object("bad", 5, 1), check=False
        )
        assert bad.returncode != 0, bad.stdout
        assert "min must not exceed max" in bad.stderr

        k8s_cluster.kubectl("-n", ns, "apply", "-f", "-", input=range_object("good", 1, 5))
        got = k8s_cluster.kubectl(
            "-n", ns, "get", f"ranges.{CRD_GROUP}", "good", "-o", "jsonpath={.spec.min},{.spec.max}"
        )
        assert got.stdout == "1,5"
        missing = k8s_cluster.kubectl("-n", ns, "get", f"ranges.{CRD_GROUP}", "bad", check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr
    finally:
        k8s_cluster.kubectl("delete", f"crd/{CRD_NAME}", "--wait=false", "--ignore-not-found", check=False)


def test_k8s_down_leaves_no_recorded_pid_running(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    """A second cluster in its own state dir (own ports) starts, is reused by a
    second k8s-up, and k8s-down stops every pid it recorded. The session
    cluster is untouched."""
    # A short path: the state dir shows up in every component's command line.
    state = tmp_path / "c2"
    env = dict(os.environ, ONDECK_CLUSTER_DIR=str(state), ONDECK_K8S_NODES="1")
    env.pop("KUBECONFIG", None)
    pids: dict[str, int] = {}
    try:
        up = run_script(K8S_UP, env=env, timeout=600)
        assert up.returncode == 0, up.stderr[-4000:]
        kubeconfig = up.stdout.strip().splitlines()[-1]
        assert kubeconfig == str(state / "kubeconfig")
        assert kubeconfig != k8s_cluster.kubeconfig

        pids = {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
        assert set(pids) == COMPONENTS
        assert all(pid_running(pid, state) for pid in pids.values()), pids

        other = K8sCluster(kubeconfig=kubeconfig, bin_dir=k8s_cluster.bin_dir)
        nodes = other.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == ["node/kwok-node-0"]

        # Idempotent: a second k8s-up finds it healthy and changes nothing.
        again = run_script(K8S_UP, env=env, timeout=120)
        assert again.returncode == 0, again.stderr[-4000:]
        assert again.stdout.strip().splitlines()[-1] == kubeconfig
        assert {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")} == pids
    finally:
        down = run_script(K8S_DOWN, env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    still = {name: pid for name, pid in pids.items() if pid_running(pid, state)}
    assert not still, f"still running after k8s-down: {still}"

    # The session cluster is still there.
    k8s_cluster.kubectl("get", "--raw", "/readyz")
