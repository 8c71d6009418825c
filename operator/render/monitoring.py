"""A prometheus-operator ServiceMonitor scraping the servers and the router, when that CRD exists."""
from __future__ import annotations

from typing import Any

from ondeck.operator.kube import SERVICEMONITOR
from ondeck.operator.render.common import Context, instance_labels, metadata, obj
from ondeck.spec import model as m


def render_servicemonitor(md: m.ModelDeployment, ctx: Context) -> dict[str, Any]:
    version = ctx.served[SERVICEMONITOR.kind]
    return obj(f"{SERVICEMONITOR.group}/{version}", SERVICEMONITOR.kind, metadata(md, ctx, md.name, instance_labels(md)), spec={
        "selector": {"matchLabels": instance_labels(md)},  # the variants' and the router's Services
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
    })
