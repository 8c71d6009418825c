"""`ondeck run` end to end: real servers and router on loopback, the controller deciding on scraped metrics."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import urllib.request

import pytest
import yaml

from ondeck.local.processes import pid_alive
from ondeck.windows import parse_exposition
from ondeck.local.traffic import Traffic
from ondeck.spec import SpecError, load_manifest
from tests.local.conftest import FAST_ANALYSIS, ONDECK, manifest, processes_of

# The first pause lets the test's traffic reach the router before the canary is measured.
ANALYSED = [{"pause": {"duration": "3s"}}, {"setWeight": 50}, {"analysis": {"templates": [{"templateName": "health"}]}}]
CONTROLLER_SERIES = ("ondeck_rollout_phase", "ondeck_rollout_canary_weight", "ondeck_analysis_measurements_total",
                     "ondeck_rollout_aborts_total")
GATED = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(ONDECK + list(args), capture_output=True, text=True, timeout=timeout)


def traffic(run, requests) -> Traffic:
    return Traffic(run.router, "churn", *requests, rate=120, feedback=0.5, feedback_to=run.feedback_to,
                   max_requests=120 * 120)  # bounded: two minutes at most


def served_by(router: str, n: int) -> set[str]:
    """Which variants answer ``n`` requests through the router."""
    conn = http.client.HTTPConnection(*router.split(":"), timeout=10)
    seen = set()
    payload = b'{"inputs":[{"name":"input","shape":[1,20],"datatype":"FP32","data":[' + b",".join([b"1"] * 20) + b"]}]}"
    for _ in range(n):
        conn.request("POST", "/v2/models/churn/infer", payload)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        seen.add(resp.getheader("x-ondeck-variant"))
    conn.close()
    return seen


def child_pids(state) -> list[int]:
    pids = [state["router"]["pid"]]
    for v in state["variants"].values():
        pids += [r["pid"] for r in v["replicas"]]
    return pids


def test_a_manifest_the_cluster_rejects_is_rejected_with_the_same_message(tmp_path, examples_dir):
    path = manifest(tmp_path, examples_dir, "churn", canary=None, traffic={"weights": {"stable": 60, "canary": 30}})
    with pytest.raises(SpecError) as expected:
        load_manifest(path)
    done = cli("run", str(path), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"ondeck run: error: {expected.value}"
    assert "must add up to 100" in done.stderr and "may only name variants" in done.stderr
    assert not (tmp_path / "state" / "state.json").exists()


def test_a_good_canary_is_promoted_through_its_steps(tmp_path, examples_dir, requests_v1, runs):
    path = manifest(tmp_path, examples_dir, "churn", canary="v2", steps=ANALYSED, analysis=FAST_ANALYSIS,
                    monitoring={"feedback": {"enabled": True}})
    run = runs(path, "state", "--metrics-port", "0")
    started = run.ready()
    stable_pids = [r["pid"] for r in started["variants"]["stable"]["replicas"]]
    with traffic(run, requests_v1) as load:
        state = run.wait(lambda s: s["rollout"]["phase"] != "Progressing", 120, "the canary to be decided")
    assert state["rollout"]["phase"] == "Healthy", state["rollout"]["message"]
    assert [d["action"] for d in state["decisions"]] == ["set_weight", "promote"]
    promote = state["decisions"][-1]
    assert {m["phase"] for m in promote["evidence"]["metrics"].values()} == {"Successful"}
    assert promote["evidence"]["metrics"]["accuracy"]["canary"]["samples"] >= 100
    assert load.by_variant["canary"] > 0 and load.failed == 0
    # the old stable is gone and the router sends everything to the promoted canary
    assert not any(pid_alive(p) for p in stable_pids)
    config = yaml.safe_load((run.state_dir / "router.yaml").read_text())
    assert [(v["name"], v["weight"]) for v in config["variants"]] == [("canary", 100)]
    assert served_by(run.router, 20) == {"canary"}
    # the controllers' metrics say the same (docs/metrics.md)
    with urllib.request.urlopen(f"http://127.0.0.1:{state['metricsPort']}/metrics", timeout=10) as resp:
        metrics = parse_exposition(resp.read().decode(), wanted=CONTROLLER_SERIES)
    base = (("model", "churn"), ("variant", "canary"), ("version", "v2"))
    assert metrics[("ondeck_rollout_phase", tuple(sorted(base + (("phase", "Healthy"),))))] == 1
    assert metrics[("ondeck_rollout_phase", tuple(sorted(base + (("phase", "Progressing"),))))] == 0
    assert metrics[("ondeck_rollout_canary_weight", tuple(sorted(base)))] == 100
    assert metrics[("ondeck_analysis_measurements_total", tuple(sorted(base + (("result", "Successful"),))))] >= 1
    assert metrics[("ondeck_rollout_aborts_total", tuple(sorted(base)))] == 0
    assert run.stop(signal.SIGINT) == 0
    assert processes_of(run.state_dir) == []


def test_a_bad_canary_is_rolled_back_on_its_own(tmp_path, examples_dir, requests_v1, runs):
    path = manifest(tmp_path, examples_dir, "churn", canary="v2-bad", steps=ANALYSED, analysis=FAST_ANALYSIS,
                    monitoring={"feedback": {"enabled": True}})
    run = runs(path)
    started = run.ready()
    canary_pids = [r["pid"] for r in started["variants"]["canary"]["replicas"]]
    with traffic(run, requests_v1):
        state = run.wait(lambda s: s["rollout"]["phase"] != "Progressing", 120, "the canary to be decided")
    assert state["rollout"]["phase"] == "Degraded", state["rollout"]["message"]
    rollback = state["decisions"][-1]
    assert rollback["action"] == "rollback" and rollback["version"] == "v2-bad"
    failed = [name for name, m in rollback["evidence"]["metrics"].items() if m["phase"] == "Failed"]
    assert set(failed) <= {"accuracy", "prediction-drift"} and failed, rollback["reason"]
    assert not any(pid_alive(p) for p in canary_pids)
    config = yaml.safe_load((run.state_dir / "router.yaml").read_text())
    assert [(v["name"], v["weight"]) for v in config["variants"]] == [("stable", 100)]
    assert served_by(run.router, 10) == {"stable"}
    assert run.stop(signal.SIGTERM) == 0
    assert processes_of(run.state_dir) == []


def test_background_analysis_rolls_a_bad_canary_back_while_it_waits_at_a_gate(tmp_path, examples_dir, requests_v1, runs):
    path = manifest(tmp_path, examples_dir, "churn", canary="v2-bad", steps=[{"setWeight": 50}, {"pause": {}}],
                    analysis=FAST_ANALYSIS, monitoring={"feedback": {"enabled": True}})
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["strategy"]["canary"]["analysis"] = {"templates": [{"templateName": "health"}], "startingStep": 1}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = runs(path)
    run.ready()
    run.wait(lambda s: s["rollout"]["phase"] == "Paused", 60, "the gate")  # no step analysis: only the background runs
    with traffic(run, requests_v1):
        state = run.wait(lambda s: s["rollout"]["phase"] != "Paused", 120, "the background analysis to decide")
    r = state["rollout"]
    assert r["phase"] == "Degraded" and "background analysis" in r["message"], r["message"]
    assert r["stepIndex"] == 1 and r["background"]["verdict"] == "Failed" and r["background"]["measurements"] >= 1
    rollback = state["decisions"][-1]
    assert rollback["action"] == "rollback" and rollback["evidence"]["metrics"]
    assert served_by(run.router, 10) == {"stable"}


def test_gates_status_promote_abort_and_a_restart_that_resumes_the_same_step(tmp_path, examples_dir, runs):
    path = manifest(tmp_path, examples_dir, "gated", canary="v2", steps=GATED)
    first = runs(path)
    paused = first.wait(lambda s: s["rollout"]["phase"] == "Paused", 120, "the first gate")
    assert paused["rollout"]["stepIndex"] == 1 and paused["weights"] == {"stable": 80, "canary": 20}
    status = cli("status", "gated", "--state-dir", str(first.state_dir))
    assert status.returncode == 0 and "Paused  step 1/4: pause until promoted" in status.stdout

    # Ctrl-C: every child stops and the state says so
    pids = child_pids(paused)
    assert first.stop(signal.SIGINT) == 0
    assert processes_of(first.state_dir) == [] and not any(pid_alive(p) for p in pids)
    assert first.state()["running"] is False
    refused = cli("promote", "gated", "--state-dir", str(first.state_dir))
    assert refused.returncode == 2 and "not running" in refused.stderr

    # a restart resumes at the same gate with the same weights, and is steered from outside
    second = runs(path)
    resumed = second.ready()
    assert resumed["rollout"]["phase"] == "Paused" and resumed["rollout"]["stepIndex"] == 1
    assert resumed["restarts"] == 1 and resumed["weights"] == {"stable": 80, "canary": 20}
    config = yaml.safe_load((second.state_dir / "router.yaml").read_text())
    assert {v["name"]: v["weight"] for v in config["variants"]} == {"stable": 80, "canary": 20}

    # a server that dies is started again (as a pod would be) and the router follows it to its new port
    dead = resumed["variants"]["canary"]["replicas"][0]["pid"]
    os.kill(dead, signal.SIGKILL)
    state = second.wait(lambda s: s["variants"]["canary"]["replicas"][0]["pid"] != dead, 60, "the canary's restart")
    replica = state["variants"]["canary"]["replicas"][0]
    assert replica["restarts"] == 1 and pid_alive(replica["pid"])
    config = yaml.safe_load((second.state_dir / "router.yaml").read_text())
    canary = next(v for v in config["variants"] if v["name"] == "canary")
    assert canary["endpoints"] == [{"http": f"127.0.0.1:{replica['http']}", "grpc": f"127.0.0.1:{replica['grpc']}"}]

    promoted = cli("promote", "gated", "--state-dir", str(second.state_dir))
    assert promoted.returncode == 0, promoted.stderr
    state = second.wait(lambda s: s["rollout"]["stepIndex"] == 3, 30, "the second gate")
    assert state["rollout"]["phase"] == "Paused" and state["weights"] == {"stable": 40, "canary": 60}

    aborted = cli("abort", "gated", "--state-dir", str(second.state_dir))
    assert aborted.returncode == 0, aborted.stderr
    state = second.wait(lambda s: s["rollout"]["phase"] == "Degraded", 30, "the abort")
    assert "ondeck abort" in state["rollout"]["message"] and state["decisions"][-1]["action"] == "rollback"
    assert state["variants"]["canary"]["running"] is False
    late = cli("promote", "gated", "--state-dir", str(second.state_dir))
    assert late.returncode == 2 and "already finished" in late.stderr
    assert second.stop(signal.SIGTERM) == 0
    assert processes_of(second.state_dir) == []


def test_status_of_nothing_says_how_to_start(tmp_path):
    done = cli("status", "nope", "--state-dir", str(tmp_path / "none"))
    assert done.returncode == 2 and "ondeck run MANIFEST" in done.stderr
