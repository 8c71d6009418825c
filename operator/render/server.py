"""A variant's Deployment (pods running ``ondeck serve``) and its Service."""
from __future__ import annotations

from typing import Any

from ondeck.operator.render.common import (GRPC_PORT, HTTP_PORT, Context, container_security, metadata, obj,
                                           pod_security, ports, scrape_annotations, server_labels, server_selector,
                                           service, variant_name)
from ondeck.spec import model as m
from ondeck.spec.uri import ModelURI, parse_uri

MODELS_DIR = "/models"
PAYLOAD_LOG_DIR = "/var/lib/ondeck/payload-log"
FETCH_TIMEOUT_SECONDS = 600


def render_server(md: m.ModelDeployment, variant: m.Variant, ctx: Context) -> list[dict[str, Any]]:
    name = variant_name(md, variant.name)
    labels = server_labels(md, variant)
    return [
        obj("apps/v1", "Deployment", metadata(md, ctx, name, labels), spec=_deployment_spec(md, variant, ctx)),
        service(md, ctx, name, labels, server_selector(md, variant)),
    ]


def _deployment_spec(md: m.ModelDeployment, variant: m.Variant, ctx: Context) -> dict[str, Any]:
    uri = parse_uri(variant.uri)  # the reconciler checked every URI before rendering
    model_path, volumes, mounts, init = _model_source(variant, uri, md.spec.image or ctx.image)
    serving = md.spec.serving
    args = ["serve", model_path, "--variant", variant.name, "--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT),
            "--max-batch-size", str(serving.max_batch_size),
            "--max-batch-delay-us", str(serving.max_batch_delay_microseconds),
            # readiness goes false first, so endpoints drop the pod before it stops answering
            "--shutdown-delay", "5"]
    volumes.append({"name": "tmp", "emptyDir": {}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if serving.payload_log.sample_rate > 0:
        args += ["--payload-log-dir", PAYLOAD_LOG_DIR, "--payload-log-fraction", str(serving.payload_log.sample_rate)]
        volumes.append({"name": "payload-log", "emptyDir": {}})
        mounts.append({"name": "payload-log", "mountPath": PAYLOAD_LOG_DIR})
    container = {
        "name": "server",
        "image": md.spec.image or ctx.image,
        "command": ["ondeck"],
        "args": args,
        "ports": ports(),
        "resources": variant.resources.model_dump(exclude_none=True),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=2),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        # loading a big model may take a while: liveness starts counting once this passes
        "startupProbe": _probe("/v2/health/live", period=2, failures=150),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": server_selector(md, variant)},
        "revisionHistoryLimit": 3,
        # never fewer ready pods than asked for while a new version rolls in
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": server_labels(md, variant), "annotations": scrape_annotations()},
            "spec": {
                "automountServiceAccountToken": False,  # servers never call the Kubernetes API
                "enableServiceLinks": False,
                "securityContext": pod_security(),
                "initContainers": init,
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if variant.name in ctx.retired:
        spec["replicas"] = 0  # a finished canary's loser: kept (a rollback or re-roll is quick), not run
    elif md.spec.autoscaling is None:
        spec["replicas"] = variant.replicas  # with autoscaling the HPA owns replicas
    if not init:
        del spec["template"]["spec"]["initContainers"]
    return spec


def _model_source(variant: m.Variant, uri: ModelURI, image: str) -> tuple[str, list, list, list]:
    """(path the server reads, volumes, server mounts, init containers) for a model URI."""
    if uri.scheme == "file":
        return uri.path, [], [], []
    path = f"{MODELS_DIR}/{variant.name}"
    if uri.scheme == "pvc":
        mount = {"name": "model", "mountPath": path, "readOnly": True}
        if uri.path:
            mount["subPath"] = uri.path
        return path, [{"name": "model", "persistentVolumeClaim": {"claimName": uri.claim, "readOnly": True}}], [mount], []
    fetch = {
        "name": "fetch-model",
        "image": image,
        "command": ["python", "-m", "ondeck.operator.fetch"],
        "args": ["--url", uri.url, "--sha256", variant.sha256, "--dest", path,
                 "--timeout", str(FETCH_TIMEOUT_SECONDS)],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "model", "mountPath": path}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    return (path, [{"name": "model", "emptyDir": {}}], [{"name": "model", "mountPath": path, "readOnly": True}],
            [fetch])


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 2}
