"""What a person sees of a local run: a live table in a terminal, plain log lines anywhere else.

:func:`render` turns a run's state (``state.json``) into the table; the live view redraws it every
tick and ``ondeck status`` prints it once, so both always show the same thing.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

RECENT_EVENTS = 6


def clock_time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def step_text(step: dict[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step["pause"] or {}).get("duration")
        return f"pause {duration:g}s" if duration is not None else "pause until promoted"
    names = ", ".join(t["templateName"] for t in step["analysis"]["templates"])
    return f"analysis ({names})"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.1f}ms"


def render(state: dict[str, Any], now: float | None = None, events: int = RECENT_EVENTS) -> list[str]:
    now = time.time() if now is None else now
    r = state.get("rollout")
    router = state.get("router") or {}
    running = "running" if state.get("running") else f"not running (last update {clock_time(state.get('updatedAt', 0))})"
    head = f"{state['name']}  model {state['model']}  {running}"
    if router.get("http") and state.get("running"):
        head += f"  http://127.0.0.1:{router['http']}" + (f"  gRPC :{router['grpc']}" if router.get("grpc") else "")
    lines = [head]
    if r:
        steps = state.get("steps", [])
        index = r["stepIndex"]
        current = step_text(steps[index]) if index < len(steps) else "done"
        lines.append(f"rollout   {r['phase']}  step {min(index, len(steps))}/{len(steps)}: {current}  "
                     f"canary weight {r['canaryWeight']}%")
        lines.append(f"          {r['message']}")
    e = state.get("experiment")
    if e:
        kind = f"A/B test on {e.get('metric')}" if e["kind"] == "abTest" else "shadow"
        lines.append(f"{'a/b' if e['kind'] == 'abTest' else 'shadow':<10}{e['phase']}"
                     + (f" ({e['outcome']})" if e.get("outcome") else "")
                     + f"  {kind}: {e['treatment']} against {e['control']}, {e['looks']} look(s)")
        lines.append(f"          {e['message']}")
    lines.append(f"  {'VARIANT':<12}{'VERSION':<10}{'WEIGHT':>7}{'PROCS':>7}{'REQ/S':>9}{'5XX':>9}{'P99':>10}{'ACC':>8}")
    weights = state.get("weights", {})
    for name, v in state.get("variants", {}).items():
        live = v.get("live") or {}
        procs = f"{live.get('replicas', 0)}" if v.get("running") else "off"
        acc = "-" if live.get("accuracy") is None else f"{live['accuracy']:.3f}"
        lines.append(f"  {name:<12}{v['version']:<10}{weights.get(name, 0):>6}%{procs:>7}{live.get('rps', 0.0):>9.1f}"
                     f"{_pct(live.get('errorRate')):>9}{_ms(live.get('p99')):>10}{acc:>8}")
    if r:
        last = (r.get("analysis") or {}).get("last") or next(
            (a["last"] for a in reversed(r.get("analysisHistory", [])) if a.get("last")), None)
        lines.append(f"analysis  {last['reason'] if last else '-'}")
    m = state.get("monitor")
    if m:
        lines.append(f"drift     {_drift_text(m, now)}")
        if m.get("liveAccuracy") is not None or m.get("staleness"):
            stale = m.get("staleness") or {}
            acc = "-" if m.get("liveAccuracy") is None else f"{m['liveAccuracy']:.3f}"
            lines.append(f"quality   live accuracy {acc}" + (f"; {stale['reason']}" if stale else ""))
        pending = m.get("pendingRetrain")
        delivered = m.get("delivered") or []
        if pending:
            lines.append(f"retrain   {pending['id']} pending (attempts {pending['attempts']}"
                         + (f", last error: {pending['lastError']}" if pending.get("lastError") else "") + ")")
        elif delivered:
            lines.append(f"retrain   {delivered[-1]['id']} delivered at {clock_time(delivered[-1]['at'])}")
    if events:
        recent = state.get("events", [])[-events:]
        if recent:
            lines.append("recent")
            lines += [f"  {clock_time(e['time'])} {e['message']}" for e in recent]
    return lines


def _drift_text(m: dict[str, Any], now: float) -> str:
    columns = m.get("columns") or {}
    if m.get("lastLook") is None or not columns:
        return "waiting for the first window"
    ago = f"last look {max(0.0, now - m['lastLook']):.0f}s ago"
    if m.get("drifting"):
        parts = [f"{k} (chi distance {columns[k]['effect']:.2f})" for k in m["drifting"] if k in columns]
        return f"DRIFT in {', '.join(parts)}; {ago}"
    top = max(columns.items(), key=lambda kv: kv[1]["statistic"])
    return f"none; strongest {top[0]} log e {top[1]['statistic']:.1f}; {ago}"


class View:
    """The live view: redraws in a terminal, prints events as log lines otherwise (or with ``live=False``)."""

    def __init__(self, out: TextIO = sys.stdout, live: bool | None = None):
        self.out = out
        self.live = out.isatty() if live is None else live

    def event(self, line: str) -> None:
        if not self.live:
            print(f"{clock_time(time.time())} {line}", file=self.out, flush=True)

    def update(self, state: dict[str, Any]) -> None:
        if self.live:
            # Home, clear to the end of the screen, draw: one write, so the table does not flicker.
            self.out.write("\x1b[H\x1b[J" + "\n".join(render(state)) + "\n")
            self.out.flush()
