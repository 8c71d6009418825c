"""Manifests for the operator tests: a good base, and bad variants of it with the expected problem.

The same table feeds the offline parser test and the apiserver parity test, so both sides are held
to one list of messages. Every rule of ondeck.spec.rules is broken by at least one entry (checked).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

BASE: dict[str, Any] = {
    "apiVersion": "ondeck.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "churn"},
    "spec": {
        "variants": [
            {"name": "stable", "version": "v1", "uri": "file:///models/churn/v1"},
            {"name": "canary", "version": "v2", "uri": "file:///models/churn/v2"},
        ],
        "strategy": {"canary": {"canaryVariant": "canary", "steps": [
            {"setWeight": 10}, {"pause": {"duration": "5m"}},
            {"analysis": {"templates": [{"templateName": "default"}]}}, {"pause": {}}]}},
        "analysis": {"templates": [{"name": "default", "metrics": [
            {"name": "errors", "kind": "errorRate", "maxIncrease": 0.01}]}]},
    },
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def _spec(d):
    return d["spec"]


def _without_canary(d):
    _spec(d).pop("strategy")
    _spec(d).pop("analysis")
    return _spec(d)


def _ab(d, **ab):
    s = _without_canary(d)
    s["strategy"] = {"abTest": ab}
    return s


def _shadow(d, **shadow):
    s = _without_canary(d)
    s["strategy"] = {"shadow": shadow}
    return s


# name -> (mutation, path, message); the message is what both the apiserver and the parser print.
BAD: dict[str, tuple[Callable[[dict], Any], str, str]] = {
    # --- CEL rules (ondeck.spec.rules)
    "name-too-long": (lambda d: d["metadata"].update(name="x" * 41), "metadata",
                      "name must be a DNS label of at most 40 characters"),
    "duplicate-variant": (lambda d: _spec(d)["variants"].append({"name": "stable", "version": "v3", "uri": "file:///m"}),
                          "spec.variants", "variant names must be unique"),
    "weights-unknown-variant": (lambda d: _without_canary(d).update(traffic={"weights": {"stable": 50, "ghost": 50}}),
                                "spec.traffic.weights", "may only name variants listed in spec.variants"),
    "weights-with-canary": (lambda d: _spec(d).update(traffic={"weights": {"stable": 100}}),
                            "spec.traffic.weights", "cannot be set together with strategy.canary"),
    "canary-unknown": (lambda d: _spec(d)["strategy"]["canary"].update(canaryVariant="ghost"),
                       "spec.strategy.canary.canaryVariant", "must name one of spec.variants"),
    "stable-unknown": (lambda d: _spec(d)["strategy"]["canary"].update(stableVariant="ghost"),
                       "spec.strategy.canary.stableVariant", "must name one of spec.variants"),
    "canary-is-stable": (lambda d: _spec(d)["strategy"]["canary"].update(canaryVariant="stable"),
                         "spec.strategy.canary.canaryVariant", "must differ from the stable variant"),
    "step-template-unknown": (lambda d: _spec(d)["analysis"]["templates"][0].update(name="other"),
                              "spec.strategy.canary.steps",
                              "every analysis step's templateName must name a template in spec.analysis.templates"),
    "background-template-unknown": (
        lambda d: _spec(d)["strategy"]["canary"].update(analysis={"templates": [{"templateName": "ghost"}]}),
        "spec.strategy.canary.analysis", "every templateName must name a template in spec.analysis.templates"),
    "rule-variant-unknown": (lambda d: _ab(d, rules=[{"header": "x-variant", "exact": "b", "variant": "ghost"}]),
                             "spec.strategy.abTest.rules", "each rule's variant must name one of spec.variants"),
    "ab-one-variant": (lambda d: (_ab(d), _spec(d)["variants"].pop()), "spec.strategy.abTest",
                       "needs at least two variants to compare"),
    "shadow-is-primary": (lambda d: _shadow(d, variant="stable"), "spec.strategy.shadow.variant",
                          "must name one of spec.variants other than the first"),
    "shadow-weighted": (lambda d: _shadow(d, variant="canary").update(traffic={"weights": {"stable": 90, "canary": 10}}),
                        "spec.traffic.weights", "must give the shadow variant 0"),
    "weights-sum": (lambda d: _without_canary(d).update(traffic={"weights": {"stable": 50, "canary": 40}}),
                    "spec.traffic.weights", "must add up to 100"),
    "gateway-missing": (lambda d: _spec(d).update(traffic={"provider": "gatewayAPI"}), "spec.traffic.gateway",
                        "is required when traffic.provider is gatewayAPI"),
    "two-strategies": (lambda d: _spec(d)["strategy"].update(shadow={"variant": "canary"}), "spec.strategy",
                       "takes at most one of canary, abTest or shadow"),
    "step-two-actions": (lambda d: _spec(d)["strategy"]["canary"]["steps"].append({"setWeight": 5, "pause": {}}),
                         "spec.strategy.canary.steps[4]", "a step sets exactly one of setWeight, pause or analysis"),
    "starting-step": (lambda d: _spec(d)["strategy"]["canary"].update(
        analysis={"templates": [{"templateName": "default"}], "startingStep": 9}),
        "spec.strategy.canary.analysis.startingStep", "must be the index of one of the steps"),
    "rule-exact-and-regex": (lambda d: _ab(d, rules=[{"header": "x-variant", "exact": "b", "regex": "b.*", "variant": "canary"}]),
                             "spec.strategy.abTest.rules[0]", "a header rule needs exactly one of exact or regex"),
    "sticky-both": (lambda d: _ab(d, sticky={"header": "x-user", "cookie": "uid"}), "spec.strategy.abTest.sticky",
                    "needs exactly one of header or cookie"),
    "http-without-sha": (lambda d: _spec(d)["variants"][1].update(uri="https://models.example.com/churn-v2.tar.gz"),
                         "spec.variants[1].sha256", "is required for an http(s) uri"),
    "duplicate-template": (lambda d: _spec(d)["analysis"]["templates"].append(copy.deepcopy(_spec(d)["analysis"]["templates"][0])),
                           "spec.analysis.templates", "template names must be unique"),
    "duplicate-metric": (lambda d: _spec(d)["analysis"]["templates"][0]["metrics"].append(
        {"name": "errors", "kind": "accuracy"}), "spec.analysis.templates[0].metrics", "metric names must be unique"),
    "autoscaling-min-max": (lambda d: _spec(d).update(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
                            "spec.autoscaling.minReplicas", "must not be more than maxReplicas"),
    # --- plain schema checks
    "weight-over-100": (lambda d: _spec(d)["strategy"]["canary"]["steps"].append({"setWeight": 150}),
                        "spec.strategy.canary.steps[4].setWeight", "should be less than or equal to 100"),
    "unknown-provider": (lambda d: _spec(d).update(traffic={"provider": "nginx"}), "spec.traffic.provider",
                         'Unsupported value: "nginx": supported values: "router", "gatewayAPI", "istio"'),
    "missing-uri": (lambda d: _spec(d)["variants"][0].pop("uri"), "spec.variants[0].uri", "Required value"),
    "bad-variant-name": (lambda d: _spec(d)["variants"][0].update(name="Stable_1"), "spec.variants[0].name",
                         "should match '^[a-z]([-a-z0-9]*[a-z0-9])?$'"),
    "bad-duration": (lambda d: _spec(d)["strategy"]["canary"]["steps"][1]["pause"].update(duration="5 minutes"),
                     "spec.strategy.canary.steps[1].pause.duration", "should match"),
    "bad-quantity": (lambda d: _spec(d)["variants"][0].update(resources={"requests": {"cpu": "lots"}}),
                     "spec.variants[0].resources.requests.cpu", "should match"),
    "replicas-not-int": (lambda d: _spec(d)["variants"][0].update(replicas="two"), "spec.variants[0].replicas",
                         "must be of type integer"),
    "too-many-variants": (lambda d: _spec(d).update(variants=[{"name": f"v{i}", "version": "v1", "uri": "file:///m"}
                                                              for i in range(9)]),
                          "spec.variants", "must have at most 8 items"),
    "shadow-fraction-zero": (lambda d: _shadow(d, variant="canary", fraction=0), "spec.strategy.shadow.fraction",
                             "should be greater than 0"),
    "unknown-field": (lambda d: _spec(d).update(replicas=3), "spec.replicas", 'unknown field "spec.replicas"'),
}


def bad(name: str) -> dict[str, Any]:
    d = base()
    BAD[name][0](d)
    return d
