"""Cluster-wide analysis templates: ``templateName`` with ``clusterScope: true`` (Argo Rollouts' rule).

Admission lets a clusterScope reference through without a local template and still rejects a plain
one; the operator and ``ondeck run`` resolve clusterScope references from the cluster-wide set only,
and a missing one pauses (operator) or stops before starting (``ondeck run``) with the name.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from ondeck.errors import UserError
from ondeck.local import manifest as local_manifest
from ondeck.operator.packages import Packages
from ondeck.operator.rolling import CanaryController
from ondeck.spec import SpecError, parse_manifest
from ondeck.spec import templates
from ondeck.spec.model import AnalysisTemplate
from tests.helpers import stop_process, wait_for
from tests.operator.conftest import ROOT, apply, get
from tests.operator.manifests import base
from tests.operator.test_controllers import FakePrometheus, run

REJECTED = "every analysis step's templateName must name a template in spec.analysis.templates"
STRICT = {"name": "strict", "interval": "5s", "count": 2, "failureLimit": 0, "inconclusiveLimit": 2,
          "metrics": [{"name": "errors", "kind": "errorRate", "maxIncrease": 0.01}]}


def cluster_set(*dicts) -> dict[str, AnalysisTemplate]:
    return {d["name"]: AnalysisTemplate.model_validate(d) for d in dicts}


def scoped(d: dict, name: str = "strict", *, keep_local: bool = False) -> dict:
    """``d`` with its analysis step naming cluster template ``name`` (and no local templates unless kept)."""
    d["spec"]["strategy"]["canary"]["steps"][2] = {"analysis": {"templates": [{"templateName": name, "clusterScope": True}]}}
    if not keep_local:
        d["spec"].pop("analysis")
    return d


# --- admission ---------------------------------------------------------------------------------------


def test_a_cluster_scope_ref_needs_no_local_template_and_a_plain_one_still_does():
    md = parse_manifest(scoped(base()))
    assert md.spec.strategy.canary.steps[2].analysis.templates[0].cluster_scope is True
    assert md.spec.analysis is None

    plain = scoped(base())
    plain["spec"]["strategy"]["canary"]["steps"][2]["analysis"]["templates"][0].pop("clusterScope")
    with pytest.raises(SpecError) as info:
        parse_manifest(plain)
    assert any(p.path == "spec.strategy.canary.steps" and REJECTED in p.message and "clusterScope: true" in p.message
               for p in info.value.problems), info.value.problems

    background = base()
    background["spec"]["strategy"]["canary"]["analysis"] = {"templates": [{"templateName": "ghost", "clusterScope": True}]}
    parse_manifest(background)


# --- resolution ----------------------------------------------------------------------------------------


def test_cluster_scope_refs_come_from_the_cluster_set_only():
    d = scoped(base(), "default", keep_local=True)  # a local "default" exists, but the step asks the cluster's
    d["spec"]["strategy"]["canary"]["steps"].append({"analysis": {"templates": [{"templateName": "default"}]}})
    spec = parse_manifest(d).spec
    with pytest.raises(templates.TemplateMissing, match="named both with and without clusterScope"):
        templates.step_templates(spec, cluster_set({**STRICT, "name": "default"}))

    spec = parse_manifest(scoped(base(), "default", keep_local=True)).spec
    [(name, used)] = templates.step_templates(spec, cluster_set({**STRICT, "name": "default"})).items()
    assert name == "default" and used.interval == "5s"  # the cluster's, not the local one (1m)
    with pytest.raises(templates.TemplateMissing) as info:
        templates.step_templates(spec, cluster_set({**STRICT, "name": "other"}))
    assert str(info.value) == "no cluster-wide analysis template named default (clusterScope: true; there are other)"
    with pytest.raises(templates.TemplateMissing, match=r"\(clusterScope: true; there are none\)"):
        templates.step_templates(spec, {})


@pytest.fixture
def canary_md(examples_dir):
    def make(name: str = "strict"):
        d = scoped(base(), name)
        d["spec"]["model"] = {"name": "churn"}
        for v, version in zip(d["spec"]["variants"], ("v1", "v2")):
            v["uri"] = (examples_dir / "churn" / version).as_uri()
        d["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}, d["spec"]["strategy"]["canary"]["steps"][2]]
        return d
    return make


def test_the_operator_measures_with_the_cluster_template(canary_md):
    md = parse_manifest(canary_md())
    # strict (failureLimit 0, errors +1% at most) is only in the cluster set; 30% canary errors abort
    controller = CanaryController(FakePrometheus(stable=(1000, 0), canary=(1000, 300)), Packages(), cluster_set(STRICT))
    state, events = run(controller, md, 3)
    # count 2 and the metric named "errors": the cluster template's
    assert state["phase"] == "Degraded" and "at measurement 1/2: errors (canary 0.3" in state["message"], state["message"]
    assert "AnalysisTemplateMissing" not in [r for _, r, _ in events]


def test_a_missing_cluster_template_is_said_at_once_and_pauses_never_passes(canary_md):
    md = parse_manifest(canary_md("ghost"))
    controller = CanaryController(FakePrometheus(stable=(1000, 0), canary=(1000, 0)), Packages(), cluster_set(STRICT))
    state, events = run(controller, md, 1)
    assert ("Warning", "AnalysisTemplateMissing",
            "no cluster-wide analysis template named ghost (clusterScope: true; there are strict)") in events
    state, later = run(controller, md, 3, state=state, start=1000 + 61, every=5)  # measured after the fallback interval
    assert state["phase"] == "Paused" and state["canaryWeight"] == 50
    assert "cannot analyse: no cluster-wide analysis template named ghost" in state["message"]
    assert "AnalysisTemplateMissing" not in [r for _, r, _ in later]  # said once per rollout, not every tick


# --- ondeck run ----------------------------------------------------------------------------------------


def test_ondeck_run_takes_cluster_templates_from_a_file(canary_md, tmp_path):
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(canary_md()))
    with pytest.raises(UserError) as info:
        local_manifest.load(path)
    assert "no cluster-wide analysis template named strict" in str(info.value)
    assert "ondeck run --analysis-templates FILE" in str(info.value)

    file = tmp_path / "templates.yaml"
    file.write_text(yaml.safe_dump({"templates": [STRICT]}))
    dep = local_manifest.load(path, templates.load(file))
    assert list(dep.analyses.templates) == ["strict"] and dep.analyses.templates["strict"].interval == 5.0

    file.write_text("templates: [{name: strict}]")
    with pytest.raises(UserError, match=r"--analysis-templates: .* is not a valid spec.analysis"):
        templates.load(file)
    with pytest.raises(UserError, match="cannot read"):
        templates.load(tmp_path / "absent.yaml")


# --- the real apiserver and operator -------------------------------------------------------------------


@pytest.mark.k8s
def test_the_apiserver_admits_cluster_scope_refs_and_still_rejects_plain_ones(md_crd, k8s_namespace):
    result = apply(md_crd, k8s_namespace, scoped(base()), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    plain = scoped(base())
    plain["spec"]["strategy"]["canary"]["steps"][2]["analysis"]["templates"][0]["clusterScope"] = False
    result = apply(md_crd, k8s_namespace, plain, "--dry-run=server")
    assert result.returncode != 0 and REJECTED in result.stderr, result.stderr


@pytest.mark.k8s
def test_the_operator_resolves_cluster_scope_refs_from_its_templates_file(md_crd, k8s_namespace, canary_md, tmp_path, request):
    cluster, ns = md_crd, k8s_namespace
    file = tmp_path / "templates.yaml"
    file.write_text(yaml.safe_dump({"templates": [{**STRICT, "interval": "1s"}]}))
    log = tmp_path / "operator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ondeck.cli", "operator", "--kubeconfig", cluster.kubeconfig,
                                 "--namespace", ns, "--health-port", "0", "--poll-seconds", "1", "--workers", "2",
                                 "--image", "ondeck:test", "--tick-seconds", "1", "--analysis-templates", str(file)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        found, lost = canary_md("strict"), canary_md("ghost")
        found["metadata"]["name"], lost["metadata"]["name"] = "found", "lost"
        assert apply(cluster, ns, found).returncode == 0 and apply(cluster, ns, lost).returncode == 0

        # found: measured with the file's template, and inconclusive only for want of Prometheus
        rollout = wait_for(lambda: ((get(cluster, ns, "md", "found") or {}).get("status") or {}).get("rollout", {})
                           .get("phase") == "Paused" and get(cluster, ns, "md", "found")["status"]["rollout"],
                           timeout=90, interval=0.5, what="found paused at its analysis")
        assert "no --prometheus-url" in rollout["message"] and "ghost" not in rollout["message"], rollout["message"]

        def missing_event():
            items = json.loads(cluster.kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
            return [e for e in items if e["reason"] == "AnalysisTemplateMissing"]

        [event] = wait_for(missing_event, timeout=60, interval=0.5, what="AnalysisTemplateMissing event")
        assert event["type"] == "Warning" and event["involvedObject"]["name"] == "lost"
        assert "no cluster-wide analysis template named ghost (clusterScope: true; there are strict)" in event["message"]
        # paused at its analysis step at once, with the reason, rather than holding its share until a retry
        lost_rollout = wait_for(lambda: ((get(cluster, ns, "md", "lost") or {}).get("status") or {}).get("rollout", {})
                                .get("phase") == "Paused" and get(cluster, ns, "md", "lost")["status"]["rollout"],
                                timeout=30, interval=0.5, what="lost paused at its analysis")
        assert lost_rollout["stepIndex"] == 1 and "no cluster-wide analysis template named ghost" in lost_rollout["message"]
    finally:
        stop_process(proc)
        request.node.add_report_section("call", "operator log", log.read_text()[-8000:])
    assert "Traceback" not in log.read_text()
