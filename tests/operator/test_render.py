"""Rendering is pure: the objects the operator would apply, checked without a cluster."""
from __future__ import annotations

import copy

import pytest
import yaml

from ondeck.operator.kube import RBAC_RULES
from ondeck.operator.render import Context, render
from ondeck.operator.render.install import install_objects
from ondeck.serving.router.config import RouterConfig
from ondeck.spec import parse_manifest
from ondeck.spec.traffic import desired_weights
from tests.operator.manifests import base

SHA = "a" * 64


def rendered(manifest, served=None, rollout=None):
    md = parse_manifest(manifest)
    ctx = Context(namespace="ns", uid="uid-1", image="img:1", weights=desired_weights(md.spec, rollout),
                  served=served or {})
    return {(o["kind"], o["metadata"]["name"]): o for o in render(md, ctx)}


def no_strategy(weights=None, **spec):
    d = base()
    d["spec"].pop("strategy")
    d["spec"].pop("analysis")
    if weights:
        d["spec"]["traffic"] = {"weights": weights}
    d["spec"].update(spec)
    return d


def ab_test():
    d = no_strategy({"stable": 60, "canary": 40})
    d["spec"]["strategy"] = {"abTest": {"rules": [{"header": "x-variant", "exact": "canary", "variant": "canary"},
                                                  {"header": "x-tier", "regex": "beta.*", "variant": "stable"}],
                                        "sticky": {"cookie": "uid"}}}
    return d


def router_config(objects) -> RouterConfig:
    return RouterConfig.from_text(objects["ConfigMap", "churn-router"]["data"]["router.yaml"])


def test_objects_per_variant_and_the_router():
    objs = rendered(base())
    assert sorted(objs) == sorted([("Deployment", "churn-stable"), ("Service", "churn-stable"),
                                   ("Deployment", "churn-canary"), ("Service", "churn-canary"),
                                   ("Deployment", "churn"), ("Service", "churn"), ("ConfigMap", "churn-router")])
    for o in objs.values():
        assert o["metadata"]["namespace"] == "ns"
        assert o["metadata"]["ownerReferences"] == [{
            "apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "name": "churn", "uid": "uid-1",
            "controller": True, "blockOwnerDeletion": True}]
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == "churn"
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ondeck-operator"


def test_server_deployment_runs_ondeck_serve_hardened():
    d = rendered(base())["Deployment", "churn-canary"]
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["ondeck"]
    assert c["args"][:8] == ["serve", "/models/churn/v2", "--variant", "canary", "--http-port", "8080", "--grpc-port", "9000"]
    assert c["args"][c["args"].index("--max-batch-size") + 1] == "32"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # a writable /tmp on a read-only root
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels["ondeck.io/model"] == "churn" and labels["ondeck.io/variant"] == "canary" and labels["ondeck.io/version"] == "v2"
    assert labels["app.kubernetes.io/name"] == "ondeck"
    assert d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # the selector must survive a version change (selectors are immutable)
    assert "ondeck.io/version" not in d["spec"]["selector"]["matchLabels"]
    assert d["spec"]["replicas"] == 1


