"""Which analysis template a canary step's ``templateName`` means: the spec's own, or a cluster-wide one.

Shared by the operator and ``ondeck run``, so one manifest means the same templates on both.

Argo Rollouts' rule: a reference names a template of the ModelDeployment's own
``spec.analysis.templates``, unless it says ``clusterScope: true``; then it names one of the
cluster-wide templates, and only those (a local template of the same name does not stand in for a
missing cluster one). Admission (:mod:`ondeck.spec.rules`) checks the local references; the
cluster-wide set is only known where the manifest runs: the operator's ``--analysis-templates`` file
(the chart's ``defaultAnalysis``), ``ondeck run --analysis-templates`` locally. A file of them is
shaped like ``spec.analysis``.
"""
from __future__ import annotations

from pathlib import Path

from ondeck.errors import UserError
from ondeck.spec import model as m


class TemplateMissing(UserError):
    """A step names a template that is not there; the message says which and where it was looked for."""


def load(path: str | Path, flag: str = "--analysis-templates") -> dict[str, m.AnalysisTemplate]:
    """Cluster-wide templates from a YAML file shaped like ``spec.analysis``; UserError names the problem."""
    import yaml
    from pydantic import ValidationError

    try:
        with open(path) as f:
            analysis = m.Analysis.model_validate(yaml.safe_load(f))
    except OSError as exc:
        raise UserError(f"{flag}: cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise UserError(f"{flag}: {path} is not a valid spec.analysis: {exc}") from None
    return {t.name: t for t in analysis.templates}


def step_templates(spec: m.ModelDeploymentSpec, cluster: dict[str, m.AnalysisTemplate]) -> dict[str, m.AnalysisTemplate]:
    """The templates the canary's analysis steps and its background analysis name, by ``templateName``.

    Raises :class:`TemplateMissing` for a clusterScope name the cluster set lacks, and for a name
    used both with and without clusterScope (steps and measurements know templates by name only, so
    the two could not be told apart).
    """
    canary = spec.strategy.canary if spec.strategy else None
    refs = [r for s in (canary.steps if canary else ()) if s.analysis for r in s.analysis.templates]
    refs += canary.analysis.templates if canary and canary.analysis else []
    local = {t.name: t for t in spec.analysis.templates} if spec.analysis else {}
    scoped = {r.template_name for r in refs if r.cluster_scope}
    both = scoped & {r.template_name for r in refs if not r.cluster_scope}
    if both:
        raise TemplateMissing(f"analysis template {', '.join(sorted(both))} is named both with and without "
                              "clusterScope: give the local or the cluster-wide one another name")
    missing = sorted(scoped - set(cluster))
    if missing:
        have = f"there are {', '.join(sorted(cluster))}" if cluster else "there are none"
        raise TemplateMissing(f"no cluster-wide analysis template named {', '.join(missing)} (clusterScope: true; {have})")
    unknown = sorted({r.template_name for r in refs if not r.cluster_scope} - set(local))
    if unknown:  # admission rejects this; a manifest that skipped it still gets a clear answer
        raise TemplateMissing(f"no analysis template named {', '.join(unknown)} in spec.analysis.templates")
    return {r.template_name: cluster[r.template_name] if r.cluster_scope else local[r.template_name] for r in refs}
