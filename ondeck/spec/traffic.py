"""Which variant is stable and what share of traffic each variant gets: what the spec means.

Shared by the operator (router ConfigMap, HTTPRoute, VirtualService) and ``ondeck run`` (router
file), so both split traffic the same way for the same manifest.
"""
from __future__ import annotations

from typing import Any, Callable

from ondeck.spec import model as m


def stable_variant(spec: m.ModelDeploymentSpec) -> m.Variant:
    """strategy.canary.stableVariant if set, else the first variant."""
    canary = spec.strategy.canary if spec.strategy else None
    name = canary.stable_variant if canary and canary.stable_variant else spec.variants[0].name
    return variant(spec, name)


def challenger(spec: m.ModelDeploymentSpec) -> m.Variant | None:
    """The variant set against the stable one: the canary, the shadow, or else the first other variant."""
    strategy = spec.strategy
    if strategy and strategy.canary:
        return variant(spec, strategy.canary.canary_variant)
    if strategy and strategy.shadow:
        return variant(spec, strategy.shadow.variant)
    return next((v for v in spec.variants if v.name != stable_variant(spec).name), None)


def variant(spec: m.ModelDeploymentSpec, name: str) -> m.Variant:
    return next(v for v in spec.variants if v.name == name)


def desired_weights(spec: m.ModelDeploymentSpec, rollout: dict[str, Any] | None = None) -> dict[str, int]:
    """Percent of live traffic per variant (every variant named; they add up to 100).

    ``rollout`` is the canary rollout controller's state (``status.rollout``, see
    :mod:`ondeck.rollout`); until it has one, a canary gets nothing and the stable variant all.
    Shadow variants get 0: they only see mirrored requests.
    """
    weights = {v.name: 0 for v in spec.variants}
    canary = spec.strategy.canary if spec.strategy else None
    if canary and rollout:
        from ondeck.rollout import weights as rollout_weights

        weights.update(rollout_weights(rollout))
    elif spec.traffic.weights and not canary:
        weights.update(spec.traffic.weights)
    elif spec.strategy and spec.strategy.ab_test:
        share, extra = divmod(100, len(spec.variants))
        weights = {v.name: share + (i < extra) for i, v in enumerate(spec.variants)}
    else:
        weights[stable_variant(spec).name] = 100
    return weights


def retired_variants(spec: m.ModelDeploymentSpec, rollout: dict[str, Any] | None = None) -> set[str]:
    """Variants a finished canary left without traffic, to be scaled down: the old stable one once
    the canary is promoted, the canary once it is rolled back."""
    from ondeck.rollout import DEGRADED, HEALTHY

    canary = spec.strategy.canary if spec.strategy else None
    if not canary or not rollout or rollout.get("canaryVariant") != canary.canary_variant:
        return set()
    if rollout["phase"] == HEALTHY:
        return {rollout["stableVariant"]}
    if rollout["phase"] == DEGRADED:
        return {rollout["canaryVariant"]}
    return set()


Endpoints = Callable[[str], "list[dict[str, str]]"]
"""Where a variant is served: ``[{"http": "host:port", "grpc": "host:port"}, ...]``, empty when it is
not (a stopped or scaled-down variant). The operator answers with Service addresses, ``ondeck run``
with its processes' loopback ports."""


def router_config(md: m.ModelDeployment, weights: dict[str, int], endpoints: Endpoints):
    """The router's config (:class:`ondeck.serving.router.config.RouterConfig`) for ``md``: the variants
    that have endpoints, in manifest order, with ``weights`` and the strategy's rules and shadow.
    The one builder behind the operator's ConfigMap and ``ondeck run``'s router file."""
    from ondeck.serving.router.config import RouterConfig

    served = {v.name: endpoints(v.name) for v in md.spec.variants}
    running = [v for v in md.spec.variants if served[v.name]]
    names = {v.name for v in running}
    config: dict[str, Any] = {
        "model": md.model_name,
        "variants": [{"name": v.name, "version": v.version, "weight": int(weights.get(v.name, 0)),
                      "endpoints": served[v.name]} for v in running],
    }
    stable = stable_variant(md.spec).name
    if stable in names and len(running) > 1:
        config["fallback"] = stable
    strategy = md.spec.strategy
    if strategy and strategy.ab_test:
        config["rules"] = [r.model_dump(exclude_none=True) for r in strategy.ab_test.rules if r.variant in names]
        if strategy.ab_test.sticky:
            config["sticky"] = strategy.ab_test.sticky.model_dump(exclude_none=True)
    if strategy and strategy.shadow and strategy.shadow.variant in names:
        config["shadow"] = {"variant": strategy.shadow.variant, "fraction": strategy.shadow.fraction}
    return RouterConfig.from_dict(config)


def rollout_steps(canary: m.Canary) -> list[dict[str, Any]]:
    """The canary steps as :func:`ondeck.rollout.tick` takes them: pause durations in seconds."""
    steps: list[dict[str, Any]] = []
    for step in canary.steps:
        if step.set_weight is not None:
            steps.append({"setWeight": step.set_weight})
        elif step.pause is not None:
            steps.append({"pause": {"duration": m.seconds(step.pause.duration)} if step.pause.duration else {}})
        else:
            steps.append({"analysis": {"templates": [{"templateName": t.template_name} for t in step.analysis.templates]}})
    return steps
