"""The Helm chart, rendered offline: lint-clean, least privilege, hardened, and made of the same
sources as the rest of ondeck (the generated CRD, the install bundle's RBAC, the alert rules file,
the dashboards' JSON, the spec's analysis templates)."""
from __future__ import annotations

import json

import pytest
import yaml

from ondeck.cli import build_parser
from ondeck.spec.model import Analysis
from tests.observe import sources
from tests.observe.conftest import Helm

INSTALL = sources.REPO / "manifests" / "install.yaml"
CRD = sources.REPO / "manifests" / "crd.yaml"

# Every optional part on, as a platform engineer with kube-prometheus-stack would install it.
EVERYTHING = {
    "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
    "defaultAnalysis": {"enabled": True},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "operator": {"verbose": True, "servingImage": "registry.example/ondeck:custom"},
}
NAMESPACED = {"operator": {"watchNamespaces": ["team-a", "team-b"]}}



def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_container(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def install_bundle() -> list[dict]:
    return [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]


@pytest.mark.parametrize("values", [None, EVERYTHING, NAMESPACED], ids=["defaults", "everything", "namespaced"])
def test_lint_is_clean(helm: Helm, values) -> None:
    proc = helm("lint", str(sources.CHART), "--strict", "--values", "-", input=yaml.safe_dump(values or {}))
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_renders_operator_rbac_and_dashboards_by_default(helm: Helm) -> None:
    kinds = sorted(o["kind"] for o in helm.render())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "Deployment", "ServiceAccount"]
    everything = sorted(o["kind"] for o in helm.render(EVERYTHING))
    assert everything == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "ConfigMap", "Deployment",
                          "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"]


def test_crd_is_the_generated_one() -> None:
    """crds/ is a copy of manifests/crd.yaml (scripts/gen-crd writes that one): copy it again when this fails."""
    copies = list((sources.CHART / "crds").iterdir())
    assert [p.name for p in copies] == ["modeldeployments.ondeck.io.yaml"]
    assert copies[0].read_text() == CRD.read_text(), "charts/ondeck/crds is stale: cp manifests/crd.yaml into it"


def test_rbac_is_the_install_bundles(helm: Helm) -> None:
    """The same least-privilege rules as manifests/install.yaml (written from the operator's own table)."""
    expected = one(install_bundle(), "ClusterRole")["rules"]
    objects = helm.render()
    assert one(objects, "ClusterRole")["rules"] == expected
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "ondeck-system"}]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_watching_some_namespaces_grants_roles_there_only(helm: Helm) -> None:
    objects = helm.render(NAMESPACED)
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles, bindings = by_kind(objects, "Role"), by_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(r["rules"] == one(install_bundle(), "ClusterRole")["rules"] for r in roles)
    args = operator_container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=team-a", "--namespace=team-b"]


def test_operator_runs_as_one_hardened_pod(helm: Helm) -> None:
    deployment = one(helm.render(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # never two operators at once
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8081} in container["ports"]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def test_values_reach_the_operator(helm: Helm) -> None:
    container = operator_container(helm.render({
        "image": {"repository": "registry.example/ondeck", "tag": "1.2.3"},
        "operator": {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}, "workers": 4},
        "prometheus": {"url": "http://prom:9090"}}))
    assert container["image"] == "registry.example/ondeck:1.2.3"
    assert container["command"] == ["ondeck"]
    args = container["args"]
    assert args[0] == "operator"
    assert "--image=registry.example/ondeck:1.2.3" in args  # servers and routers default to the same image
    assert "--workers=4" in args and "--prometheus-url=http://prom:9090" in args
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert "--image=registry.example/ondeck:custom" in operator_container(helm.render(EVERYTHING))["args"]


