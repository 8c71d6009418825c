"""What the controllers need to know of a variant's package: its reference profile and what it predicts.

Canary analysis needs the bins of each version's predictions and the drift monitor the reference
profile itself (``reference.json``); the analysis translation needs to know whether the model is a
classifier, and the staleness horizon when it was built (``ondeck.json``). The operator reads them
where it can reach the package:

- ``file://``: the directory itself (the operator's image carries the same packages as the servers');
- ``http(s)://``: the archive, fetched and checked against ``sha256`` as the init container does;
- ``pvc://``: not mounted in the operator's pod: :class:`PackageUnreadable`, which the controllers
  report (analysis inconclusive, drift unwatched) rather than guess.

Read once per (uri, sha256): a package at a URI does not change under a running deployment.
"""
from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ondeck.spec import model as m
from ondeck.spec.uri import parse_uri


class PackageUnreadable(Exception):
    """The operator cannot read this package; the message says why."""


@dataclass(frozen=True)
class PackageInfo:
    version: str
    reference: dict[str, Any]
    classifier: bool
    created: float | None  # build time (seconds since the epoch), for the staleness horizon


class Packages:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None], PackageInfo] = {}
        self._lock = threading.Lock()

    def get(self, variant: m.Variant) -> PackageInfo:
        key = (variant.uri, variant.sha256)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = _read(variant)
            with self._lock:
                self._cache[key] = cached
        return cached


def _read(variant: m.Variant) -> PackageInfo:
    uri = parse_uri(variant.uri)
    if uri.scheme == "file":
        return _from_dir(Path(uri.path), variant)
    if uri.fetched:
        from ondeck.operator.fetch import FetchError, fetch

        with tempfile.TemporaryDirectory(prefix="ondeck-package-") as tmp:
            try:
                return _from_dir(fetch(uri.url, variant.sha256 or "", Path(tmp), timeout=120), variant)
            except FetchError as exc:
                raise PackageUnreadable(str(exc)) from None
    raise PackageUnreadable(f"{variant.uri}: the operator does not mount PersistentVolumeClaims, so it cannot read "
                            "the package's reference profile; serve it from file:// or http(s)://")


def _from_dir(path: Path, variant: m.Variant) -> PackageInfo:
    try:
        meta = json.loads((path / "ondeck.json").read_text())
        reference = json.loads((path / "reference.json").read_text())
    except OSError:
        raise PackageUnreadable(f"{variant.uri}: no model package there (ondeck.json and reference.json)") from None
    except ValueError as exc:
        raise PackageUnreadable(f"{variant.uri}: unreadable package file: {exc}") from None
    if meta.get("version") != variant.version:
        raise PackageUnreadable(f"{variant.uri} is version {meta.get('version')!r}, the spec says {variant.version!r}")
    created = (meta.get("lineage") or {}).get("created")
    try:
        built = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else None
    except ValueError:
        built = None
    return PackageInfo(version=variant.version, reference=reference, classifier=meta.get("classes") is not None,
                       created=built)
