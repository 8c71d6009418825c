"""The ModelDeployment spec: parsing, the rules table, the generated CRD, weights and URIs. No cluster."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ondeck.errors import UserError
from ondeck.spec import SpecError, load_manifest, parse_manifest
from ondeck.spec.crd import crd, crd_yaml
from ondeck.spec.model import seconds
from ondeck.spec.rules import RULES
from ondeck.spec.traffic import desired_weights, rollout_steps
from ondeck.spec.uri import UnsupportedURI, parse_uri
from tests.operator.manifests import BAD, bad, base

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


def test_base_manifest_parses_with_defaults_filled_in():
    md = parse_manifest(base())
    assert md.model_name == "churn"
    assert md.spec.traffic.provider == "router"
    assert md.spec.variants[0].replicas == 1
    assert md.spec.variants[0].resources.requests == {"cpu": "100m", "memory": "256Mi"}
    assert md.spec.analysis.templates[0].interval == "1m"
    assert md.spec.monitoring.drift.enabled is True


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_manifest_is_rejected_naming_the_field(name):
    _, path, message = BAD[name]
    with pytest.raises(SpecError) as info:
        parse_manifest(bad(name))
    assert any(p.path == path and message in p.message for p in info.value.problems), info.value.problems
    assert isinstance(info.value, UserError)  # the CLI prints it as one line, exit 2
    assert "\n" not in str(info.value)


def test_every_rule_is_exercised_by_a_bad_manifest():
    """So the apiserver parity test covers every CEL rule, not just some."""
    messages = [message for _, _, message in BAD.values()]
    uncovered = [r.message for r in RULES if not any(m in r.message for m in messages)]
    assert not uncovered


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse(path):
    md = load_manifest(path)
    assert md.spec.variants


def test_examples_cover_the_issue_list():
    kinds = set()
    for path in EXAMPLES:
        s = load_manifest(path).spec
        if s.strategy and s.strategy.canary:
            kinds.add("gated" if any(st.pause and not st.pause.duration for st in s.strategy.canary.steps) else "canary")
        if s.strategy and s.strategy.ab_test and s.strategy.ab_test.rules and s.strategy.ab_test.sticky.cookie:
            kinds.add("ab")
        if s.strategy and s.strategy.shadow:
            kinds.add("shadow")
        if len(s.variants) == 1 and s.monitoring.drift.enabled:
            kinds.add("drift")
    assert kinds == {"canary", "gated", "ab", "shadow", "drift"}


def test_load_manifest_reports_files_that_hold_no_modeldeployment(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(UserError, match="expected one ModelDeployment, found 0"):
        load_manifest(f)
    f.write_text("a: [")
    with pytest.raises(UserError, match="not valid YAML"):
        load_manifest(f)


# --- the generated CRD -----------------------------------------------------------------------------


def test_committed_crd_and_install_bundle_are_generated_from_the_spec():
    result = subprocess.run([str(ROOT / "scripts" / "gen-crd"), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (ROOT / "manifests" / "crd.yaml").read_text() == crd_yaml()


def _walk(schema, path="<root>"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_every_field_has_a_description_for_kubectl_explain():
    missing = [path for path, node in _walk(_schema())
               if not path.startswith("<root>.metadata") and "{}" not in path.split(".")[-1]
               and not path.endswith("[]") and "description" not in node]
    assert not missing


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        assert "$ref" not in node and "title" not in node and "allOf" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_lists_and_strings_in_cel_rules_are_bounded():
    """The apiserver estimates a rule's cost from maxItems/maxLength; unbounded ones get rejected."""
    spec = _schema()["properties"]["spec"]
    for path, node in _walk(spec):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, path


def test_the_crd_carries_exactly_the_rules_table():
    in_crd = sorted((v["rule"], v["message"]) for _, node in _walk(_schema()) for v in node.get("x-kubernetes-validations", ()))
    assert in_crd == sorted((r.cel, r.message) for r in RULES)


def test_crd_names_and_columns():
    c = crd()
    assert c["metadata"]["name"] == "modeldeployments.ondeck.io"
    assert c["spec"]["names"]["shortNames"] == ["md"]
    version = c["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [col["name"] for col in version["additionalPrinterColumns"]] == ["Phase", "Stable", "Canary", "Weight", "Drift", "Age"]


# --- what the spec means --------------------------------------------------------------------------


def test_durations():
    assert seconds("5m") == 300 and seconds("1h30m") == 5400 and seconds("7d") == 7 * 86400 and seconds("250ms") == 0.25


def test_canary_without_rollout_state_keeps_everything_on_stable():
    md = parse_manifest(base())
    assert desired_weights(md.spec) == {"stable": 100, "canary": 0}


def test_canary_weights_follow_the_rollout_state():
    md = parse_manifest(base())
    state = {"stableVariant": "stable", "canaryVariant": "canary", "canaryWeight": 10}
    assert desired_weights(md.spec, state) == {"stable": 90, "canary": 10}


def test_explicit_weights_and_ab_split():
    d = base()
    d["spec"].pop("strategy")
    d["spec"]["traffic"] = {"weights": {"stable": 70, "canary": 30}}
    assert desired_weights(parse_manifest(d).spec) == {"stable": 70, "canary": 30}
    d = bad("sticky-both")
    d["spec"]["strategy"]["abTest"]["sticky"] = {"cookie": "uid"}
    d["spec"]["variants"].append({"name": "third", "version": "v3", "uri": "file:///m"})
    assert desired_weights(parse_manifest(d).spec) == {"stable": 34, "canary": 33, "third": 33}


def test_shadow_gets_no_live_traffic():
    d = bad("shadow-is-primary")
    d["spec"]["strategy"]["shadow"]["variant"] = "canary"
    assert desired_weights(parse_manifest(d).spec) == {"stable": 100, "canary": 0}


def test_rollout_steps_carry_durations_in_seconds():
    md = parse_manifest(base())
    assert rollout_steps(md.spec.strategy.canary) == [
        {"setWeight": 10}, {"pause": {"duration": 300.0}},
        {"analysis": {"templates": [{"templateName": "default"}]}}, {"pause": {}}]


@pytest.mark.parametrize("uri, scheme, path, claim", [
    ("file:///models/churn/v1", "file", "/models/churn/v1", None),
    ("pvc://models/churn/v1", "pvc", "churn/v1", "models"),
    ("pvc://models", "pvc", "", "models"),
    ("https://h.example/churn.tar.gz", "https", "", None),
])
def test_model_uris(uri, scheme, path, claim):
    u = parse_uri(uri)
    assert (u.scheme, u.path, u.claim) == (scheme, path, claim)


@pytest.mark.parametrize("uri, message", [
    ("s3://bucket/churn", "unsupported model URI 's3://bucket/churn'"),
    ("file://host/models", "needs an absolute path"),
    ("pvc:///churn", "needs a claim name"),
    ("pvc://models/../etc", "may not contain '..'"),
    ("/models/churn", "unsupported model URI"),
])
def test_unsupported_uris_say_what_is_supported(uri, message):
    with pytest.raises(UnsupportedURI, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_uri(uri)
