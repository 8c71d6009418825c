"""The router: its config (a ConfigMap the router reloads on change), Deployment and Service.

The config is :func:`ondeck.spec.traffic.router_config` (the builder ``ondeck run`` uses too) with
the variants' Service addresses, written through ``RouterConfig.to_yaml``, so whatever the operator
renders is a config the router accepts.
"""
from __future__ import annotations

from typing import Any

from ondeck.operator.render.common import (GRPC_PORT, HTTP_PORT, Context, container_security, metadata, obj,
                                           pod_security, ports, router_config_name, router_labels, router_name,
                                           router_selector, scrape_annotations, service, service_host)
from ondeck.serving.router.config import RouterConfig
from ondeck.spec import model as m
from ondeck.spec.traffic import router_config as shared_router_config

CONFIG_DIR = "/etc/ondeck"
CONFIG_FILE = "router.yaml"


def router_config(md: m.ModelDeployment, ctx: Context) -> RouterConfig:
    """Every variant but the scaled-down ones, at its Service's address."""
    def endpoints(variant: str) -> list[dict[str, str]]:
        if variant in ctx.retired:
            return []
        host = service_host(md, variant, ctx)
        return [{"http": f"{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}]

    return shared_router_config(md, ctx.weights, endpoints)


def render_router(md: m.ModelDeployment, ctx: Context) -> list[dict[str, Any]]:
    config_yaml = router_config(md, ctx).to_yaml()
    labels = router_labels(md)
    configmap = obj("v1", "ConfigMap", metadata(md, ctx, router_config_name(md), labels), data={CONFIG_FILE: config_yaml})
    container = {
        "name": "router",
        "image": md.spec.image or ctx.image,
        "command": ["ondeck"],
        "args": ["route", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--http-port", str(HTTP_PORT),
                 "--grpc-port", str(GRPC_PORT)],
        "ports": ports(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2},
        "securityContext": container_security(),
        # No subPath: the kubelet updates a mounted ConfigMap in place and the router reloads it,
        # so weight changes need no restart.
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    deployment = obj("apps/v1", "Deployment", metadata(md, ctx, router_name(md), labels), spec={
        "replicas": md.spec.traffic.router_replicas,
        "selector": {"matchLabels": router_selector(md)},
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": router_labels(md), "annotations": scrape_annotations()},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security(),
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": router_config_name(md)}},
                            {"name": "tmp", "emptyDir": {}}],
            },
        },
    })
    return [configmap, deployment, service(md, ctx, router_name(md), labels, router_selector(md))]
