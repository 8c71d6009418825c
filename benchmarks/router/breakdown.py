"""Where the shadow's cost goes: the plain router against the shadow router and two controls, in 1-second turns.

bench.py measures each target for 5 s, and on this host the pair (route, shadow) still lands in different
spells of the host's speed: a run's shadow cost swings from -7% to +14%. Here the targets take turns of one
second (ABCD DCBA ...), many times, and each turn records every process's CPU per client request, so each
paired figure compares neighbours one second apart and says which process the difference is in:

  route 90/10                       the baseline: ondeck route, stable (90%) and canary (10%) servers
  route 90/10, again                a second, identical router: the A/A control (what a paired figure reads
                                    when nothing differs)
  route 90/10 + 10% shadow          10% mirrored to a third server (churn/v2) and compared
  ... mirrors dropped at offer      the shadow router choosing and building each mirror and dropping it
                                    (drop_mirrors.py): mirroring's cost on the client's path alone

Besides each process's CPU, a turn records the mean rows per model run of the stable server (its adaptive
batching runs together what arrived while it was busy, so a model run's fixed cost is shared by fewer requests
when they arrive more spread out). ``--fractions 0.02 0.1 0.3`` puts one shadow router per fraction in the turns.
A shadow router's turn ends when its shadow has accounted for every mirror (bench.settle): the last burst (up to
200 ms of mirrors) and whatever the idle-priority shadow process left for later are counted in the turn's CPU and
do not slow the next target's turn. The router's CPU includes its shadow process's (a child).

Prints one table; writes nothing. Usage: .venv/bin/python benchmarks/router/breakdown.py [--rounds 60]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import (ONDECK, cpu_seconds, ensure_tools, free_port, median_interval, metric, start,  # noqa: E402
                   settle, start_servers, stop, wrk)

BASE, AGAIN, SHADOW, DROPPED = ("route 90/10", "route 90/10, again (A/A control)", "route 90/10 + 10% shadow",
                                "route 90/10 + 10% shadow, mirrors dropped at offer (control)")
PROCESSES = ("router", "stable", "canary", "candidate", "wrk")


def idle_and_total() -> tuple[int, int]:
    """Idle (with iowait) and all jiffies of the whole machine, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


def batches(stable_port: int) -> tuple[float, float]:
    """Model runs and rows run so far by the stable server."""
    return metric(stable_port, "ondeck_batch_size_count"), metric(stable_port, "ondeck_batch_size_sum")


def turn(port: int, router_pid: int, fraction: float | None, servers: dict[str, int], stable_port: int,
         seconds: float, work: Path) -> dict[str, float]:
    """One wrk run against ``port``: rps, p99, machine idle %, each process's CPU us per client request (a shadow
    router's, once its shadow has accounted for every mirror: see bench.settle), and the stable server's mean rows
    per model run."""
    pids = {"router": router_pid, **servers}
    runs0, rows0 = batches(stable_port)
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    idle0, total0 = idle_and_total()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = wrk(port, 32, seconds, work)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle1, total1 = idle_and_total()
    if fraction:
        settle(port, fraction)
    out = {k: (cpu_seconds(p) - before[k]) / r["requests"] * 1e6 for k, p in pids.items()}
    runs1, rows1 = batches(stable_port)  # after the CPU: rendering /metrics is no part of a turn's work
    out["wrk"] = (children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime) / r["requests"] * 1e6
    out["all"] = sum(out[k] for k in PROCESSES)
    out["idle"] = 100 * (idle1 - idle0) / max(1, total1 - total0)
    out["rps"], out["p99"] = r["rps"], r["p99_us"] / 1000
    out["batch"] = (rows1 - rows0) / max(1.0, runs1 - runs0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60, help="turns of every target (default 60)")
    ap.add_argument("--seconds", type=float, default=1, help="length of a turn (default 1)")
    ap.add_argument("--examples", help="built example packages (default: $ONDECK_EXAMPLES, else built now)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1], metavar="F",
                    help="shadow fractions, one shadow router each (default 0.1)")
    args = ap.parse_args()
    ensure_tools()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ondeck-router-breakdown-") as tmp_name:
        try:
            print(run(args, Path(tmp_name), procs))
        finally:
            stop(procs)
    return 0


