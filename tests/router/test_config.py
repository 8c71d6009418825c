"""The router config contract: the documented shape parses, round-trips, and bad configs are named."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ondeck.serving.router.config import ConfigError, RouterConfig

DOCUMENTED = """
model: churn
variants:
  - name: stable
    version: v1
    weight: 90
    endpoints:
      - {http: "127.0.0.1:8001", grpc: "127.0.0.1:9001"}
      - {http: "127.0.0.1:8002", grpc: "127.0.0.1:9002"}
  - name: canary
    version: v2
    weight: 10
    endpoints: [{http: "127.0.0.1:8003", grpc: "127.0.0.1:9003"}]
  - name: candidate
    version: v3
    weight: 0
    endpoints: [{http: "127.0.0.1:8005", grpc: "127.0.0.1:9005"}]
rules:
  - {header: X-Variant, exact: canary, variant: canary}
  - {header: x-beta-user, regex: "^(yes|true)$", variant: canary}
sticky: {header: x-user-id}
shadow: {variant: candidate, fraction: 0.1, timeout_seconds: 2.0, queue_size: 1000}
fallback: stable
retry: {attempts: 2}
ejection: {consecutive_failures: 3, seconds: 10}
"""


def documented() -> dict:
    return yaml.safe_load(DOCUMENTED)


def test_documented_config_parses_and_round_trips():
    c = RouterConfig.from_text(DOCUMENTED)
    assert c.weights == {"stable": 90, "canary": 10, "candidate": 0}
    assert len(c.variant("stable").endpoints) == 2
    assert c.rules[0].header == "x-variant"  # header names are case-insensitive
    assert c.shadow.variant == "candidate" and c.shadow.fraction == 0.1
    assert c.fallback == "stable" and c.retry.attempts == 2 and c.ejection.seconds == 10.0
    assert RouterConfig.from_dict(c.to_dict()) == c
    assert RouterConfig.from_text(c.to_yaml()) == c


def test_defaults_for_optional_sections():
    c = RouterConfig.from_dict({"model": "m", "variants": [{"name": "a", "weight": 100, "endpoints": [{"http": "h:1"}]}]})
    assert c.retry.attempts == 2 and c.ejection.consecutive_failures == 3 and c.shadow is None and c.sticky is None


def test_with_weights_validates_again():
    c = RouterConfig.from_text(DOCUMENTED)
    assert c.with_weights({"stable": 50, "canary": 50}).weights == {"stable": 50, "canary": 50, "candidate": 0}
    with pytest.raises(ConfigError, match="add up to 100"):
        c.with_weights({"stable": 50})
    with pytest.raises(ConfigError, match="no variant named 'nope'"):
        c.with_weights({"nope": 1})


def test_save_writes_a_file_load_reads_back(tmp_path):
    c = RouterConfig.from_text(DOCUMENTED)
    c.save(tmp_path / "router.yaml")
    assert RouterConfig.load(tmp_path / "router.yaml") == c
    assert [p.name for p in tmp_path.iterdir()] == ["router.yaml"]  # no temp file left behind


def _set(path: str, value):
    def edit(d: dict) -> dict:
        keys = path.split(".")
        target = d
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is _DELETE:
            del target[last]
        else:
            target[last] = value
        return d
    return edit


_DELETE = object()


@pytest.mark.parametrize("edit, message", [
    (_set("variants.1.weight", 20), r"weights must add up to 100, got 110"),
    (_set("variants.1.weight", "10"), r"variants\[1\]\.weight: must be an integer 0..100"),
    (_set("variants.1.weight", True), r"variants\[1\]\.weight: must be an integer"),
    (_set("variants.0.endpoints", []), r"variants\[0\]\.endpoints: needs at least one endpoint"),
    (_set("variants.0.endpoints.0", {"http": "localhost"}), r"variants\[0\]\.endpoints\[0\]\.http: must be host:port"),
    (_set("variants.0.endpoints.0", {}), r"needs an 'http' or a 'grpc' address"),
    (_set("variants.0.name", "canary"), r"duplicate variant name 'canary'"),
    (_set("variants.0.name", "has space"), r"variants\[0\]\.name: must be 1-63"),
    (_set("variants.0.colour", "red"), r"variants\[0\]: unknown field 'colour'"),
    (_set("weights", {}), r"top level: unknown field 'weights'"),
    (_set("model", _DELETE), r"missing required field 'model'"),
    (_set("rules.0", {"header": "x", "exact": "a", "regex": "b", "variant": "canary"}), r"exactly one of 'exact' or 'regex'"),
    (_set("rules.1.regex", "(unclosed"), r"rules\[1\]\.regex: invalid regular expression"),
    (_set("rules.0.variant", "ghost"), r"rules\[0\]\.variant: no variant named 'ghost'"),
    (_set("rules.0.exact", 1), r"rules\[0\]\.exact: must be a string"),
    (_set("rules.0.header", "bad header"), r"not a valid header name"),
    (_set("sticky", {"header": "a", "cookie": "b"}), r"sticky: needs exactly one of 'header' or 'cookie'"),
    (_set("shadow.variant", "canary"), r"shadow.variant: .* must have weight 0"),
    (_set("shadow.fraction", 0), r"shadow.fraction: must be a number in \(0.0, 1.0\]"),
    (_set("shadow.fraction", 1.5), r"shadow.fraction"),
    (_set("fallback", "ghost"), r"fallback: no variant named 'ghost'"),
    (_set("retry", {"attempts": 0}), r"retry.attempts: must be an integer 1..5"),
    (_set("variants", "stable"), r"variants: must be a list"),
])
def test_bad_configs_are_named(edit, message):
    with pytest.raises(ConfigError, match=message):
        RouterConfig.from_dict(edit(documented()))


def test_not_a_mapping_and_bad_yaml():
    with pytest.raises(ConfigError, match="top level: must be a mapping"):
        RouterConfig.from_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RouterConfig.from_text("model: [unclosed\n")


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(DOCUMENTED.replace("weight: 10", "weight: 15"))
    res = subprocess.run([sys.executable, "-m", "ondeck.cli", "route", "--config", str(path), "--http-port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ondeck route: error: router config: variants: weights must add up to 100, got 105 (stable=90, canary=15, candidate=0)"]


def test_cli_missing_config_exits_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ondeck.cli", "route", "--config", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "cannot read router config" in res.stderr and len(res.stderr.strip().splitlines()) == 1
