"""The loop of ``ondeck run``: the operator's rollout and drift controllers, with processes and scrapes.

Every tick (about a second): take ``ondeck promote`` / ``ondeck abort`` commands, scrape every
server, advance the canary with :func:`ondeck.rollout.tick` (its analysis measured on the windows
scraped since the last measurement), look for drift and staleness with :mod:`ondeck.monitor` every
``monitoring.drift.interval``, deliver a pending retrain webhook, and save the state. Everything a
decision says is recorded (time, model, action, reason, evidence) in ``state["decisions"]``.

Process layout: each variant is ``replicas`` x ``ondeck serve`` on loopback ports the kernel picks;
``ondeck route`` listens on the user's ports in front of them with a config file in the state
directory. Every process is started from the thread that calls :meth:`Controller.start` (the kernel
ties a child's "die with parent" to that thread), so call it, and :meth:`Controller.run`, from the
main thread.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from ondeck import monitor as mon
from ondeck import experiment as ex
from ondeck import rollout, webhooks
from ondeck.controller_metrics import ControllerView, Exporter, exposition
from ondeck.decide import AccuracyPoint, CanaryWindow
from ondeck.decide.stats import histogram_quantile
from ondeck.errors import UserError
from ondeck.local import processes, routing, secrets
from ondeck.local.manifest import LocalDeployment
from ondeck.local.processes import Child, ChildFailed
from ondeck.local.scraping import Counters
from ondeck.local.state import StateDir
from ondeck.spec.analysis import measurement_verdict
from ondeck.spec.traffic import desired_weights, experiment_plan, router_config
from ondeck.windows import drift_window, variant_stats

READY_TIMEOUT = 120.0  # model loading on a busy laptop
MAX_RESTARTS = 5  # per child; a crash loop beyond that is reported, not retried forever
KEEP_DECISIONS = 1000
KEEP_EVENTS = 50
# Rollout events that are decisions (set_weight, promote, rollback, pause) and logged as such.
_DECISION_EVENTS = {"WeightSet", "RolloutCompleted", "RolloutAborted", "AnalysisInconclusive"}
# The experiment's outcomes, logged as decisions (an A/B winner that is only recorded, or a tie).
_EXPERIMENT_DECISIONS = {"ABTestDecided": "winner", "ABTestEquivalent": "equivalent"}
ROUTER = "__router__"  # the counters key of the router's scrapes (the shadow's comparison counters)


class Controller:
    def __init__(self, deployment: LocalDeployment, state_dir: StateDir, *, host: str = "127.0.0.1",
                 http_port: int = 8080, grpc_port: int | None = 8081, metrics_port: int | None = None,
                 interval: float = 1.0, fresh: bool = False, on_event: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.time, secrets_dir: str | None = None):
        self.dep = deployment
        self.dir = state_dir
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.metrics_port = metrics_port
        self.exporter: Exporter | None = None
        self.interval = interval
        self.fresh = fresh
        self.on_event = on_event
        self.clock = clock
        self.secrets_dir = secrets_dir  # where secretRef keys are read (ondeck/local/secrets.py)
        self.children: dict[str, list[Child]] = {}
        self.router: Child | None = None
        self.counters = Counters()
        self.state: dict[str, Any] = {}
        self._monitor: mon.Monitor | None = None
        self._webhooks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook")
        self._delivery: tuple[str, Future] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Resume or create the state, start the servers and the router, and wait until they are ready."""
        self.dir.create()
        now = self.clock()
        previous = self.dir.load()
        if previous and processes.run_alive(previous) and previous["pid"] != os.getpid():
            raise UserError(f"ondeck run is already running {self.dep.name!r} from {self.dir.path} (pid {previous['pid']}); "
                            "stop it first, or use another --state-dir")
        if previous:
            leftovers = processes.stop_leftovers(_pids(previous), self.dir.path)
            if leftovers:
                self._event(f"stopped {len(leftovers)} process(es) left over from the previous run")
        self.state = self._resume(previous, now) if previous and not self.fresh else None
        if self.state is None:
            self.state = self._new_state(now, previous)
        self.state.update(pid=os.getpid(), running=True, updatedAt=now)
        if self.dep.md.spec.retrain and self.dep.md.spec.retrain.webhook.secret_ref and self.secrets_dir is None:
            self._event("retrain.webhook.secretRef: no --secrets-dir, so retrain requests cannot be signed and are not sent")
        try:
            self._start_servers(self._wanted())
            self._route()
            self.router = processes.router(self.dir.path, self.dir.router_file, self.host, self.http_port, self.grpc_port)
            self.router.start()
            processes.wait_ready([self.router], READY_TIMEOUT)
        except ChildFailed as exc:
            self.close()
            raise UserError(f"could not start {self.dep.name!r}: {exc}") from None
        self.state["router"] = self.router.to_dict()
        self.counters.mark(now)
        grpc = f", gRPC {self.host}:{self.router.grpc}" if self.router.grpc else ""
        self._event(f"serving model {self.dep.model!r} on http://{self.host}:{self.router.http}{grpc} "
                    f"({', '.join(self._wanted())}); state in {self.dir.path}")
        if self.metrics_port is not None:
            try:
                self.exporter = Exporter(self.host, self.metrics_port)
            except OSError as exc:
                self.close()
                raise UserError(f"cannot serve controller metrics on {self.host}:{self.metrics_port}: {exc.strerror}") from None
            self.state["metricsPort"] = self.exporter.port
            self._event(f"controller metrics on http://{self.host}:{self.exporter.port}/metrics")
        self._save()

    def run(self, stop: threading.Event, until: Callable[[dict[str, Any]], bool] | None = None,
            on_tick: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Tick every ``interval`` until ``stop`` is set or ``until(state)`` holds."""
        while not stop.is_set():
            started = time.monotonic()
            self.tick()
            if on_tick:
                on_tick(self.state)
            if until and until(self.state):
                return
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def close(self) -> None:
        """Stop the router (no new requests), then every server; save the state as not running."""
        if self.exporter:
            self.exporter.close()
            self.exporter = None
        if self.router:
            self.router.stop()
        processes.stop_all([c for kids in self.children.values() for c in kids])
        for v in self.state.get("variants", {}).values():
            v.update(running=False, live={})
        self.children.clear()
        self._webhooks.shutdown(wait=False, cancel_futures=True)
        self.counters.close()
        if self.state:
            self.state.update(running=False, updatedAt=self.clock())
            self._save()

    # --- state ---------------------------------------------------------------------------------------

    def _new_state(self, now: float, previous: dict[str, Any] | None) -> dict[str, Any]:
        dep = self.dep
        r = None
        if dep.canary:
            r = rollout.new_state(dep.stable, dep.canary, now, stable_version=dep.packages[dep.stable].version,
                                  canary_version=dep.packages[dep.canary].version)
        state = {
            "name": dep.name, "model": dep.model, "manifest": str(dep.source), "specHash": dep.spec_hash,
            "startedAt": now, "stable": dep.stable, "canary": dep.canary, "steps": dep.steps, "rollout": r,
            "experiment": None,
            "weights": desired_weights(dep.md.spec, r), "monitor": None, "router": {},
            "variants": {name: {"version": p.version, "package": str(p.path), "running": False, "replicas": [],
                                "live": {}} for name, p in dep.packages.items()},
            "decisions": (previous or {}).get("decisions", []), "events": (previous or {}).get("events", []),
            "lastCommands": [], "restarts": 0, "counters": {"measurements": {}, "aborts": 0},
        }
        if previous:
            self._event("the manifest changed since the saved state: starting a new rollout" if not self.fresh
                        else "--fresh: starting a new rollout")
        return state

    def _resume(self, previous: dict[str, Any], now: float) -> dict[str, Any] | None:
        if previous.get("specHash") != self.dep.spec_hash:
            return None
        state = dict(previous)
        state["restarts"] = state.get("restarts", 0) + 1
        state.setdefault("counters", {"measurements": {}, "aborts": 0})
        r = state.get("rollout")
        where = f" at step {r['stepIndex']}/{len(self.dep.steps)} ({r['phase']})" if r else ""
        self._event(f"resuming {self.dep.name!r}{where} from {self.dir.state_file}")
        return state

    def _save(self) -> None:
        self.dir.save(self.state)

    def _wanted(self) -> list[str]:
        """The variants that serve: both during a canary, the winner after it; every variant of an
        A/B test or shadow but those its outcome retired."""
        r = self.state.get("rollout")
        if r and r["phase"] == rollout.HEALTHY:
            return [self.dep.canary]
        if r and r["phase"] == rollout.DEGRADED:
            return [self.dep.stable]
        if not self.dep.canary:
            retired = ex.retired(self._experiment_state())
            return [v for v in self.dep.packages if v not in retired]
        return [self.dep.stable, self.dep.canary]

    def _serving(self) -> str:
        """The variant the monitor watches: the stable one, or the canary (the experiment's winner) once promoted."""
        r = self.state.get("rollout")
        if r and r["phase"] == rollout.HEALTHY:
            return self.dep.canary
        return ex.serving(self._experiment_state(), self.dep.stable)

    def _experiment_state(self) -> dict[str, Any] | None:
        """The A/B test's or shadow's state, if it is of this manifest's variants and versions."""
        plan, state = experiment_plan(self.dep.md.spec), self.state.get("experiment")
        return state if plan is not None and ex.same_experiment(plan, state) else None

    # --- processes -----------------------------------------------------------------------------------

    def _start_servers(self, variants: list[str]) -> None:
        serving = self.dep.md.spec.serving
        started = []
        for name in variants:
            pkg = self.dep.packages[name]
            kids = [processes.server(self.dir.path, name, i, str(pkg.path), max_batch_size=serving.max_batch_size,
                                     max_batch_delay_us=serving.max_batch_delay_microseconds,
                                     payload_log_fraction=serving.payload_log.sample_rate)
                    for i in range(pkg.replicas)]
            for c in kids:
                c.start()
            self.children[name] = kids
            started += kids
        self._monitor_for(self._serving())  # built while the servers load their models: a second or two
        processes.wait_ready(started, READY_TIMEOUT)
        for name in variants:
            self.state["variants"][name].update(running=True, replicas=[c.to_dict() for c in self.children[name]])

    def _stop_variant(self, name: str) -> None:
        processes.stop_all(self.children.pop(name, []))
        self.state["variants"][name].update(running=False, replicas=[], live={})
        self.counters.forget(name)

    def _check_children(self) -> None:
        """Restart a child that died (as a pod would be), up to MAX_RESTARTS times each."""
        changed = False
        for name, kids in self.children.items():
            for c in kids:
                if c.alive() or c.restarts >= MAX_RESTARTS:
                    continue
                changed |= self._restart(c, f"variant {name}")
        if changed:
            for name, kids in self.children.items():
                self.state["variants"][name]["replicas"] = [c.to_dict() for c in kids]
            self._route()
        if self.router and not self.router.alive() and self.router.restarts < MAX_RESTARTS:
            if self._restart(self.router, "the router"):
                self.state["router"] = self.router.to_dict()

    def _restart(self, child: Child, what: str) -> bool:
        code = child.popen.returncode if child.popen else None
        child.restarts += 1
        self._event(f"{what}: {child.describe()} exited with code {code}; restarting it "
                    f"({child.restarts}/{MAX_RESTARTS}); log: {child.log_path}")
        if child is self.router:  # back on the ports it had, even if the kernel picked them
            child.argv = processes.router(self.dir.path, self.dir.router_file, self.host, child.http, child.grpc).argv
        child.start()
        try:
            processes.wait_ready([child], READY_TIMEOUT)
            return True
        except ChildFailed as exc:
            self._event(f"{what}: restart failed: {exc}")
            return False

    def address(self, variant: str) -> str | None:
        """REST address of a running replica of ``variant`` (where its feedback goes), or None."""
        return next((c.http_address for c in self.children.get(variant, []) if c.http and c.alive()), None)

    def _endpoints(self) -> dict[str, list[dict[str, str]]]:
        return {name: [{"http": c.http_address, "grpc": c.grpc_address} for c in kids if c.http]
                for name, kids in self.children.items()}

    def _route(self) -> None:
        endpoints = self._endpoints()
        config = router_config(self.dep.md, self.state["weights"], lambda variant: endpoints.get(variant, []))
        address = self.router.http_address if self.router and self.router.http else None
        routing.apply(config, self.dir.router_file, address)

    # --- the tick ------------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        commands = self.dir.take_commands()
        self._check_children()
        plan = experiment_plan(self.dep.md.spec)
        scraped = [(name, f"{name}/{c.pid}", c.http_address)
                   for name, kids in self.children.items() for c in kids if c.alive() and c.http]
        if plan is not None and plan["kind"] == ex.SHADOW and self.router and self.router.alive() and self.router.http:
            scraped.append((ROUTER, f"router/{self.router.pid}", self.router.http_address))
        self.counters.collect(now, scraped)
        self.counters.mark(now)
        if self.dep.canary:
            self._rollout(now, commands)
        elif plan is None:
            for cmd in commands:
                self._answer(cmd, False, f"{self.dep.name!r} has no canary rollout or experiment to {cmd['command']}")
        if plan is not None:
            self._experiment(plan, now, () if self.dep.canary else commands)
        drift_record = self._watch(now)
        self._deliver(now)
        r = self.state.get("rollout")
        self.counters.keep_marks([now, (r or {}).get("analysis") and r["analysis"]["lastAt"],
                                  (self.state.get("experiment") or {}).get("lastAt"),
                                  (self.state.get("monitor") or {}).get("lastLook")])
        self._live(now, drift_record)
        self.state["updatedAt"] = now
        self._save()
        if self.exporter:
            staleness = self.dep.md.spec.monitoring.staleness
            self.exporter.text = exposition([ControllerView.of_local(self.state, staleness.accuracy_bar if staleness else None)])

    def _rollout(self, now: float, commands: list[dict[str, Any]]) -> None:
        r = self.state["rollout"]
        if r["phase"] == rollout.PAUSED and not commands and not rollout.background_measures(r, self.dep.background is not None):
            return  # a paused rollout waits for a person: only promote or abort moves it (and background analysis)
        promote = any(c["command"] == "promote" for c in commands)
        abort = any(c["command"] == "abort" for c in commands)
        before = r
        r, actions = rollout.tick(self.dep.steps, r, now, measure=self._measure, interval_for=self.dep.analyses.interval,
                                  promote=promote, abort=abort, background=self.dep.background)
        self.state["rollout"] = r
        for cmd in commands:
            self._answer(cmd, *rollout.answer(cmd["command"], self.dep.steps, before, r, aborting=abort))
        for action in actions:
            self._apply(action, now)

    def _experiment(self, plan: dict[str, Any], now: float, commands=()) -> None:
        """The A/B test or shadow (:mod:`ondeck.experiment`) on windows of the scrapes: the servers'
        feedback counters, the router's comparison counters. ``commands``: ``ondeck promote`` /
        ``abort`` for it (there is no canary), which act at once."""
        state = self.state.get("experiment")
        if not ex.same_experiment(plan, state):
            state = self.state["experiment"] = ex.new_state(plan, now)
            self._event(state["message"])
        if commands:
            name = "abort" if any(c["command"] == "abort" for c in commands) else "promote"  # abort wins, as for a canary
            state, actions, applied, message = ex.command(plan, state, name)
            self.state["experiment"] = state
            for cmd in commands:
                if cmd["command"] == name:
                    self._answer(cmd, applied, message)
                else:
                    self._answer(cmd, False, "not applied: an abort given at the same time wins")
            self._experiment_actions(state, actions, now)
            return

        def measure(start: float, end: float) -> dict[str, Any]:
            if plan["kind"] == ex.AB_TEST:
                samples = {}
                for arm in (plan["control"], plan["treatment"]):
                    samples.update(self.counters.since(start, arm)[1])  # keys carry the variant label
            else:
                samples = self.counters.since(start, ROUTER)[1]
            return ex.window(plan, samples, self.dep.model)

        state, actions = ex.tick(plan, state, now, measure=measure)
        self.state["experiment"] = state
        self._experiment_actions(state, actions, now)

    def _experiment_actions(self, state: dict[str, Any], actions: list[dict[str, Any]], now: float) -> None:
        evidence = (state.get("decision") or {}).get("evidence") or {}
        variant = state["winner"] or state["treatment"]
        for action in actions:
            kind = action["type"]
            if kind == "setWeights":
                self.state["weights"] = {**self.state["weights"], **action["weights"]}
            elif kind in ("promote", "reject"):
                # Out of the router first, then stopped: the router never sends to a stopping
                # server (feedback goes to every variant it knows and fails if one is gone).
                leaving = {name: self.children.pop(name) for name in ex.retired(state) if name in self.children}
                self._route()
                for name, kids in leaving.items():
                    self.children[name] = kids
                    self._stop_variant(name)
                self._decide(now, kind, state["message"], evidence, variant)
            elif kind == "event":
                if action["reason"] in _EXPERIMENT_DECISIONS:
                    self._decide(now, _EXPERIMENT_DECISIONS[action["reason"]], action["message"], evidence, variant)
                elif action["reason"] not in ("ABTestPromoted", "ABTestAborted", "ShadowPromoted", "ShadowRejected"):
                    self._event(f"{action['reason']}: {action['message']}")

    def _measure(self, step: dict[str, Any], run_state: dict[str, Any] | None, start: float, end: float):
        dep = self.dep
        used_start, stable = self.counters.since(start, dep.stable)
        _, canary = self.counters.since(start, dep.canary)
        window = CanaryWindow(
            used_start, end,
            variant_stats(stable, {"model": dep.model, "variant": dep.stable}, dep.packages[dep.stable].reference),
            variant_stats(canary, {"model": dep.model, "variant": dep.canary}, dep.packages[dep.canary].reference))
        run_state, decision = dep.analyses.measure(step, run_state, window)
        verdict = measurement_verdict(decision.evidence)
        measured = self.state["counters"]["measurements"]
        measured[verdict] = measured.get(verdict, 0) + 1
        return run_state, decision

    def _apply(self, action: dict[str, Any], now: float) -> None:
        dep, r = self.dep, self.state["rollout"]
        kind = action["type"]
        if kind == "setWeights":
            self.state["weights"] = {**self.state["weights"], **action["weights"]}
            self._route()
            if 0 < r["canaryWeight"] < 100:
                self._decide(now, "set_weight", f"{dep.canary} ({r['canaryVersion']}) takes {r['canaryWeight']}% of traffic",
                             {"weights": self.state["weights"]}, dep.canary)
        elif kind == "promote":
            self._stop_variant(dep.stable)
            self._route()
            last = _last_analysis(r)
            self._decide(now, "promote", f"{dep.canary} ({r['canaryVersion']}) promoted to stable: "
                         + (last["reason"] if last else "every step passed"), last["evidence"] if last else {}, dep.canary)
        elif kind == "abort":
            self.state["counters"]["aborts"] += 1
            self._stop_variant(dep.canary)
            self._route()
            last = _last_analysis(r)
            self._decide(now, "rollback", f"{dep.canary} ({r['canaryVersion']}) rolled back: {action['reason']}",
                         last["evidence"] if last else {}, dep.canary)
        elif kind == "event":
            if action["reason"] not in _DECISION_EVENTS:  # those are logged as the decision they make
                self._event(f"{action['reason']}: {action['message']}")
            if action["reason"] == "AnalysisInconclusive":
                last = _last_analysis(r)
                self._decide(now, "pause", r["message"], last["evidence"] if last else {}, dep.canary)

    def _answer(self, cmd: dict[str, Any], applied: bool, message: str) -> None:
        self.state["lastCommands"] = (self.state.get("lastCommands", []) + [
            {"id": cmd["id"], "command": cmd["command"], "applied": applied, "message": message}])[-10:]
        self._event(f"ondeck {cmd['command']}: {message}")

    # --- drift and staleness ---------------------------------------------------------------------

    def _watch(self, now: float) -> dict[str, Any] | None:
        """A monitoring look when one is due; returns the drift columns of this look for the series."""
        serving = self._serving()
        monitor = self._monitor_for(serving)
        if monitor is None:
            return None
        spec = monitor.spec
        self.state["monitorVariant"] = serving
        state = self.state.get("monitor")
        if state is None or state.get("version") != spec.version:
            state = monitor.initial_state()
            state["lastLook"] = now  # the first window opens now
            self.state["monitor"] = state
            return None
        interval = spec.look_interval
        if now - state["lastLook"] < interval:
            return None
        match = {"model": self.dep.model, "variant": serving}
        start, inc = self.counters.since(state["lastLook"], serving)
        reference = self.dep.packages[serving].reference
        window = drift_window(inc, match, reference, start, now) if spec.drift else None
        stats = variant_stats(inc, match, reference)
        accuracy = AccuracyPoint(now, stats.feedback_total, stats.feedback_correct)
        self.state["monitor"], _, actions = monitor.tick(state, now, window, accuracy)
        for action in actions:
            version = spec.version
            if action["type"] == "driftDetected":
                self._decide(now, "drift", action["reason"], action["evidence"], serving, version)
            elif action["type"] == "driftCleared":
                self._decide(now, "drift_cleared", action["reason"], {}, serving, version)
            elif action["type"] == "retrain":
                p = action["payload"]
                self._decide(now, "retrain", p["reason"], {"id": action["id"], **p["evidence"]}, serving, version)
        m = self.state["monitor"]
        detector = monitor.detector
        return {"columns": m["columns"], "drifting": m["drifting"],
                "threshold": detector.log_threshold if detector else None}

    def _monitor_for(self, variant: str) -> mon.Monitor | None:
        """The monitor of ``variant``'s version (None when nothing is watched), built once per version."""
        spec = self.dep.monitor_spec(variant)
        if not (spec.drift or spec.staleness or spec.max_age):
            return None
        if self._monitor is None or self._monitor.spec != spec:
            self._monitor = mon.Monitor(spec, self.dep.packages[variant].reference)
        return self._monitor

    def _deliver(self, now: float) -> None:
        """Send a pending retrain request (one at a time, off the loop's thread); note the outcome."""
        webhook = self.dep.md.spec.retrain.webhook if self.dep.md.spec.retrain else None
        if webhook is None:
            return
        if self._delivery is not None:
            retrain_id, future = self._delivery
            if not future.done():
                return
            self._delivery = None
            error = str(future.exception()) if future.exception() else future.result()
            if error:
                self.state["monitor"] = mon.delivery_failed(self.state["monitor"], retrain_id, now, error)
                self._event(f"retrain webhook {webhook.url}: {error}; trying again later")
            else:
                self.state["monitor"] = mon.delivered(self.state["monitor"], retrain_id, now)
                self._event(f"retrain webhook {webhook.url} took request {retrain_id}")
        pending = mon.due_retrain(self.state.get("monitor"), now)
        if pending:
            try:  # signed or not sent at all, never unsigned
                secret = secrets.read(self.secrets_dir, webhook.secret_ref) if webhook.secret_ref else None
            except secrets.SecretUnavailable as exc:
                error = f"not sent, cannot sign it (secretRef): {exc}"
                self.state["monitor"] = mon.delivery_failed(self.state["monitor"], pending["id"], now, error)
                self._event(f"retrain webhook {webhook.url}: {error}; trying again later")
                return
            self._delivery = (pending["id"], self._webhooks.submit(webhooks.post, webhook.url, pending["payload"],
                                                                   secret=secret))

    # --- records -------------------------------------------------------------------------------------

    def _decide(self, now: float, action: str, reason: str, evidence: dict[str, Any], variant: str,
                version: str | None = None) -> None:
        record = {"time": now, "deployment": self.dep.name, "model": self.dep.model, "variant": variant,
                  "version": version or self.dep.packages[variant].version, "action": action, "reason": reason,
                  "evidence": evidence}
        self.state["decisions"] = (self.state["decisions"] + [record])[-KEEP_DECISIONS:]
        self._event(f"decision: {action}: {reason}")

    def _event(self, line: str) -> None:
        if self.state:
            self.state["events"] = (self.state.get("events", []) + [{"time": self.clock(), "message": line}])[-KEEP_EVENTS:]
        self.on_event(line)

    def _live(self, now: float, drift: dict[str, Any] | None) -> None:
        """Rates, error rate, p99 and accuracy per variant over the last few ticks; one series line."""
        for name, v in self.state["variants"].items():
            if not v["running"]:
                continue
            seconds, inc = self.counters.recent_sum(name)
            s = variant_stats(inc, {"model": self.dep.model, "variant": name}, self.dep.packages[name].reference)
            p99 = histogram_quantile(0.99, list(s.latency)) if s.latency and s.requests else None
            v["live"] = {
                "rps": round(s.requests / seconds, 2) if seconds else 0.0,
                "errorRate": round(s.errors / s.requests, 6) if s.requests else None,
                "p99": None if p99 is None or math.isnan(p99) else round(p99, 6),
                "accuracy": round(s.feedback_correct / s.feedback_total, 4) if s.feedback_total else None,
                "classShares": _shares(s.prediction.get("class")),
                "replicas": sum(c.alive() for c in self.children.get(name, [])),
            }
        r = self.state.get("rollout")
        record: dict[str, Any] = {
            "t": now, "weights": self.state["weights"],
            "variants": {n: v["live"] for n, v in self.state["variants"].items() if v["running"]},
        }
        if r:
            record.update(phase=r["phase"], step=r["stepIndex"])
        if drift:
            record["drift"] = drift
        self.dir.append_series(record)


def _shares(counts: list[float] | None) -> list[float] | None:
    """Predicted-class shares (a classifier's ``class`` bins), or None without predictions."""
    total = sum(counts or ())
    return [round(c / total, 4) for c in counts] if total else None


def _last_analysis(r: dict[str, Any]) -> dict[str, Any] | None:
    """The newest measurement: the background run's when it is the one that decided, else a step's."""
    background = r.get("background") or {}
    if background.get("verdict") and background.get("last"):
        return background["last"]
    runs = ([r["analysis"]] if r.get("analysis") else []) + list(reversed(r.get("analysisHistory", [])))
    return next((run["last"] for run in runs if run.get("last")), None)


def _pids(state: dict[str, Any]) -> list[int]:
    pids = [(state.get("router") or {}).get("pid")]
    for v in state.get("variants", {}).values():
        pids += [c.get("pid") for c in v.get("replicas", [])]
    return [p for p in pids if p]