def run(args, tmp: Path, procs: list) -> str:
    import yaml

    addresses, servers = start_servers(args, tmp, procs)

    def variant(name: str, version: str, weight: int) -> dict:
        return {"name": name, "version": version, "weight": weight, "endpoints": [{"http": addresses[name]}]}

    split = {"model": "churn", "variants": [variant("stable", "v1", 90), variant("canary", "v1", 10)]}

    def shadowed(fraction: float) -> dict:
        return {"model": "churn", "variants": split["variants"] + [variant("candidate", "v2", 0)],
                "shadow": {"variant": "candidate", "fraction": fraction}}

    drop = [sys.executable, str(Path(__file__).with_name("drop_mirrors.py"))]
    routers = [(BASE, split, ONDECK + ["route"]), (AGAIN, split, ONDECK + ["route"])]
    routers += [(SHADOW if f == 0.1 else SHADOW.replace("10%", f"{f * 100:g}%"), shadowed(f), ONDECK + ["route"])
                for f in args.fractions]
    routers.append((DROPPED, shadowed(0.1), drop))
    stable_port = int(addresses["stable"].rsplit(":", 1)[1])
    targets = {}
    for name, cfg, argv in routers:
        path, port = tmp / f"router-{len(targets)}.yaml", free_port()
        path.write_text(yaml.safe_dump(cfg))
        p = start(procs, argv + ["--config", str(path), "--host", "127.0.0.1", "--http-port", str(port)],
                  tmp / f"router-{len(targets)}.log", f"http://127.0.0.1:{port}/healthz", name)
        targets[name] = (port, p.pid, cfg.get("shadow", {}).get("fraction"))
    for port, _, _ in targets.values():  # warm-up: connections, pools, caches
        wrk(port, 32, 2, tmp)
    turns: dict[str, list[dict]] = {name: [] for name in targets}
    order = list(targets)
    for i in range(args.rounds):
        for name in order if i % 2 == 0 else order[::-1]:
            turns[name].append(turn(*targets[name], servers, stable_port, args.seconds, tmp))
    return render(args, turns)


def render(args, turns: dict[str, list[dict]]) -> str:
    base = turns[BASE]
    lines = [f"{args.rounds} rounds of 1 wrk run per target (-t1 -c32, {args.seconds:g} s), ABCD DCBA; each figure is "
             f"the median over rounds of (target - {BASE}) in the same round, with its 95% bootstrap interval. "
             f"Baseline medians: {statistics.median(t['rps'] for t in base):.0f} rps, "
             f"{statistics.median(t['all'] for t in base):.1f} us CPU per request (router, servers and wrk), "
             f"{statistics.median(t['idle'] for t in base):.1f}% of the machine idle, "
             f"{statistics.median(t['batch'] for t in base):.2f} rows per model run of the stable server.", "",
             "| target | rps cost | CPU per request | router | stable | canary | shadow server | wrk | machine idle | p99 "
             "| stable's rows per model run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    figures = [("rps cost", lambda b, t: (1 - t["rps"] / b["rps"]) * 100, "{:.1f}%"),
               ("CPU", lambda b, t: (t["all"] / b["all"] - 1) * 100, "{:+.1f}%")]
    figures += [(k, lambda b, t, k=k: t[k] - b[k], "{:+.2f} us") for k in PROCESSES]
    figures += [("idle", lambda b, t: t["idle"] - b["idle"], "{:+.1f} pts"), ("p99", lambda b, t: t["p99"] - b["p99"], "{:+.2f} ms"),
                ("batch", lambda b, t: t["batch"] - b["batch"], "{:+.2f}")]
    for name, ts in turns.items():
        if name == BASE:
            continue
        cells = []
        for _, f, fmt in figures:
            xs = [f(b, t) for b, t in zip(base, ts)]
            lo, hi = median_interval(xs)
            cells.append(f"{fmt.format(statistics.median(xs))} ({fmt.format(lo)} to {fmt.format(hi)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
