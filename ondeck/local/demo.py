"""``ondeck demo``: why ondeck exists, in three scenarios on this machine, offline, in a few minutes.

1. **canary**: churn v2 (better) takes 25%, then 50% of traffic, each step checked against v1 by
   analysis, and is promoted.
2. **rollback**: churn v2-bad takes 25%; its live accuracy from feedback is worse than v1's beyond
   the allowance, and the canary is rolled back on its own.
3. **drift**: v1 alone; midway, live traffic moves ``monthly_charges`` up by one standard deviation.
   The drift detector flags it and the retrain webhook reaches a local receiver, once.

Each scenario is a manifest written under ``DIR/manifests/`` and run by the very controller of
``ondeck run`` (in this process, with its state under ``DIR/runs/<scenario>/``), with generated
traffic through the router on loopback. Then ``DIR/decisions.json`` and the plots are written.
"""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ondeck.local import manifest
from ondeck.local.controller import Controller
from ondeck.local.receiver import Receiver
from ondeck.local.state import StateDir, write_json
from ondeck.local.traffic import Traffic, churn_requests
from ondeck.rollout import DEGRADED, HEALTHY, PAUSED

RATE = 100.0  # requests per second through the router
ROWS = 8  # rows per request: more labelled rows per second for the accuracy and prediction checks
FEEDBACK = 0.5  # share of requests whose true labels are posted back
SCENARIO_TIMEOUT = 150.0
DRIFT_AFTER = 25.0  # seconds of ordinary traffic before drift is injected: five clean looks first
DRIFT_SHIFT = {"monthly_charges": 1.0}
AFTER_RETRAIN = 10.0  # keep drifting this long after the webhook arrived: it must not arrive twice
AFTER_OUTCOME = 5.0  # keep the traffic going this long after a rollout's outcome, for the plots
PROGRESS_EVERY = 5.0

ANALYSIS = {"templates": [{
    "name": "health", "interval": "5s", "count": 3, "failureLimit": 0, "inconclusiveLimit": 2,
    "metrics": [
        {"name": "error-rate", "kind": "errorRate", "maxIncrease": 0.01},
        {"name": "latency-p95", "kind": "latencyQuantile", "quantile": 0.95, "maxRatio": 1.5},
        {"name": "accuracy", "kind": "accuracy", "maxDecrease": 0.02},
        # Two versions of a model may well predict churn a little more or less often; a shift this
        # large (chi distance 0.3) is a different model, not a better one.
        {"name": "prediction-drift", "kind": "predictionDrift", "minEffect": 0.3},
    ]}]}
STEPS = [{"setWeight": 25}, {"analysis": {"templates": [{"templateName": "health"}]}},
         {"setWeight": 50}, {"analysis": {"templates": [{"templateName": "health"}]}}]


def canary_manifest(name: str, examples: Path, canary: str) -> dict[str, Any]:
    return {
        "apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"name": "churn"},
            "variants": [{"name": "stable", "version": "v1", "uri": (examples / "churn" / "v1").as_uri()},
                         {"name": "canary", "version": canary, "uri": (examples / "churn" / canary).as_uri()}],
            "strategy": {"canary": {"canaryVariant": "canary", "steps": STEPS}},
            "analysis": ANALYSIS,
            "monitoring": {"feedback": {"enabled": True}},
        },
    }


def drift_manifest(name: str, examples: Path, webhook: str) -> dict[str, Any]:
    return {
        "apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"name": "churn"},
            "variants": [{"name": "stable", "version": "v1", "uri": (examples / "churn" / "v1").as_uri()}],
            "monitoring": {"drift": {"interval": "5s", "minEffect": 0.1}, "feedback": {"enabled": True}},
            "retrain": {"webhook": {"url": webhook}},
        },
    }


@dataclass
class Scenario:
    key: str
    title: str
    manifest: dict[str, Any]
    expect: str  # the decision action that makes the scenario a success
    finished: Callable[[dict[str, Any]], bool]  # seen in the run's state after each tick
    drift_after: float | None = None


