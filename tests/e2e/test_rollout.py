"""Rollouts end to end: the operator on a real control plane, reading a real Prometheus that scrapes
real servers, and steering a real router through the ConfigMap it writes (tests/e2e/harness.py).

Every wait is on a condition with a timeout; the analysis runs every 5 s, three times a run.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from ondeck.local.receiver import Receiver
from tests.e2e.harness import ANALYSED, EVERY_STEP, GATED, Prometheus, manifest
from tests.helpers import wait_for

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = 150.0  # seconds any one rollout may take here (they take 20-40 s)


def phase_is(s, *phases):
    r = s.rollout()
    return r if r.get("phase") in phases else None


def deployment_replicas(s, variant: str) -> int:
    out = s.kubectl("-n", s.namespace, "get", "deployment", f"{s.name}-{variant}", "-o", "jsonpath={.spec.replicas}")
    return int(out.stdout)


def applied_weights(s) -> list[dict[str, int]]:
    """Every config the real router loaded, as its log reports them."""
    found = re.findall(r"weights (\{[^}]*\})", s.router.log_path.read_text())
    return [ast.literal_eval(w) for w in found]


def reasons(s) -> list[str]:
    return [e["reason"] for e in s.events()]


def test_good_canary_is_promoted_through_every_step(scenario, examples_dir):
    s = scenario(manifest("churn", examples_dir, canary="v2", steps=EVERY_STEP))
    s.send()
    final = wait_for(lambda: phase_is(s, "Healthy", "Degraded", "Paused"), ROLLOUT, 0.5, "the rollout to finish")
    assert final["phase"] == "Healthy", final["message"]
    assert wait_for(lambda: s.router_weights() == {"canary": 100}, 30, 0.2, "the router to serve the canary only")
    # The real router reloaded the weights the steps set, in order (the last setWeight and the
    # promotion come in one tick: 50% goes straight to all). Its first config is the ConfigMap as the
    # bridge first found it, at 0% or already at 20%: only reloads are logged.
    every = [{"stable": 80, "canary": 20}, {"stable": 50, "canary": 50}, {"canary": 100}]
    applied = applied_weights(s)
    assert len(applied) >= 2 and applied == every[-len(applied):], applied
    messages = [e["message"] for e in s.events() if e["reason"] == "WeightSet"]
    assert sorted(int(re.search(r"(\d+)%", m).group(1)) for m in messages) == [20, 50, 80], messages
    status = s.status()
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2" and status.get("canaryVersion") is None
    run = status["analysisRuns"][0]
    assert run["verdict"] == "Successful" and run["measurements"] == 3
    assert wait_for(lambda: deployment_replicas(s, "stable") == 0, 30, 0.5, "the old stable scaled down")
    assert "RolloutCompleted" in reasons(s)


def test_bad_canary_is_rolled_back_within_three_intervals(scenario, examples_dir):
    s = scenario(manifest("churn", examples_dir, canary="v2-bad", steps=ANALYSED))
    s.send()
    final = wait_for(lambda: phase_is(s, "Healthy", "Degraded", "Paused"), ROLLOUT, 0.5, "the rollout to finish")
    assert final["phase"] == "Degraded", final["message"]
    history = final.get("analysisHistory", []) + ([final["analysis"]] if final.get("analysis") else [])
    assert history[-1]["verdict"] == "Failed" and history[-1]["measurements"] <= 3
    assert wait_for(lambda: s.router_weights() == {"stable": 100}, 30, 0.2, "the router back on stable only")
    status = s.status()
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert status["phase"] == "Degraded" and degraded["status"] == "True" and degraded["reason"] == "RolloutAborted"
    assert "rolled back" in status["message"]
    assert wait_for(lambda: deployment_replicas(s, "canary") == 0, 30, 0.5, "the canary scaled down")
    assert wait_for(lambda: "RolloutAborted" in reasons(s), 30, 0.5, "a RolloutAborted event")


def test_gate_waits_for_a_person_and_promote_moves_it(scenario, examples_dir):
    s = scenario(manifest("churn", examples_dir, canary="v2", steps=GATED))
    paused = wait_for(lambda: phase_is(s, "Paused"), ROLLOUT, 0.2, "the gate")
    assert paused["stepIndex"] == 1 and paused["canaryWeight"] == 30
    assert wait_for(lambda: s.router_weights() == {"stable": 70, "canary": 30}, 30, 0.2, "the router at 30%")

    status = s.cli("status")
    assert status.returncode == 0, status.stderr
    assert "step 1/3 (Paused)" in status.stdout and "paused until promoted" in status.stdout
    plugin = subprocess.run([str(ROOT / "scripts" / "kubectl-ondeck"), "status", s.name, "-n", s.namespace],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KUBECONFIG": s.kubeconfig, "ONDECK": " ".join(s.operator.args[:3])})
    assert plugin.returncode == 0 and "step 1/3 (Paused)" in plugin.stdout, plugin.stderr
    assert s.rollout()["stepIndex"] == 1  # still waiting: nothing but a person moves a gate

    promote = s.cli("promote")
    assert promote.returncode == 0, promote.stderr
    assert "step 1 ->" in promote.stdout
    final = wait_for(lambda: phase_is(s, "Healthy"), ROLLOUT, 0.2, "promotion")
    assert final["lastCommand"]["applied"] and final["lastCommand"]["command"] == "promote"
    again = s.cli("promote")
    assert again.returncode == 2 and "already finished (Healthy)" in again.stderr


def test_abort_rolls_back_at_any_time(scenario, examples_dir):
    s = scenario(manifest("churn", examples_dir, canary="v2", steps=GATED))
    wait_for(lambda: phase_is(s, "Paused"), ROLLOUT, 0.2, "the gate")
    s.kubectl("-n", s.namespace, "annotate", "md", s.name, "ondeck.io/abort=by-hand")  # the documented annotation
    final = wait_for(lambda: phase_is(s, "Degraded"), ROLLOUT, 0.2, "the abort")
    assert "aborted by a person" in final["message"] and final["lastCommand"]["id"] == "by-hand"
    assert wait_for(lambda: s.router_weights() == {"stable": 100}, 30, 0.2, "the router back on stable only")


def test_operator_killed_mid_rollout_resumes_at_the_same_step(scenario, examples_dir):
    s = scenario(manifest("churn", examples_dir, canary="v2", steps=ANALYSED))
    s.send()
    measured = wait_for(lambda: (s.rollout().get("analysis") or {}).get("measurements", 0) >= 1 and s.rollout(),
                        ROLLOUT, 0.2, "the first measurement")
    s.operator.kill()
    assert s.rollout()["stepIndex"] == measured["stepIndex"] == 1
    s.operator.start()
    final = wait_for(lambda: phase_is(s, "Healthy", "Degraded", "Paused"), ROLLOUT, 0.5, "the rollout to finish")
    assert final["phase"] == "Healthy", final["message"]
    run = final["analysisHistory"][-1]
    assert run["step"] == 1 and run["measurements"] == 3 and run["startedAt"] == measured["analysis"]["startedAt"]
    assert reasons(s).count("RolloutStarted") == 1  # resumed, not started again


def test_prometheus_stopped_mid_rollout_pauses_and_never_promotes(scenario, examples_dir, tmp_path_factory):
    own = Prometheus(tmp_path_factory.mktemp("prometheus-stopped")).start()
    try:
        s = scenario(manifest("churn", examples_dir, canary="v2", steps=ANALYSED), prom=own)
        s.send()
        wait_for(lambda: s.rollout().get("analysis"), ROLLOUT, 0.2, "the analysis step")
        own.stop()
        final = wait_for(lambda: phase_is(s, "Healthy", "Degraded", "Paused"), ROLLOUT, 0.5, "the rollout to stop")
        assert final["phase"] == "Paused" and "cannot measure" in final["message"], final["message"]
        assert final["canaryWeight"] == 50 and s.router_weights() == {"stable": 50, "canary": 50}
    finally:
        own.stop()


def test_drift_raises_the_condition_and_calls_the_webhook_once(scenario, examples_dir):
    key = b"e2e-retrain-signing-key"
    with Receiver(secret=key) as receiver:  # answers 401 to a request not signed with this key
        md = manifest("churn", examples_dir, canary=None,
                      monitoring={"drift": {"interval": "5s", "minEffect": 0.1}, "feedback": {"enabled": True}},
                      retrain={"webhook": {"url": f"{receiver.url}/retrain",
                                           "secretRef": {"name": "retrain-signing", "key": "hmac"}}})
        s = scenario(md)
        created = s.kubectl("-n", s.namespace, "create", "secret", "generic", "retrain-signing",
                            f"--from-literal=hmac={key.decode()}")
        assert created.returncode == 0, created.stderr
        s.send()
        clean = wait_for(lambda: (s.status().get("monitoring") or {}).get("columns") and s.status(), 60, 0.5,
                         "a first clean look")
        assert clean["drift"] == "False" and not receiver.requests()
        s.send(drifted=True, seed=12)
        drifted = wait_for(lambda: s.status().get("drift") == "True" and s.status(), 90, 0.5, "DriftDetected")
        condition = next(c for c in drifted["conditions"] if c["type"] == "DriftDetected")
        assert "monthly_charges" in condition["message"]
        [call] = wait_for(receiver.requests, 30, 0.2, "the retrain webhook")
        assert call["verified"] is True, call  # signed by the operator with the Secret's key
        assert call["body"]["model"] == "churn" and call["body"]["version"] == "v1"
        assert "monthly_charges" in call["body"]["evidence"]["drift"] and call["id"] == call["body"]["id"]
        looked = drifted["monitoring"]["lastLook"]
        wait_for(lambda: s.status()["monitoring"]["lastLook"] >= looked + 10, 60, 0.5, "two more looks while drifting")
        assert len(receiver.requests()) == 1  # one episode, one call
        assert "DriftDetected" in reasons(s)
        metrics = _operator_metrics(s)
        assert re.search(r'ondeck_drift_detected\{namespace="%s",model="churn",variant="stable",version="v1",'
                         r'feature="monthly_charges"\} 1\.0' % s.namespace, metrics), metrics


def _operator_metrics(s) -> str:
    port = wait_for(lambda: re.search(r"controller metrics on :(\d+)/metrics", s.operator.log.read_text()), 30, 0.2,
                    "the operator's metrics port").group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()
