"""Names, labels, ownership and pod hardening shared by every rendered object.

Naming: a variant's Deployment, Service and HPA are ``<md>-<variant>``; the router's Deployment and
Service are ``<md>`` (the address clients use), its ConfigMap ``<md>-router``. The spec bounds both
parts so every name is a valid DNS label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ondeck.operator.kube import FIELD_MANAGER
from ondeck.spec import model as m

HTTP_PORT = 8080
GRPC_PORT = 9000
RUN_AS = 65532  # the conventional "nonroot" uid/gid of distroless-style images


@dataclass(frozen=True)
class Context:
    """What rendering needs besides the spec: where, who owns it, and what the cluster offers."""

    namespace: str
    uid: str
    image: str
    weights: dict[str, int]  # from ondeck.spec.traffic.desired_weights
    served: dict[str, str] = field(default_factory=dict)  # optional kind -> the API version the cluster serves
    retired: frozenset[str] = frozenset()  # variants scaled to zero (ondeck.spec.traffic.retired_variants)
    cluster_domain: str = "cluster.local"


def variant_name(md: m.ModelDeployment, variant: str) -> str:
    return f"{md.name}-{variant}"


def router_name(md: m.ModelDeployment) -> str:
    return md.name


def router_config_name(md: m.ModelDeployment) -> str:
    return f"{md.name}-router"


def service_host(md: m.ModelDeployment, variant: str, ctx: Context) -> str:
    return f"{variant_name(md, variant)}.{ctx.namespace}.svc.{ctx.cluster_domain}"


def instance_labels(md: m.ModelDeployment) -> dict[str, str]:
    """The labels that find everything one ModelDeployment owns (pruning selects on them)."""
    return {"app.kubernetes.io/name": "ondeck", "app.kubernetes.io/instance": md.name,
            "app.kubernetes.io/managed-by": FIELD_MANAGER}


def server_selector(md: m.ModelDeployment, variant: m.Variant) -> dict[str, str]:
    # Immutable once a Deployment exists: no version here, so a new version is a rolling update.
    return {"app.kubernetes.io/instance": md.name, "app.kubernetes.io/component": "server", "ondeck.io/variant": variant.name}


def server_labels(md: m.ModelDeployment, variant: m.Variant) -> dict[str, str]:
    return {**instance_labels(md), **server_selector(md, variant), "ondeck.io/model": md.model_name,
            "ondeck.io/version": variant.version}


def router_selector(md: m.ModelDeployment) -> dict[str, str]:
    return {"app.kubernetes.io/instance": md.name, "app.kubernetes.io/component": "router"}


def router_labels(md: m.ModelDeployment) -> dict[str, str]:
    return {**instance_labels(md), **router_selector(md), "ondeck.io/model": md.model_name}


def owner_reference(md: m.ModelDeployment, ctx: Context) -> dict[str, Any]:
    return {"apiVersion": f"{m.API_GROUP}/{m.API_VERSION}", "kind": m.KIND, "name": md.name, "uid": ctx.uid,
            "controller": True, "blockOwnerDeletion": True}


def metadata(md: m.ModelDeployment, ctx: Context, name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ctx.namespace, "labels": labels, "ownerReferences": [owner_reference(md, ctx)],
            **extra}


def obj(api_version: str, kind: str, meta: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}}


def ports() -> list[dict[str, Any]]:
    return [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}]


def service(md: m.ModelDeployment, ctx: Context, name: str, labels: dict[str, str], selector: dict[str, str]) -> dict[str, Any]:
    return obj("v1", "Service", metadata(md, ctx, name, labels), spec={
        "selector": selector,
        "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                  {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                   "appProtocol": "kubernetes.io/h2c"}],
    })


def scrape_annotations() -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT), "prometheus.io/path": "/metrics"}
