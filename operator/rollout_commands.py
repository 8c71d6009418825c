"""The cluster side of ``ondeck status / promote / abort NAME -n NS`` (and ``kubectl ondeck ...``).

``status`` reads the ModelDeployment and shows the step, the weights, the last analysis and its
evidence, the A/B test or shadow with its evidence, and the drift and quality watch. ``promote`` and ``abort`` set the documented annotation
(``ondeck.io/promote`` / ``ondeck.io/abort``) to a fresh timestamp and wait until the controller has
taken it (``status.rollout.lastCommand`` names it; ``status.experiment.lastCommand`` for an A/B test or
shadow without a canary), then print what it did; a command that did nothing (no gate waiting, a
finished rollout or experiment) is an error saying why.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from ondeck.errors import UserError
from ondeck.operator.kube import MODELDEPLOYMENT, ApiError, Kube
from ondeck.operator.rolling import COMMANDS

POLL = 0.25  # seconds between looks at the status while waiting for the controller


def run_command(command: str, name: str, *, namespace: str | None = None, kubeconfig: str | None = None,
                timeout: float = 15.0, as_json: bool = False) -> int:
    kube = Kube(kubeconfig)
    namespace = namespace or _context_namespace(kubeconfig)
    md = _get(kube, namespace, name)
    if command == "status":
        print(json.dumps(md.get("status") or {}, indent=1) if as_json else "\n".join(render(md)))
        return 0
    strategy = (md.get("spec") or {}).get("strategy") or {}
    # the canary takes the command while there is one, else the A/B test or shadow (operator/experiments.py)
    taker = "rollout" if strategy.get("canary") else "experiment" if (
        strategy.get("abTest") or (strategy.get("shadow") or {}).get("promoteOn")) else None
    if taker is None:
        raise UserError(f"{namespace}/{name} has no canary, A/B test or judged shadow: nothing to {command}")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _request(kube, "PATCH", MODELDEPLOYMENT.path(MODELDEPLOYMENT.versions[0], namespace, name),
             {"metadata": {"annotations": {COMMANDS[command]: stamp}}}, f"{namespace}/{name}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = ((_get(kube, namespace, name).get("status") or {}).get(taker) or {}).get("lastCommand") or {}
        if last.get("id") == stamp:
            if not last["applied"]:
                raise UserError(last["message"])
            print(f"ondeck {command} {name}: {last['message']}")
            return 0
        time.sleep(POLL)  # the controller answers in the status on its next tick: nothing to wait on but that
    raise UserError(f"the operator has not taken the {command} of {namespace}/{name} within {timeout:g}s "
                    f"(annotation {COMMANDS[command]}={stamp} is set and will still be taken); is the operator running?")


def render(md: dict[str, Any]) -> list[str]:
    """``ondeck status`` as text."""
    meta, spec, status = md["metadata"], md.get("spec") or {}, md.get("status") or {}
    lines = [f"{meta['namespace']}/{meta['name']}: {status.get('phase', 'Pending')} - {status.get('message', '')}",
             f"  stable {status.get('stableVersion')}"
             + (f", canary {status['canaryVersion']}" if status.get("canaryVersion") else "")
             + "; weights " + ", ".join(f"{k} {v}%" for k, v in (status.get("weights") or {}).items())]
    r = status.get("rollout")
    if r:
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        lines.append(f"  rollout: step {r['stepIndex']}/{len(steps)} ({r['phase']}), canary weight {r['canaryWeight']}%: "
                     f"{r['message']}")
        if r.get("lastCommand"):
            c = r["lastCommand"]
            lines.append(f"  last command: {c['command']} ({'applied' if c['applied'] else 'not applied'}): {c['message']}")
    lines += _experiment(status.get("experiment"))
    runs = status.get("analysisRuns") or []
    if runs and runs[0].get("last"):
        run = runs[0]
        lines.append(f"  last analysis (step {run['step']}, {run['verdict']}, {run['measurements']} measurement(s)): "
                     f"{run['last']['reason']}")
        lines += [f"    {line}" for line in _evidence(run["last"]["evidence"])]
    mon = status.get("monitoring")
    if mon:
        drifting = ", ".join(mon.get("drifting") or ()) or "none"
        lines.append(f"  watching {mon.get('variant')} ({mon.get('version')}): drifting {drifting}"
                     + (f"; live accuracy {mon['liveAccuracy']:.3f}" if mon.get("liveAccuracy") is not None else "")
                     + (f"; {mon['error']}" if mon.get("error") else ""))
        if mon.get("staleness"):
            lines.append(f"  staleness: {mon['staleness']['reason']}")
        pending = mon.get("pendingRetrain")
        if pending:
            lines.append(f"  retrain {pending['id']} pending ({pending['attempts']} attempt(s); {pending.get('lastError') or 'first try due'})")
        for d in mon.get("delivered") or ():
            lines.append(f"  retrain {d['id']} delivered")
    for c in status.get("conditions") or ():
        lines.append(f"  {c['type']}={c['status']} ({c.get('reason', '')}): {c.get('message', '')}")
    return lines


def _experiment(e: dict[str, Any] | None) -> list[str]:
    """The A/B test or shadow: where it stands, and the evidence of its last look."""
    if not e:
        return []
    kind = f"A/B test on {e.get('metric')}" if e["kind"] == "abTest" else "shadow"
    outcome = f", {e['outcome']}" if e.get("outcome") else ""
    lines = [f"  {kind}: {e['treatment']} ({e['treatmentVersion']}) against {e['control']} ({e['controlVersion']}): "
             f"{e['phase']}{outcome}, {e['looks']} look(s): {e['message']}"]
    evidence = (e.get("decision") or {}).get("evidence") or {}
    for arm, a in (evidence.get("arms") or {}).items():
        rate = f", rate {a['rate']:.4f}" if a.get("rate") is not None else ""
        lines.append(f"    {arm}: {a['successes']:.0f} successes of {a['trials']:.0f} trials{rate}")
    if evidence.get("lift"):
        lift = evidence["lift"]
        lines.append(f"    lift {lift['estimate']:+.2%} (anytime interval {lift['lower']:+.2%} to {lift['upper']:+.2%}, "
                     f"alpha {evidence.get('alpha')})")
    if "agreement" in evidence:
        lines.append(f"    agreement {evidence['agreement']} over {evidence['samples']:.0f} samples: {evidence['compared']:.0f} "
                     f"compared, {evidence['errors']:.0f} errors, {evidence['timeouts']:.0f} timeouts, "
                     f"{evidence['dropped']:.0f} dropped (needs {evidence['minAgreement']} over {evidence['minSamples']})")
    return lines


def _evidence(evidence: dict[str, Any]) -> list[str]:
    runs = evidence["templates"].items() if "templates" in evidence else [(evidence.get("template", ""), evidence)]
    out = []
    for template, run in runs:
        for metric, e in (run.get("metrics") or {}).items():
            detail = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("measurement",) and not isinstance(v, (dict, list)))
            out.append(f"{template}/{metric}: {e.get('measurement')} ({detail})")
    return out


def _get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return _request(kube, "GET", MODELDEPLOYMENT.path(MODELDEPLOYMENT.versions[0], namespace, name), None,
                    f"{namespace}/{name}")


def _request(kube: Kube, method: str, path: str, body: Any, what: str) -> Any:
    try:
        return kube.request(method, path, body, content_type="application/merge-patch+json" if body else None)
    except ApiError as exc:
        if exc.status == 404:
            raise UserError(f"no ModelDeployment {what}") from None
        if exc.status in (401, 403):
            raise UserError(f"not allowed to {method.lower()} ModelDeployment {what}: {exc.message}") from None
        raise UserError(f"ModelDeployment {what}: {exc}") from None


def _context_namespace(kubeconfig: str | None) -> str:
    """The current kube context's namespace (as kubectl picks it), else ``default``."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError):
        return "default"
    return (active or {}).get("context", {}).get("namespace") or "default"
