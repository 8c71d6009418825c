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


def desired_weights(spec: m.ModelDeploymentSpec, rollout: dict[str, Any] | None = None,
                    experiment: dict[str, Any] | None = None) -> dict[str, int]:
    """Percent of live traffic per variant (every variant named; they add up to 100).

    ``rollout`` is the canary rollout controller's state (``status.rollout``, see
    :mod:`ondeck.rollout`); until it has one, a canary gets nothing and the stable variant all.
    ``experiment`` is the A/B or shadow controller's (``status.experiment``, see
    :mod:`ondeck.experiment`): once it promoted a variant, that variant takes everything.
    Shadow variants get 0 until then: they only see mirrored requests.
    """
    weights = {v.name: 0 for v in spec.variants}
    canary = spec.strategy.canary if spec.strategy else None
    promoted = _experiment_weights(spec, experiment)
    if promoted:
        weights.update(promoted)
    elif canary and rollout:
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


def retired_variants(spec: m.ModelDeploymentSpec, rollout: dict[str, Any] | None = None,
                     experiment: dict[str, Any] | None = None) -> set[str]:
    """Variants a finished canary or experiment left without traffic, to be scaled down: the old
    stable one once the canary is promoted, the canary once it is rolled back; the A/B loser once
    the winner is promoted; the old primary once a shadow is promoted, the shadow once rejected."""
    from ondeck.rollout import DEGRADED, HEALTHY

    plan = experiment_plan(spec)
    if plan is not None:
        from ondeck import experiment as ex

        return ex.retired(experiment) if ex.same_experiment(plan, experiment) else set()
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
    # A shadow stops being mirrored to once it is retired (rejected: no endpoints) or promoted (it
    # has live traffic now, and a shadow with a weight is not a shadow).
    if strategy and strategy.shadow and strategy.shadow.variant in names and not weights.get(strategy.shadow.variant):
        config["shadow"] = {"variant": strategy.shadow.variant, "fraction": strategy.shadow.fraction}
    return RouterConfig.from_dict(config)


def experiment_plan(spec: m.ModelDeploymentSpec) -> dict[str, Any] | None:
    """What :mod:`ondeck.experiment` decides for this spec, or None when there is nothing to decide
    (no abTest, or a shadow without ``promoteOn``).

    The control is the first variant (the one serving today); the treatment is the shadow, or the
    first other variant of an A/B test (further variants are served but not judged).
    """
    strategy = spec.strategy
    if strategy is None or not (strategy.ab_test or (strategy.shadow and strategy.shadow.promote_on)):
        return None
    control = stable_variant(spec)
    treatment = challenger(spec)
    if treatment is None:
        return None
    plan: dict[str, Any] = {"control": control.name, "controlVersion": control.version,
                            "treatment": treatment.name, "treatmentVersion": treatment.version}
    if strategy.ab_test:
        ab = strategy.ab_test
        policy: dict[str, Any] = {"min_samples": ab.min_samples}
        if ab.equivalence is not None:
            policy["equivalence"] = ab.equivalence
        plan.update(kind="abTest", metric=ab.success_metric, promoteWinner=ab.promote_winner,
                    interval=m.seconds(ab.interval), policy=policy)
    else:
        on = strategy.shadow.promote_on
        plan.update(kind="shadow", minAgreement=on.min_agreement, minSamples=on.min_samples,
                    interval=m.seconds(on.interval))
    return plan


def _experiment_weights(spec: m.ModelDeploymentSpec, experiment: dict[str, Any] | None) -> dict[str, int] | None:
    if not experiment:
        return None
    from ondeck import experiment as ex

    plan = experiment_plan(spec)
    return ex.weights(experiment) if plan is not None and ex.same_experiment(plan, experiment) else None


def background_analysis(canary: m.Canary) -> dict[str, Any] | None:
    """``strategy.canary.analysis`` as :func:`ondeck.rollout.tick`'s ``background``, or None."""
    if canary.analysis is None:
        return None
    return {"analysis": {"templates": [{"templateName": t.template_name} for t in canary.analysis.templates]},
            "startingStep": canary.analysis.starting_step}


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
