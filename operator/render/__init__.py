"""Pure rendering: a ModelDeployment (+ a Context) in, the Kubernetes objects that serve it out.

No API calls here, so every object the operator would create is unit-tested without a cluster.
"""
from __future__ import annotations

from typing import Any

from ondeck.operator.kube import HTTPROUTE, SERVICEMONITOR, VIRTUALSERVICE
from ondeck.operator.render.autoscaling import render_hpa
from ondeck.operator.render.common import Context
from ondeck.operator.render.monitoring import render_servicemonitor
from ondeck.operator.render.router import render_router
from ondeck.operator.render.routes import render_httproute, render_virtualservice
from ondeck.operator.render.server import render_server
from ondeck.spec import model as m

# traffic.provider -> the kind that carries it (the router is always rendered)
PROVIDER_KINDS = {"gatewayAPI": HTTPROUTE, "istio": VIRTUALSERVICE}


def render(md: m.ModelDeployment, ctx: Context) -> list[dict[str, Any]]:
    """Every object for ``md``. Optional kinds appear only if ``ctx.served`` says the cluster has them."""
    objects: list[dict[str, Any]] = []
    for variant in md.spec.variants:
        objects += render_server(md, variant, ctx)
        if md.spec.autoscaling and variant.name not in ctx.retired:
            objects.append(render_hpa(md, variant, ctx))
    objects += render_router(md, ctx)
    if SERVICEMONITOR.kind in ctx.served:
        objects.append(render_servicemonitor(md, ctx))
    route = PROVIDER_KINDS.get(md.spec.traffic.provider)
    if route is HTTPROUTE and route.kind in ctx.served:
        objects.append(render_httproute(md, ctx))
    if route is VIRTUALSERVICE and route.kind in ctx.served:
        objects.append(render_virtualservice(md, ctx))
    return objects


__all__ = ["Context", "PROVIDER_KINDS", "render"]