@pytest.mark.parametrize("values", [None, EVERYTHING, NAMESPACED], ids=["defaults", "everything", "namespaced"])
def test_operator_accepts_the_charts_flags(helm: Helm, values) -> None:
    """`ondeck operator` parses every arg the chart gives it."""
    args = operator_container(helm.render(values))["args"]
    _, unknown = build_parser().parse_known_args(args)
    assert not unknown, f"the chart passes flags the operator does not know: {unknown}"


def test_prometheusrule_is_the_alerts_file(helm: Helm) -> None:
    """The installed rules are files/alerts.yaml, which promtool checks and tests."""
    rule = one(helm.render(EVERYTHING), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(sources.ALERTS.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheusrule_leaves_out_disabled_alerts(helm: Helm) -> None:
    values = dict(EVERYTHING, prometheusRule={"enabled": True, "disabled": ["OndeckPayloadLogDrops",
                                                                           "OndeckCanaryAborted"]})
    groups = one(helm.render(values), "PrometheusRule")["spec"]["groups"]
    alerts = [r["alert"] for g in groups for r in g["rules"]]
    assert alerts == [r["alert"] for r in sources.alert_rules()
                      if r["alert"] not in ("OndeckPayloadLogDrops", "OndeckCanaryAborted")]
    assert "ondeck.rollout" not in [g["name"] for g in groups]  # its only alert is gone: no empty group


def test_servicemonitor_scrapes_the_operator_with_its_namespace_label(helm: Helm) -> None:
    objects = helm.render(EVERYTHING)
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # the `release` label pitfall
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True  # else `namespace` becomes exported_namespace
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    ports = {p["name"]: p["containerPort"] for p in operator_container(objects)["ports"]}
    assert f"--metrics-port={ports['metrics']}" in operator_container(objects)["args"]


def test_dashboards_are_configmaps_for_the_grafana_sidecar(helm: Helm) -> None:
    maps = [o for o in helm.render() if o["kind"] == "ConfigMap"]
    assert {m["metadata"]["labels"]["grafana_dashboard"] for m in maps} == {"1"}
    shipped = {key: json.loads(text) for m in maps for key, text in m["data"].items()}
    assert shipped == {f"ondeck-{name}.json": board for name, board in sources.dashboards().items()}
    moved = helm.render({"dashboards": {"namespace": "monitoring", "annotations": {"grafana_folder": "ondeck"}}})
    for m in (o for o in moved if o["kind"] == "ConfigMap"):
        assert m["metadata"]["namespace"] == "monitoring"
        assert m["metadata"]["annotations"] == {"grafana_folder": "ondeck"}
    assert not [o for o in helm.render({"dashboards": {"enabled": False}}) if o["kind"] == "ConfigMap"]


def test_default_analysis_is_a_valid_spec_analysis(helm: Helm) -> None:
    """The templates the chart mounts parse as a ModelDeployment's spec.analysis."""
    objects = helm.render(EVERYTHING)
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and "templates.yaml" in o.get("data", {})]
    analysis = Analysis.model_validate(yaml.safe_load(config["data"]["templates.yaml"]))
    assert [t.name for t in analysis.templates] == ["default"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "analysis", "configMap": {"name": config["metadata"]["name"]}} in pod["volumes"]
    assert "--analysis-templates=/etc/ondeck/analysis/templates.yaml" in pod["containers"][0]["args"]


@pytest.mark.parametrize("values, named", [
    ({"serviceMonitor": {"enabeld": True}}, "enabeld"),
    ({"prometheusRule": {"disabled": ["OndeckNoSuchAlert"]}}, "disabled"),
    ({"operator": {"workers": "many"}}, "workers"),
])
def test_values_schema_rejects_mistakes_by_name(helm: Helm, values, named) -> None:
    proc = helm.template(values, check=False)
    assert proc.returncode != 0
    assert named in proc.stderr, proc.stderr


def test_schema_lists_every_alert() -> None:
    schema = json.loads((sources.CHART / "values.schema.json").read_text())
    names = schema["properties"]["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
    assert names == [r["alert"] for r in sources.alert_rules()]
