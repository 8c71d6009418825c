"""Rules the schema alone cannot say, each written once as CEL and once as Python.

The CEL expression goes into the CRD (``x-kubernetes-validations``), so the apiserver rejects a bad
manifest; the Python predicate runs in :func:`ondeck.spec.parse_manifest`, so ``ondeck run``
rejects the same manifest with the same message. Keeping both in one row is what keeps them in
step; ``tests/operator/test_cel_parity.py`` feeds bad manifests to both and compares the messages.

Each rule sits on one object of the schema (``on``), sees it as ``self``, and reports its
violation at ``field`` (a path relative to that object, the CEL ``fieldPath``). The CEL side may
rely on the schema's defaults having been applied (the apiserver defaults before it validates),
exactly as the Python side sees pydantic's defaults.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ondeck.spec import model as m


@dataclass(frozen=True)
class Rule:
    on: type
    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None  # e.g. ".traffic.weights"; None reports at the object itself

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = self.field
        return out


def _names(spec: m.ModelDeploymentSpec) -> set[str]:
    return {v.name for v in spec.variants}


def _unique(items: list[Any]) -> bool:
    names = [i.name for i in items]
    return len(set(names)) == len(names)


def _stable_name(spec: m.ModelDeploymentSpec) -> str:
    canary = spec.strategy.canary if spec.strategy else None
    return canary.stable_variant if canary and canary.stable_variant else spec.variants[0].name


def _canary(spec: m.ModelDeploymentSpec) -> m.Canary | None:
    return spec.strategy.canary if spec.strategy else None


def _templates(spec: m.ModelDeploymentSpec) -> set[str]:
    return {t.name for t in spec.analysis.templates} if spec.analysis else set()


def _refs_known(refs: list[m.TemplateRef], spec: m.ModelDeploymentSpec) -> bool:
    """Refs to the spec's own templates name one; clusterScope refs are the operator's to resolve."""
    return all(r.cluster_scope or r.template_name in _templates(spec) for r in refs)


def _count_set(*values: Any) -> int:
    return sum(v is not None for v in values)


_HAS_CANARY = "!has(self.strategy) || !has(self.strategy.canary) || "
_TEMPLATE_KNOWN = ("(has(t.clusterScope) && t.clusterScope) || "
                   "(has(self.analysis) && self.analysis.templates.exists(a, a.name == t.templateName))")

RULES: tuple[Rule, ...] = (
    Rule(m.ModelDeployment,
         f"self.metadata.name.size() <= {m.MAX_NAME} && self.metadata.name.matches('{m.DNS_LABEL}')",
         f"name must be a DNS label of at most {m.MAX_NAME} characters starting with a letter "
         "(ondeck names the objects it creates <name>-<variant>)",
         lambda md: len(md.metadata.name) <= m.MAX_NAME and re.search(m.DNS_LABEL, md.metadata.name) is not None,
         ".metadata"),
    # --- spec: names that must refer to something ---------------------------------------------
    Rule(m.ModelDeploymentSpec,
         "self.variants.all(v, self.variants.exists_one(w, w.name == v.name))",
         "variant names must be unique",
         lambda s: _unique(s.variants), ".variants"),
    Rule(m.ModelDeploymentSpec,
         "!has(self.traffic.weights) || self.traffic.weights.all(k, self.variants.exists(v, v.name == k))",
         "may only name variants listed in spec.variants",
         lambda s: s.traffic.weights is None or set(s.traffic.weights) <= _names(s), ".traffic.weights"),
    Rule(m.ModelDeploymentSpec,
         _HAS_CANARY + "!has(self.traffic.weights)",
         "cannot be set together with strategy.canary: the canary steps set the weights",
         lambda s: _canary(s) is None or s.traffic.weights is None, ".traffic.weights"),
    Rule(m.ModelDeploymentSpec,
         _HAS_CANARY + "self.variants.exists(v, v.name == self.strategy.canary.canaryVariant)",
         "must name one of spec.variants",
         lambda s: _canary(s) is None or s.strategy.canary.canary_variant in _names(s),
         ".strategy.canary.canaryVariant"),
    Rule(m.ModelDeploymentSpec,
         _HAS_CANARY + "!has(self.strategy.canary.stableVariant) || "
         "self.variants.exists(v, v.name == self.strategy.canary.stableVariant)",
         "must name one of spec.variants",
         lambda s: _canary(s) is None or s.strategy.canary.stable_variant in {None} | _names(s),
         ".strategy.canary.stableVariant"),
    Rule(m.ModelDeploymentSpec,
         _HAS_CANARY + "self.variants.size() == 0 || self.strategy.canary.canaryVariant != "
         "(has(self.strategy.canary.stableVariant) ? self.strategy.canary.stableVariant : self.variants[0].name)",
         "must differ from the stable variant (strategy.canary.stableVariant, or else the first variant)",
         lambda s: _canary(s) is None or s.strategy.canary.canary_variant != _stable_name(s),
         ".strategy.canary.canaryVariant"),
    Rule(m.ModelDeploymentSpec,
         _HAS_CANARY + f"self.strategy.canary.steps.all(s, !has(s.analysis) || s.analysis.templates.all(t, {_TEMPLATE_KNOWN}))",
         "every analysis step's templateName must name a template in spec.analysis.templates "
         "(or set clusterScope: true to use a cluster-wide template)",
         lambda s: _canary(s) is None or all(st.analysis is None or _refs_known(st.analysis.templates, s)
                                             for st in s.strategy.canary.steps),
         ".strategy.canary.steps"),
    Rule(m.ModelDeploymentSpec,
         _HAS_CANARY + f"!has(self.strategy.canary.analysis) || self.strategy.canary.analysis.templates.all(t, {_TEMPLATE_KNOWN})",
         "every templateName must name a template in spec.analysis.templates "
         "(or set clusterScope: true to use a cluster-wide template)",
         lambda s: _canary(s) is None or s.strategy.canary.analysis is None
         or _refs_known(s.strategy.canary.analysis.templates, s),
         ".strategy.canary.analysis"),
    Rule(m.ModelDeploymentSpec,
         "!has(self.strategy) || !has(self.strategy.abTest) || "
         "self.strategy.abTest.rules.all(r, self.variants.exists(v, v.name == r.variant))",
         "each rule's variant must name one of spec.variants",
         lambda s: not (s.strategy and s.strategy.ab_test)
         or all(r.variant in _names(s) for r in s.strategy.ab_test.rules),
         ".strategy.abTest.rules"),
    Rule(m.ModelDeploymentSpec,
         "!has(self.strategy) || !has(self.strategy.abTest) || self.variants.size() >= 2",
         "needs at least two variants to compare",
         lambda s: not (s.strategy and s.strategy.ab_test) or len(s.variants) >= 2,
         ".strategy.abTest"),
    Rule(m.ModelDeploymentSpec,
         "!has(self.strategy) || !has(self.strategy.shadow) || (self.variants.size() > 0 && "
         "self.strategy.shadow.variant != self.variants[0].name && "
         "self.variants.exists(v, v.name == self.strategy.shadow.variant))",
         "must name one of spec.variants other than the first (the first one answers the requests)",
         lambda s: not (s.strategy and s.strategy.shadow)
         or (s.strategy.shadow.variant in _names(s) and s.strategy.shadow.variant != s.variants[0].name),
         ".strategy.shadow.variant"),
    Rule(m.ModelDeploymentSpec,
         "!has(self.strategy) || !has(self.strategy.shadow) || !has(self.traffic.weights) || "
         "!(self.strategy.shadow.variant in self.traffic.weights) || self.traffic.weights[self.strategy.shadow.variant] == 0",
         "must give the shadow variant 0: it only receives mirrored requests",
         lambda s: not (s.strategy and s.strategy.shadow) or not s.traffic.weights
         or s.traffic.weights.get(s.strategy.shadow.variant, 0) == 0,
         ".traffic.weights"),
    # --- objects that must be internally consistent -------------------------------------------
    Rule(m.Traffic,
         "!has(self.weights) || self.weights.map(k, self.weights[k]).sum() == 100",
         "must add up to 100",
         lambda t: t.weights is None or sum(t.weights.values()) == 100, ".weights"),
    Rule(m.Traffic,
         "self.provider != 'gatewayAPI' || has(self.gateway)",
         "is required when traffic.provider is gatewayAPI",
         lambda t: t.provider != "gatewayAPI" or t.gateway is not None, ".gateway"),
    Rule(m.Strategy,
         "(has(self.canary) ? 1 : 0) + (has(self.abTest) ? 1 : 0) + (has(self.shadow) ? 1 : 0) <= 1",
         "takes at most one of canary, abTest or shadow",
         lambda st: _count_set(st.canary, st.ab_test, st.shadow) <= 1),
    Rule(m.CanaryStep,
         "(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) == 1",
         "a step sets exactly one of setWeight, pause or analysis",
         lambda st: _count_set(st.set_weight, st.pause, st.analysis) == 1),
    Rule(m.Canary,
         "!has(self.analysis) || self.analysis.startingStep < self.steps.size()",
         "must be the index of one of the steps",
         lambda c: c.analysis is None or c.analysis.starting_step < len(c.steps), ".analysis.startingStep"),
    Rule(m.HeaderRule,
         "has(self.exact) != has(self.regex)",
         "a header rule needs exactly one of exact or regex",
         lambda r: (r.exact is None) != (r.regex is None)),
    Rule(m.Sticky,
         "has(self.header) != has(self.cookie)",
         "needs exactly one of header or cookie",
         lambda s: (s.header is None) != (s.cookie is None)),
    Rule(m.Variant,
         "!(self.uri.startsWith('http://') || self.uri.startsWith('https://')) || has(self.sha256)",
         "is required for an http(s) uri: the download is checked against it",
         lambda v: not v.uri.startswith(("http://", "https://")) or v.sha256 is not None, ".sha256"),
    Rule(m.Analysis,
         "self.templates.all(t, self.templates.exists_one(u, u.name == t.name))",
         "template names must be unique",
         lambda a: _unique(a.templates), ".templates"),
    Rule(m.AnalysisTemplate,
         "self.metrics.all(x, self.metrics.exists_one(y, y.name == x.name))",
         "metric names must be unique in a template",
         lambda t: _unique(t.metrics), ".metrics"),
    Rule(m.Autoscaling,
         "self.minReplicas <= self.maxReplicas",
         "must not be more than maxReplicas",
         lambda a: a.min_replicas <= a.max_replicas, ".minReplicas"),
)


def rules_for(cls: type) -> list[Rule]:
    return [r for r in RULES if r.on is cls]