@dataclass
class Outcome:
    scenario: Scenario
    state: dict[str, Any]
    series: list[dict[str, Any]]
    seconds: float
    ok: bool
    notes: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # label -> time, for the plots

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return [{"scenario": self.scenario.key, **d} for d in self.state.get("decisions", [])]


def run_demo(out: str | Path, *, log: Callable[[str], None] = print, rate: float = RATE) -> list[Outcome]:
    """Play the three scenarios under ``out``; returns their outcomes (``ok`` says if each went as it should)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    examples = _examples(out / "examples", log)
    outcomes = []
    with Receiver() as receiver:
        retrain_path = "/hooks/retrain/churn"
        scenarios = [
            Scenario("canary", "a good canary (churn v2) is promoted step by step",
                     canary_manifest("churn-canary", examples, "v2"), "promote", _rollout_over),
            Scenario("rollback", "a bad canary (churn v2-bad) is rolled back on its own",
                     canary_manifest("churn-rollback", examples, "v2-bad"), "rollback", _rollout_over),
            Scenario("drift", f"drift injected into live traffic ({_shift_text()}) is detected and the "
                              "retrain webhook called", drift_manifest("churn-drift", examples, receiver.url + retrain_path),
                     "drift", lambda st: any(d["action"] == "drift" for d in st["decisions"])
                     and _after_first(receiver.requests(retrain_path), AFTER_RETRAIN),
                     drift_after=DRIFT_AFTER),
        ]
        for i, scenario in enumerate(scenarios, 1):
            log(f"[{i}/{len(scenarios)}] {scenario.key}: {scenario.title}")
            outcome = _play(scenario, out, examples, log, rate)
            if scenario.key == "drift":
                got = receiver.requests(retrain_path)
                outcome.notes.append(f"retrain webhook received {len(got)} time(s)")
                if got:
                    outcome.marks["webhook received"] = got[0]["time"]
                outcome.ok = outcome.ok and len(got) == 1
                write_json(out / "retrain-requests.json", got, indent=1)
            outcomes.append(outcome)
            log(f"[{i}/{len(scenarios)}] {scenario.key}: {'as expected' if outcome.ok else 'NOT as expected'} "
                f"({outcome.seconds:.0f}s; {'; '.join(outcome.notes)})")
    decisions = [d for o in outcomes for d in o.decisions]
    write_json(out / "decisions.json", decisions, indent=1)
    from ondeck.local import plots

    pictures = plots.write_all(out, outcomes)
    total = time.monotonic() - started
    log(f"done in {total:.0f}s. Decisions: {out / 'decisions.json'} ({len(decisions)}: "
        f"{_count_actions(decisions)})")
    for p in pictures:
        log(f"plot: {p}")
    return outcomes


def _examples(path: Path, log: Callable[[str], None]) -> Path:
    wanted = [path / "churn" / v / "ondeck.json" for v in ("v1", "v2", "v2-bad")]
    if all(p.is_file() for p in wanted):
        log(f"example packages: {path} (already built)")
        return path
    from ondeck.package.examples import build_examples

    log(f"building the example packages into {path} (offline; a minute or less)")
    build_examples(path, log=lambda line: log(f"  {line}"))
    return path


def _play(scenario: Scenario, out: Path, examples: Path, log: Callable[[str], None], rate: float) -> Outcome:
    key = scenario.key
    manifest_path = out / "manifests" / f"{key}.yaml"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(yaml.safe_dump(scenario.manifest, sort_keys=False))
    state_dir = StateDir(out / "runs" / key)
    if state_dir.exists():  # the demo's own output from an earlier run: plots must not mix the two
        shutil.rmtree(state_dir.path)
    deployment = manifest.load(manifest_path)
    controller = Controller(deployment, state_dir, http_port=0, grpc_port=None, fresh=True,
                            on_event=lambda line: log(f"  {key}: {line}"))
    package = examples / "churn" / "v1"
    bodies, labels = churn_requests(package, 1000, rows=ROWS, seed=11)
    drifted = churn_requests(package, 1000, rows=ROWS, seed=12, shift=DRIFT_SHIFT) if scenario.drift_after else None
    began = time.monotonic()
    traffic: Traffic | None = None
    marks: dict[str, float] = {}
    try:
        controller.start()
        traffic = Traffic(controller.router.http_address, deployment.model, bodies, labels, rate=rate,
                          feedback=FEEDBACK, feedback_to=controller.address, prefix=key,
                          max_requests=int(rate * SCENARIO_TIMEOUT)).start()
        traffic_began = time.monotonic()
        progress = {"next": traffic_began + PROGRESS_EVERY, "drifted": False}

        def on_tick(state: dict[str, Any]) -> None:
            now = time.monotonic()
            if drifted and not progress["drifted"] and now - traffic_began >= scenario.drift_after:
                traffic.use(*drifted)
                progress["drifted"] = True
                marks["drift injected"] = time.time()
                log(f"  {key}: live traffic now drifts: {_shift_text()}")
            if now >= progress["next"]:
                progress["next"] = now + PROGRESS_EVERY
                log(f"  {key}: {now - traffic_began:5.0f}s  {_progress(state)}")

        def until(state: dict[str, Any]) -> bool:
            t = time.monotonic() - traffic_began
            return scenario.finished(state) or t >= SCENARIO_TIMEOUT

        controller.run(threading.Event(), until=until, on_tick=on_tick)
    finally:
        if traffic is not None:
            traffic.stop()
        controller.close()
    state = controller.state
    actions = [d["action"] for d in state.get("decisions", [])]
    ok = scenario.expect in actions
    notes = [f"decisions: {', '.join(actions) or 'none'}"]
    if traffic is not None:
        notes.append(f"{traffic.sent} requests ({traffic.failed} failed), {traffic.feedback_posted} labels")
    if not ok and time.monotonic() - began >= SCENARIO_TIMEOUT:
        notes.append(f"gave up after {SCENARIO_TIMEOUT:.0f}s")
    return Outcome(scenario, state, state_dir.read_series(), time.monotonic() - began, ok, notes, marks)


def _progress(state: dict[str, Any]) -> str:
    parts = []
    r = state.get("rollout")
    if r:
        parts.append(f"{r['phase']} step {r['stepIndex']}/{len(state['steps'])}")
    weights = " ".join(f"{k} {v}%" for k, v in state["weights"].items() if state["variants"][k]["running"])
    rps = sum((v.get("live") or {}).get("rps", 0.0) for v in state["variants"].values() if v["running"])
    parts.append(f"weights {weights}")
    parts.append(f"{rps:.0f} req/s")
    m = state.get("monitor")
    if m and m.get("columns"):
        parts.append("drift: " + (", ".join(m["drifting"]) if m["drifting"] else "none"))
    return "  ".join(parts)


def _rollout_over(state: dict[str, Any]) -> bool:
    """Promoted, rolled back or waiting for a person, and AFTER_OUTCOME seconds since."""
    r = state["rollout"]
    if r["phase"] not in (HEALTHY, DEGRADED, PAUSED):
        return False
    decided = [d["time"] for d in state["decisions"] if d["action"] in ("promote", "rollback", "pause")]
    return not decided or time.time() - decided[-1] >= AFTER_OUTCOME


def _after_first(requests: list[dict[str, Any]], seconds: float) -> bool:
    return bool(requests) and time.time() - requests[0]["time"] >= seconds


def _shift_text() -> str:
    return ", ".join(f"{k} +{v:g} std" for k, v in DRIFT_SHIFT.items())


def _count_actions(decisions: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d["action"]] = counts.get(d["action"], 0) + 1
    return ", ".join(f"{n} {a}" for a, n in counts.items())

