"""Gateway API HTTPRoute and Istio VirtualService: the same split as the router, done by the mesh.

Both send header-rule matches to their variant, split the rest by the router's weights, and mirror
a fraction to a shadow variant. Sticky users need the router (or an Istio DestinationRule with
consistent hashing, which ondeck does not render).
"""
from __future__ import annotations

from typing import Any

from ondeck.operator.kube import HTTPROUTE, VIRTUALSERVICE
from ondeck.operator.render.common import HTTP_PORT, Context, instance_labels, metadata, obj, router_name, service_host, variant_name
from ondeck.spec import model as m


def render_httproute(md: m.ModelDeployment, ctx: Context) -> dict[str, Any]:
    traffic = md.spec.traffic
    parent = {"name": traffic.gateway.name}
    if traffic.gateway.namespace:
        parent["namespace"] = traffic.gateway.namespace
    if traffic.gateway.section_name:
        parent["sectionName"] = traffic.gateway.section_name

    def backend(variant: str, weight: int | None = None) -> dict[str, Any]:
        ref = {"name": variant_name(md, variant), "port": HTTP_PORT}
        return ref if weight is None else {**ref, "weight": weight}

    rules = [{"matches": [{"headers": [{"type": "Exact" if r.exact is not None else "RegularExpression",
                                        "name": r.header, "value": r.exact if r.exact is not None else r.regex}]}],
              "backendRefs": [backend(r.variant)]} for r in _header_rules(md)]
    split: dict[str, Any] = {"backendRefs": [backend(name, weight) for name, weight in ctx.weights.items()]}
    shadow = _mirrored(md, ctx)
    if shadow:
        split["filters"] = [{"type": "RequestMirror", "requestMirror": {
            "backendRef": backend(shadow.variant), "percent": round(shadow.fraction * 100)}}]
    rules.append(split)
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": rules}
    if traffic.host:
        spec["hostnames"] = [traffic.host]
    version = ctx.served[HTTPROUTE.kind]
    return obj(f"{HTTPROUTE.group}/{version}", HTTPROUTE.kind, metadata(md, ctx, md.name, instance_labels(md)), spec=spec)


def render_virtualservice(md: m.ModelDeployment, ctx: Context) -> dict[str, Any]:
    traffic = md.spec.traffic

    def destination(variant: str) -> dict[str, Any]:
        return {"host": service_host(md, variant, ctx), "port": {"number": HTTP_PORT}}

    routes = [{"match": [{"headers": {r.header: {"exact": r.exact} if r.exact is not None else {"regex": r.regex}}}],
               "route": [{"destination": destination(r.variant)}]} for r in _header_rules(md)]
    split: dict[str, Any] = {"route": [{"destination": destination(name), "weight": weight}
                                       for name, weight in ctx.weights.items()]}
    shadow = _mirrored(md, ctx)
    if shadow:
        split["mirror"] = destination(shadow.variant)
        split["mirrorPercentage"] = {"value": shadow.fraction * 100}
    routes.append(split)
    # Without a host of its own the route takes over the router's in-mesh name.
    spec: dict[str, Any] = {"hosts": [traffic.host or f"{router_name(md)}.{ctx.namespace}.svc.{ctx.cluster_domain}"],
                            "http": routes}
    if traffic.gateway:
        spec["gateways"] = [f"{traffic.gateway.namespace or ctx.namespace}/{traffic.gateway.name}"]
    version = ctx.served[VIRTUALSERVICE.kind]
    return obj(f"{VIRTUALSERVICE.group}/{version}", VIRTUALSERVICE.kind, metadata(md, ctx, md.name, instance_labels(md)),
               spec=spec)


def _header_rules(md: m.ModelDeployment) -> list[m.HeaderRule]:
    strategy = md.spec.strategy
    return strategy.ab_test.rules if strategy and strategy.ab_test else []


def _mirrored(md: m.ModelDeployment, ctx: Context) -> m.Shadow | None:
    """The shadow to mirror to, as the router decides it (ondeck.spec.traffic.router_config): none once
    the shadow was promoted (it has live weight) or rejected (retired, scaled to zero)."""
    shadow = md.spec.strategy.shadow if md.spec.strategy else None
    if shadow is None or ctx.weights.get(shadow.variant) or shadow.variant in ctx.retired:
        return None
    return shadow
