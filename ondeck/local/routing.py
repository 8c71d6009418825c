"""The router's file for a local run, applied at once.

The config itself comes from :func:`ondeck.spec.traffic.router_config` (the builder the operator's
ConfigMap uses too); it is written here and applied with ``POST /admin/reload`` (the router also
notices the file change itself within a second, so a failed reload request only delays the change).
"""
from __future__ import annotations

import urllib.request
from pathlib import Path

from ondeck.serving.router.config import RouterConfig


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
