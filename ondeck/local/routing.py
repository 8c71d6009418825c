"""The router's config for a local run: the running variants, their weights, the manifest's rules.

Written through :class:`ondeck.serving.router.config.RouterConfig`, the contract the router reads,
then applied at once with ``POST /admin/reload`` (the router also notices the file change itself
within a second, so a failed reload request only delays the change).
"""
from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from ondeck.serving.router.config import RouterConfig
from ondeck.spec import model as m


def router_config(md: m.ModelDeployment, weights: dict[str, int], endpoints: dict[str, list[dict[str, str]]],
                  stable: str) -> RouterConfig:
    """Variants with endpoints (a stopped variant has none and is left out), in manifest order."""
    versions = {v.name: v.version for v in md.spec.variants}
    running = [v.name for v in md.spec.variants if endpoints.get(v.name)]
    config: dict[str, Any] = {
        "model": md.model_name,
        "variants": [{"name": name, "version": versions[name], "weight": int(weights.get(name, 0)),
                      "endpoints": endpoints[name]} for name in running],
    }
    if stable in running and len(running) > 1:
        config["fallback"] = stable
    strategy = md.spec.strategy
    if strategy and strategy.ab_test:
        config["rules"] = [r.model_dump(exclude_none=True) for r in strategy.ab_test.rules if r.variant in running]
        if strategy.ab_test.sticky:
            config["sticky"] = strategy.ab_test.sticky.model_dump(exclude_none=True)
    if strategy and strategy.shadow and strategy.shadow.variant in running:
        config["shadow"] = {"variant": strategy.shadow.variant, "fraction": strategy.shadow.fraction}
    return RouterConfig.from_dict(config)


def apply(config: RouterConfig, path: Path, router_address: str | None) -> bool:
    """Write ``path``; ask the router to reload now. Returns whether the router confirmed."""
    config.save(path)
    if router_address is None:
        return False
    req = urllib.request.Request(f"http://{router_address}/admin/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False
