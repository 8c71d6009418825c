"""The CRD and the operator against the real control plane (kube-apiserver + kwok; tests/fixtures/cluster.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ondeck.serving.router.config import RouterConfig
from ondeck.spec import SpecError, parse_manifest
from tests.helpers import wait_for
from tests.operator.conftest import ROOT, Operator, apply, condition, get, listed
from tests.operator.manifests import BAD, bad, base

pytestmark = pytest.mark.k8s

EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
TEST_CRDS = sorted((Path(__file__).parent / "crds").glob("*.yaml"))
OWNED = "app.kubernetes.io/managed-by=ondeck-operator"


def weighted(weights: dict[str, int], name: str = "churn") -> dict:
    """Two variants served from paths in the image (no volume: kwok runs no containers anyway)."""
    d = base()
    d["metadata"]["name"] = name
    d["spec"].pop("strategy")
    d["spec"].pop("analysis")
    d["spec"]["traffic"] = {"weights": weights}
    return d


def router_weights(cluster, ns: str, name: str = "churn") -> dict[str, int] | None:
    cm = get(cluster, ns, "configmap", f"{name}-router")
    return RouterConfig.from_text(cm["data"]["router.yaml"]).weights if cm else None


def ready(cluster, ns: str, name: str, generation: int = 1):
    md = get(cluster, ns, "modeldeployment", name)
    status = (md or {}).get("status") or {}
    if status.get("observedGeneration") == generation and condition(md, "Ready").get("status") == "True":
        return md
    return None


# --- the CRD -------------------------------------------------------------------------------------


def test_crd_is_established_and_explained(md_crd):
    def explain(field):
        return md_crd.kubectl("explain", field, check=False).stdout

    out = wait_for(lambda: "exactly one of setWeight, pause or analysis" in explain("modeldeployment.spec.strategy.canary.steps")
                   and explain("modeldeployment.spec.strategy.canary.steps"), timeout=60, what="kubectl explain")
    assert "setWeight" in out and "pause" in out
    assert "pvc://<claim>/<path>" in explain("md.spec.variants.uri")
    assert "must add up to 100" in explain("md.spec.traffic.weights")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_applies(md_crd, k8s_namespace, path):
    result = md_crd.kubectl("-n", k8s_namespace, "apply", "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    md = get(md_crd, k8s_namespace, "md", name)
    assert md["spec"]["traffic"]["provider"] in ("router", "gatewayAPI")  # defaults applied by the apiserver


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_manifest_is_rejected_by_the_apiserver_with_the_parsers_message(md_crd, name):
    with pytest.raises(SpecError) as info:
        parse_manifest(bad(name))
    result = apply(md_crd, "default", bad(name), "--dry-run=server")
    assert result.returncode != 0, f"the apiserver accepted {name}"
    # one error per line ("* ..." when there are several), after "The ModelDeployment "x" is invalid: "
    lines = [re.sub(r'^The .*? is invalid: ', "", line.strip()) for line in result.stderr.replace("* ", "\n").splitlines()]
    for problem in info.value.problems:
        if problem.message.startswith("unknown field"):
            assert problem.message in result.stderr
        else:
            assert any(line.startswith(f"{problem.path}: ") and problem.message in line for line in lines), \
                f"{problem} not in:\n{result.stderr}"


# --- the operator --------------------------------------------------------------------------------


def test_lifecycle_create_ready_edit_repair_delete(operator, k8s_namespace):
    cluster, ns = operator.cluster, k8s_namespace
    assert apply(cluster, ns, weighted({"stable": 80, "canary": 20})).returncode == 0

    # created: one Deployment and Service per variant, the router, its config; kwok makes pods Ready
    md = wait_for(lambda: ready(cluster, ns, "churn"), timeout=90, what="Ready")
    status = md["status"]
    assert status["phase"] == "Healthy"
    assert status["variants"] == [{"name": "stable", "version": "v1", "replicas": 1, "readyReplicas": 1},
                                  {"name": "canary", "version": "v2", "replicas": 1, "readyReplicas": 1}]
    assert status["weights"] == {"stable": 80, "canary": 20}
    uid = md["metadata"]["uid"]
    deployments = {d["metadata"]["name"]: d for d in listed(cluster, ns, "deployments", OWNED)}
    assert sorted(deployments) == ["churn", "churn-canary", "churn-stable"]
    for kind in ("deployments", "services", "configmaps"):
        for item in listed(cluster, ns, kind, OWNED):
            assert item["metadata"]["ownerReferences"][0]["uid"] == uid, item["metadata"]["name"]
    assert router_weights(cluster, ns) == {"stable": 80, "canary": 20}
    table = cluster.kubectl("-n", ns, "get", "md", "churn").stdout
    assert "Healthy" in table and "v1" in table and "v2" in table and "20" in table

    # edited: weights, replicas, a new version; observedGeneration follows
    edit = weighted({"stable": 50, "canary": 50})
    edit["spec"]["variants"][0]["replicas"] = 2
    edit["spec"]["variants"][1]["version"] = "v3"
    assert apply(cluster, ns, edit).returncode == 0
    md = wait_for(lambda: ready(cluster, ns, "churn", generation=2), timeout=90, what="Ready at generation 2")
    assert md["status"]["variants"][1]["version"] == "v3"
    assert md["status"]["variants"][0] == {"name": "stable", "version": "v1", "replicas": 2, "readyReplicas": 2}
    assert router_weights(cluster, ns) == {"stable": 50, "canary": 50}
    assert get(cluster, ns, "deployment", "churn-canary")["metadata"]["labels"]["ondeck.io/version"] == "v3"

    # a variant removed from the spec: its objects are pruned
    one = weighted({"stable": 100})
    one["spec"]["variants"].pop()
    assert apply(cluster, ns, one).returncode == 0
    wait_for(lambda: get(cluster, ns, "deployment", "churn-canary") is None
             and get(cluster, ns, "service", "churn-canary") is None, timeout=60, what="canary pruned")
    md = wait_for(lambda: ready(cluster, ns, "churn", generation=3), timeout=60, what="Ready at generation 3")
    assert router_weights(cluster, ns) == {"stable": 100}
    assert md["status"]["weights"] == {"stable": 100}  # the removed variant is gone from status too
    assert [v["name"] for v in md["status"]["variants"]] == ["stable"]

    # deleted by hand: put back
    cluster.kubectl("-n", ns, "delete", "deployment", "churn-stable", "--wait=false")
    wait_for(lambda: (get(cluster, ns, "deployment", "churn-stable") or {}).get("metadata", {}).get("uid")
             not in (None, deployments["churn-stable"]["metadata"]["uid"]), timeout=60, what="Deployment re-created")

    # the ModelDeployment deleted: the garbage collector removes everything it owned
    cluster.kubectl("-n", ns, "delete", "md", "churn", "--wait=true", "--timeout=60s")
    wait_for(lambda: not any(listed(cluster, ns, kind, OWNED) for kind in ("deployments", "services", "configmaps")),
             timeout=90, what="owned objects garbage-collected")
    assert "Traceback" not in operator.text()


def test_unknown_uri_scheme_is_a_status_condition_and_an_event(operator, k8s_namespace):
    cluster, ns = operator.cluster, k8s_namespace
    d = weighted({"stable": 100, "canary": 0})
    d["spec"]["variants"][1]["uri"] = "s3://bucket/churn/v2"
    assert apply(cluster, ns, d).returncode == 0  # the apiserver takes it: the scheme check is the operator's
    md = wait_for(lambda: condition(get(cluster, ns, "md", "churn"), "Degraded").get("status") == "True"
                  and get(cluster, ns, "md", "churn"), timeout=60, what="Degraded")
    degraded = condition(md, "Degraded")
    assert degraded["reason"] == "UnsupportedModelURI"
    assert "variant canary: unsupported model URI 's3://bucket/churn/v2'" in degraded["message"]
    assert condition(md, "Ready")["status"] == "False" and md["status"]["phase"] == "Degraded"
    assert listed(cluster, ns, "deployments", OWNED) == []  # nothing half-deployed
    events = wait_for(lambda: [e for e in json.loads(cluster.kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
                               if e["reason"] == "UnsupportedModelURI"], timeout=30, what="warning event")
    assert events[0]["type"] == "Warning"

    # fixed: served
    d["spec"]["variants"][1]["uri"] = "file:///models/churn/v2"
    apply(cluster, ns, d)
    wait_for(lambda: ready(cluster, ns, "churn", generation=2), timeout=90, what="Ready after the fix")
    assert condition(get(cluster, ns, "md", "churn"), "Degraded")["status"] == "False"


@pytest.fixture
def no_test_crds(md_crd):
    """Route and monitoring CRDs absent at the start, removed again at the end."""
    def delete():
        for path in TEST_CRDS:
            md_crd.kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
    delete()
    yield
    delete()


def test_routes_and_servicemonitor_only_when_their_crds_exist(no_test_crds, operator, k8s_namespace):
    cluster, ns = operator.cluster, k8s_namespace
    gw = weighted({"stable": 70, "canary": 30}, name="gw")
    gw["spec"]["traffic"].update(provider="gatewayAPI", host="churn.example.com", gateway={"name": "public"})
    mesh = weighted({"stable": 60, "canary": 40}, name="mesh")
    mesh["spec"]["traffic"]["provider"] = "istio"
    assert apply(cluster, ns, gw).returncode == 0 and apply(cluster, ns, mesh).returncode == 0

    for name, kind in (("gw", "HTTPRoute"), ("mesh", "VirtualService")):
        md = wait_for(lambda: ready(cluster, ns, name), timeout=90, what=f"{name} Ready")  # served by the router anyway
        degraded = condition(md, "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "TrafficProviderMissing"
        assert kind in degraded["message"]

    for path in TEST_CRDS:
        cluster.kubectl("apply", "-f", str(path))
    for path in TEST_CRDS:
        cluster.kubectl("wait", "--for=condition=Established", "-f", str(path), "--timeout=60s")

    route = wait_for(lambda: get(cluster, ns, "httproute", "gw"), timeout=60, what="HTTPRoute rendered")
    split = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert split == {f"gw-{k}": v for k, v in router_weights(cluster, ns, "gw").items()} == {"gw-stable": 70, "gw-canary": 30}
    assert route["spec"]["parentRefs"] == [{"name": "public"}]
    vs = wait_for(lambda: get(cluster, ns, "virtualservice", "mesh"), timeout=60, what="VirtualService rendered")
    assert [r["weight"] for r in vs["spec"]["http"][-1]["route"]] == [60, 40]
    for name in ("gw", "mesh"):
        wait_for(lambda: get(cluster, ns, "servicemonitor", name), timeout=60, what=f"ServiceMonitor {name}")
        wait_for(lambda: condition(get(cluster, ns, "md", name), "Degraded").get("status") == "False",
                 timeout=60, what=f"{name} no longer Degraded")
    assert get(cluster, ns, "virtualservice", "gw") is None and get(cluster, ns, "httproute", "mesh") is None


# --- the install bundle and least privilege --------------------------------------------------------


def test_install_bundle_applies_and_its_rbac_is_enough_and_no_more(md_crd, k8s_namespace, tmp_path, request):
    cluster, ns = md_crd, k8s_namespace
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    rest = [d for d in docs if d["kind"] != "Deployment"]
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rest), check=False)
    assert result.returncode == 0, result.stderr
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(deployment), check=False)
    assert result.returncode == 0, result.stderr

    sa = "system:serviceaccount:ondeck-system:ondeck"
    for verb, resource, allowed in (("patch", "deployments.apps", "yes"), ("patch", "modeldeployments.ondeck.io/status", "yes"),
                                    ("get", "secrets", "yes"), ("list", "secrets", "no"), ("watch", "secrets", "no"),
                                    ("delete", "pods", "no"), ("create", "modeldeployments.ondeck.io", "no")):
        out = cluster.kubectl("auth", "can-i", verb, resource, "--as", sa, "-n", ns, check=False).stdout.strip()
        assert out == allowed, (verb, resource, out)

    # the operator itself, with nothing but the ServiceAccount's token, runs a ModelDeployment to Ready
    token = cluster.kubectl("-n", "ondeck-system", "create", "token", "ondeck", "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    kubeconfig = tmp_path / "sa.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}],
    }))
    op = Operator(cluster, ns, tmp_path / "operator.log", kubeconfig=str(kubeconfig))
    try:
        apply(cluster, ns, weighted({"stable": 90, "canary": 10}))
        wait_for(lambda: ready(cluster, ns, "churn"), timeout=90, what="Ready under the ServiceAccount")
        assert router_weights(cluster, ns) == {"stable": 90, "canary": 10}
    finally:
        op.stop()
        request.node.add_report_section("call", "operator log", op.text()[-8000:])
    assert "Forbidden" not in op.text() and "403" not in op.text(), op.text()[-3000:]