def test_pvc_model_is_mounted_read_only_with_its_sub_path():
    d = base()
    d["spec"]["variants"][0]["uri"] = "pvc://models/churn/v1"
    pod = rendered(d)["Deployment", "churn-stable"]["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    (c,) = pod["containers"]
    assert {"name": "model", "mountPath": "/models/stable", "readOnly": True, "subPath": "churn/v1"} in c["volumeMounts"]
    assert c["args"][1] == "/models/stable"


def test_http_model_is_fetched_and_checked_by_an_init_container():
    d = base()
    d["spec"]["variants"][1].update(uri="https://models.example.com/churn-v2.tar.gz", sha256=SHA)
    pod = rendered(d)["Deployment", "churn-canary"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["python", "-m", "ondeck.operator.fetch"]
    assert init["args"][:6] == ["--url", "https://models.example.com/churn-v2.tar.gz", "--sha256", SHA, "--dest", "/models/canary"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "model", "emptyDir": {}} in pod["volumes"]
    (c,) = pod["containers"]
    assert {"name": "model", "mountPath": "/models/canary", "readOnly": True} in c["volumeMounts"]


def test_payload_log_gets_a_volume_and_flags():
    d = base()
    d["spec"]["serving"] = {"payloadLog": {"sampleRate": 0.25}}
    c = rendered(d)["Deployment", "churn-stable"]["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][c["args"].index("--payload-log-fraction") + 1] == "0.25"
    assert any(m["name"] == "payload-log" for m in c["volumeMounts"])


def test_router_config_is_one_the_router_accepts():
    config = router_config(rendered(base()))
    assert config.model == "churn"
    assert config.weights == {"stable": 100, "canary": 0}
    assert config.fallback == "stable"
    assert config.variant("canary").endpoints[0].http == "churn-canary.ns.svc.cluster.local:8080"
    assert config.variant("canary").endpoints[0].grpc == "churn-canary.ns.svc.cluster.local:9000"
    assert config.variant("canary").version == "v2"


def test_router_follows_rollout_state():
    state = {"stableVariant": "stable", "canaryVariant": "canary", "canaryWeight": 25}
    assert router_config(rendered(base(), rollout=state)).weights == {"stable": 75, "canary": 25}


def test_router_carries_ab_rules_and_sticky_cookie():
    config = router_config(rendered(ab_test()))
    assert config.weights == {"stable": 60, "canary": 40}
    assert [(r.header, r.exact, r.regex, r.variant) for r in config.rules] == [
        ("x-variant", "canary", None, "canary"), ("x-tier", None, "beta.*", "stable")]
    assert config.sticky.cookie == "uid"


def test_router_carries_shadow():
    d = no_strategy(strategy={"shadow": {"variant": "canary", "fraction": 0.3}})
    config = router_config(rendered(d))
    assert (config.shadow.variant, config.shadow.fraction) == ("canary", 0.3)
    assert config.weights == {"stable": 100, "canary": 0}


def test_router_deployment_mounts_its_config_without_subpath():
    pod = rendered(base())["Deployment", "churn"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["route", "--config", "/etc/ondeck/router.yaml", "--http-port", "8080", "--grpc-port", "9000"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount  # kubelet only refreshes whole-volume ConfigMap mounts
    assert {"name": "config", "configMap": {"name": "churn-router"}} in pod["volumes"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_autoscaling_adds_an_hpa_per_variant_and_leaves_replicas_to_it():
    d = base()
    d["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 5}
    objs = rendered(d)
    hpa = objs["HorizontalPodAutoscaler", "churn-canary"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "churn-canary"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "replicas" not in objs["Deployment", "churn-canary"]["spec"]
    assert not any(k == "HorizontalPodAutoscaler" for k, _ in rendered(base()))


def test_servicemonitor_only_when_its_crd_is_served():
    assert not any(k == "ServiceMonitor" for k, _ in rendered(base()))
    sm = rendered(base(), served={"ServiceMonitor": "v1"})["ServiceMonitor", "churn"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "churn"


def with_provider(d, provider):
    d["spec"].setdefault("traffic", {}).update(provider=provider, host="churn.example.com",
                                              gateway={"name": "public", "namespace": "gw", "sectionName": "https"})
    return d


def test_httproute_has_the_router_weights_and_rules():
    objs = rendered(with_provider(ab_test(), "gatewayAPI"), served={"HTTPRoute": "v1", "VirtualService": "v1"})
    assert ("VirtualService", "churn") not in objs
    route = objs["HTTPRoute", "churn"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gw", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["churn.example.com"]
    rules = route["spec"]["rules"]
    assert rules[0]["matches"] == [{"headers": [{"type": "Exact", "name": "x-variant", "value": "canary"}]}]
    assert rules[0]["backendRefs"] == [{"name": "churn-canary", "port": 8080}]
    assert rules[1]["matches"][0]["headers"][0]["type"] == "RegularExpression"
    split = {b["name"]: b["weight"] for b in rules[-1]["backendRefs"]}
    assert split == {"churn-stable": 60, "churn-canary": 40} == {f"churn-{k}": v for k, v in router_config(objs).weights.items()}


def test_virtualservice_has_the_router_weights_and_mirror():
    d = with_provider(no_strategy(strategy={"shadow": {"variant": "canary", "fraction": 0.2}}), "istio")
    objs = rendered(d, served={"HTTPRoute": "v1", "VirtualService": "v1beta1"})
    assert ("HTTPRoute", "churn") not in objs
    vs = objs["VirtualService", "churn"]
    assert vs["apiVersion"] == "networking.istio.io/v1beta1"
    assert vs["spec"]["hosts"] == ["churn.example.com"] and vs["spec"]["gateways"] == ["gw/public"]
    (route,) = vs["spec"]["http"]
    assert {r["destination"]["host"]: r["weight"] for r in route["route"]} == {
        "churn-stable.ns.svc.cluster.local": 100, "churn-canary.ns.svc.cluster.local": 0}
    assert route["mirror"]["host"] == "churn-canary.ns.svc.cluster.local"
    assert route["mirrorPercentage"] == {"value": pytest.approx(20.0)}


def test_route_is_not_rendered_without_its_crd():
    objs = rendered(with_provider(base(), "gatewayAPI"), served={})
    assert not any(k in ("HTTPRoute", "VirtualService") for k, _ in objs)


def test_spec_image_overrides_the_operator_default():
    d = base()
    d["spec"]["image"] = "registry.local/ondeck:dev"
    objs = rendered(d)
    images = {c["image"] for o in objs.values() if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.local/ondeck:dev"}


def test_rendering_does_not_mutate_and_is_deterministic():
    d = base()
    snapshot = copy.deepcopy(d)
    assert yaml.safe_dump(list(rendered(d).values())) == yaml.safe_dump(list(rendered(d).values()))
    assert d == snapshot


def test_install_bundle_grants_exactly_the_verbs_table():
    objs = {o["kind"]: o for o in install_objects()}
    assert objs["ClusterRole"]["rules"] == [dict(r) for r in RBAC_RULES]
    verbs = {v for r in RBAC_RULES for v in r["verbs"]}
    assert verbs <= {"get", "list", "watch", "create", "patch", "update", "delete"}
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in RBAC_RULES)
    assert not any("pods" in r["resources"] for r in RBAC_RULES)
    # Secrets: read one by name (the retrain webhook's signing key), never listed or watched.
    assert [r["verbs"] for r in RBAC_RULES if "secrets" in r["resources"]] == [["get"]]
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ondeck"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert objs["Namespace"]["metadata"]["name"] == "ondeck-system"


@pytest.mark.parametrize("outcome, weights, retired", [
    ("promoted", {"stable": 0, "canary": 100}, ["stable"]),
    ("rejected", None, ["canary"]),
])
def test_mesh_routes_stop_mirroring_a_decided_shadow(outcome, weights, retired):
    from ondeck import experiment as ex
    from ondeck.spec.traffic import experiment_plan, retired_variants

    d = with_provider(no_strategy(strategy={"shadow": {"variant": "canary", "fraction": 0.2, "promoteOn": {"minSamples": 10}}}), "istio")
    md = parse_manifest(d)
    experiment = {**ex.new_state(experiment_plan(md.spec), 0.0), "phase": "Healthy", "outcome": outcome,
                  "winner": "canary" if weights else None, "weights": weights, "retired": retired}
    ctx = Context(namespace="ns", uid="uid-1", image="img:1", weights=desired_weights(md.spec, None, experiment),
                  served={"VirtualService": "v1beta1", "HTTPRoute": "v1"},
                  retired=frozenset(retired_variants(md.spec, None, experiment)))
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(md, ctx)}
    (route,) = objs["VirtualService", "churn"]["spec"]["http"]
    assert "mirror" not in route and "mirrorPercentage" not in route
    assert router_config(objs).shadow is None  # the router agrees
    d = with_provider(no_strategy(strategy={"shadow": {"variant": "canary", "fraction": 0.2, "promoteOn": {"minSamples": 10}}}), "gatewayAPI")
    md = parse_manifest(d)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(md, ctx)}
    assert "filters" not in objs["HTTPRoute", "churn"]["spec"]["rules"][-1]
