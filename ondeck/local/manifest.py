"""A ModelDeployment manifest, as ``ondeck run`` runs it on this machine.

Admission is :mod:`ondeck.spec`'s (a manifest the cluster would reject fails here with the same
message). On top of that, what only a local run needs: every variant's ``uri`` must be a
``file://`` package on this machine whose name and version match the manifest, and features the
local runtime does not carry out are refused up front rather than silently skipped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ondeck.errors import UserError
from ondeck.spec.analysis import CanaryAnalyses
from ondeck.monitor import MonitorSpec
from ondeck.spec import ModelDeployment, load_manifest
from ondeck.spec.model import AnalysisTemplate
from ondeck.spec.templates import TemplateMissing, step_templates
from ondeck.spec.traffic import background_analysis, rollout_steps, stable_variant
from ondeck.spec.uri import parse_uri


@dataclass(frozen=True)
class Package:
    """A variant's package on disk: where, what it is, and its reference profile."""

    variant: str
    version: str
    path: Path
    replicas: int
    reference: dict[str, Any]
    created: float | None
    classifier: bool


@dataclass(frozen=True)
class LocalDeployment:
    md: ModelDeployment
    source: Path
    packages: dict[str, Package]  # by variant name, in manifest order
    stable: str
    canary: str | None
    steps: list[dict[str, Any]]
    analyses: CanaryAnalyses | None  # with a canary strategy only
    background: dict[str, Any] | None  # strategy.canary.analysis, as ondeck.rollout.tick takes it
    spec_hash: str

    @property
    def name(self) -> str:
        return self.md.name

    @property
    def model(self) -> str:
        return self.md.model_name

    def monitor_spec(self, variant: str) -> MonitorSpec:
        pkg = self.packages[variant]
        return MonitorSpec.from_spec(self.md.spec, model=self.model, version=pkg.version, created=pkg.created)


def load(path: str | Path, cluster_templates: dict[str, AnalysisTemplate] | None = None) -> LocalDeployment:
    """Parse and check ``path``; :class:`ondeck.spec.SpecError` or :class:`UserError` names the problem.

    ``cluster_templates``: what ``clusterScope: true`` references resolve to (``ondeck run
    --analysis-templates FILE``, the file the operator's flag of that name takes). A missing one stops
    ``ondeck run`` before anything starts, where the operator pauses the rollout with the same reason.
    """
    source = Path(path).resolve()
    md = load_manifest(path)
    spec = md.spec
    if spec.autoscaling is not None:
        raise UserError(f"{path}: spec.autoscaling needs a cluster (a HorizontalPodAutoscaler); "
                        "ondeck run serves spec.variants[].replicas processes instead: remove autoscaling")
    packages = {}
    for i, v in enumerate(spec.variants):
        packages[v.name] = _package(md, i, v, path)
    stable = stable_variant(spec).name
    canary = spec.strategy.canary if spec.strategy else None
    analyses = None
    if canary is not None:
        try:
            templates = step_templates(spec, cluster_templates or {})
        except TemplateMissing as exc:
            hint = "" if cluster_templates else " (ondeck run --analysis-templates FILE gives cluster-wide templates)"
            raise UserError(f"{path}: spec.strategy.canary.steps: {exc}{hint}") from None
        analyses = CanaryAnalyses(templates, model=md.model_name, classifier=packages[canary.canary_variant].classifier)
    spec_json = json.dumps(md.model_dump(mode="json", by_alias=True, exclude={"status"}), sort_keys=True)
    return LocalDeployment(
        md=md, source=source, packages=packages, stable=stable, canary=canary.canary_variant if canary else None,
        steps=rollout_steps(canary) if canary else [], analyses=analyses,
        background=background_analysis(canary) if canary else None,
        spec_hash=hashlib.sha256(spec_json.encode()).hexdigest()[:16],
    )


def _package(md: ModelDeployment, index: int, v: Any, source: str | Path) -> Package:
    where = f"{source}: spec.variants[{index}]"
    if v.replicas < 1:
        raise UserError(f"{where}.replicas: 0 would serve nothing; ondeck run starts at least one process per variant")
    uri = parse_uri(v.uri)
    if uri.scheme != "file":
        raise UserError(f"{where}.uri: {v.uri!r} needs a cluster; ondeck run serves packages on this machine: "
                        "use file:///absolute/path/to/package")
    path = Path(uri.path)
    meta_path = path / "ondeck.json"
    try:
        meta = json.loads(meta_path.read_text())
        reference = json.loads((path / "reference.json").read_text())
    except OSError:
        raise UserError(f"{where}.uri: no model package at {path} (expected ondeck.json and reference.json there; "
                        "`ondeck package` writes one)") from None
    except ValueError as exc:
        raise UserError(f"{where}.uri: {meta_path.parent} has an unreadable package file: {exc}") from None
    if meta.get("name") != md.model_name:
        raise UserError(f"{where}.uri: the package at {path} is model {meta.get('name')!r}, but this deployment "
                        f"serves model {md.model_name!r} (spec.model.name, else metadata.name)")
    if meta.get("version") != v.version:
        raise UserError(f"{where}.version: {v.version!r}, but the package at {path} is version {meta.get('version')!r}")
    created = (meta.get("lineage") or {}).get("created")
    return Package(variant=v.name, version=v.version, path=path, replicas=v.replicas, reference=reference,
                   created=_timestamp(created), classifier=meta.get("classes") is not None)


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
