"""A HorizontalPodAutoscaler per variant when spec.autoscaling is set."""
from __future__ import annotations

from typing import Any

from ondeck.operator.render.common import Context, metadata, obj, server_labels, variant_name
from ondeck.spec import model as m


def render_hpa(md: m.ModelDeployment, variant: m.Variant, ctx: Context) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    name = variant_name(md, variant.name)
    return obj("autoscaling/v2", "HorizontalPodAutoscaler", metadata(md, ctx, name, server_labels(md, variant)), spec={
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": scaling.target_cpu_utilization_percentage}}}],
    })
