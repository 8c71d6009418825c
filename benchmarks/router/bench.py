"""`ondeck route` vs direct vs nginx `split_clients`, same `ondeck serve` upstreams, same wrk load, one run.

Targets, each measured twice with wrk per round: a throughput run (``--connections`` keep-alive
connections, ``--seconds`` long) and a latency run (one connection: the p50 there is the per-request
cost with no queueing in it). Rounds interleave the targets and the table shows medians, because the
machine is shared and a neighbour's burst would otherwise land on one target only.

  direct        wrk -> ondeck serve churn/v1
  route 90/10   wrk -> ondeck route -> stable churn/v1 (90%) | canary, a second churn/v1 server (10%);
                once as one process, once with --workers 2
  route shadow  the same, plus 10% of requests mirrored to a third server (churn/v2, the candidate) and compared
  nginx 90/10   wrk -> nginx (Debian), split_clients 90/10 over keep-alive upstream pools

Prints a table with ratios and rewrites the results section of benchmarks/router/README.md.
``--pool OUTPUT...`` runs nothing: it pools the rounds of saved outputs (this script's stderr and stdout,
e.g. ``run 2>&1 | tee OUT``) into one goal table, each paired figure with a 95% bootstrap interval.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
README = Path(__file__).with_name("README.md")
ONDECK = [sys.executable, "-m", "ondeck.cli"]
NGINX, DIRECT, ROUTE, SHADOW, ROUTE2 = ("nginx split_clients 90/10", "direct", "route 90/10", "route 90/10 + 10% shadow",
                                        "route 90/10, --workers 2")
# What each round prints per target; --pool reads these lines back.
ROUND_LINE = re.compile(r"round (\d+): (.+?)\s+(\d+) rps\s+(\d+) us CPU/request\s+p50 (\d+) us")
ROW = [12.0, 70.0, 900.0, 1.0, 2.0, 1.0, 30.0, 1.0, 40.0, 20.0, 10.0, 5.0, 1.0, 2.0, 3.0, 1.0, 20.0, 2.0, 30.0, 0.0]
INFER = "/v2/models/churn/infer"
WRK_SCRIPT = """
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "seconds": %f, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
NGINX_CONF = """
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream stable {{ server {stable}; keepalive 64; }}
  upstream canary {{ server {canary}; keepalive 64; }}
  split_clients "${{request_id}}" $variant {{ 90% stable; * canary; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://$variant;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      add_header x-ondeck-variant $variant;
    }}
  }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} not ready after {timeout}s")


def ensure_tools() -> None:
    missing = [t for t in ("wrk", "nginx") if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())]
    if missing:
        print(f"installing {' '.join(missing)} from Debian ...", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light", "wrk"], check=True, env=env)


def wrk(port: int, connections: int, seconds: float, work: Path) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(work / "post.lua"),
                          f"http://127.0.0.1:{port}{INFER}"], capture_output=True, text=True, check=True,
                         env={**os.environ, "WRK_BODY": str(work / "body.json")}, timeout=seconds + 60)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    r = json.loads(line[len("RESULT "):])
    r["rps"] = r["requests"] / r["seconds"]
    return r


SHADOW_FRACTION = 0.1


def settle(port: int, fraction: float = SHADOW_FRACTION, timeout: float = 30.0) -> float:
    """Wait until the shadow router on ``port`` has accounted for every request it mirrored (compared, dropped or
    failed); returns the seconds waited.

    Its shadow process works at idle priority, so at the end of a turn some mirrors may still wait for it (and
    for the shadow server): that work belongs to this turn, in its CPU, and must not fall into the next
    target's turn, which it would slow. The router mirrors exactly ``fraction`` of each variant's requests,
    rounded down, so all are accounted for when the outcomes reach that share less one per variant.
    """
    from prometheus_client.parser import text_string_to_metric_families

    start = time.monotonic()
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        answered = {s.labels["variant"]: s.value for s in families["ondeck_router_requests"].samples
                    if s.name == "ondeck_router_requests_total"} if "ondeck_router_requests" in families else {}
        accounted = sum(s.value for s in families["ondeck_shadow_requests"].samples
                        if s.name == "ondeck_shadow_requests_total") if "ondeck_shadow_requests" in families else 0
        if accounted >= sum(answered.values()) * fraction - len(answered):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            print(f"settle: the shadow router on port {port} accounted for {accounted:.0f} mirrors of "
                  f"~{sum(answered.values()) * fraction:.0f} after {timeout:g} s; going on", file=sys.stderr)
            return timeout
        time.sleep(0.05)


def median(results) -> dict:
    """Per-field median of several wrk results (errors summed)."""
    results = list(results)
    out = {k: statistics.median(r[k] for r in results) for k in results[0]}
    out["errors"] = sum(r["errors"] for r in results)
    return out


def metric(port: int, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5, help="length of each throughput run (default 5)")
    ap.add_argument("--latency-seconds", type=float, default=3, help="length of each one-connection run (default 3)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the table shows medians (default 5)")
    ap.add_argument("--connections", type=int, default=32, help="connections of the throughput runs (default 32)")
    ap.add_argument("--examples", help="built example packages (default: $ONDECK_EXAMPLES, else built now)")
    ap.add_argument("--no-readme", action="store_true", help="print only; leave README.md alone")
    ap.add_argument("--pool", nargs="+", metavar="OUTPUT", help="run nothing: pool the rounds of saved outputs")
    args = ap.parse_args()
    if args.pool:
        print(render_pooled(args.pool))
        return 0
    ensure_tools()

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ondeck-router-bench-") as tmp_name:
        try:
            return run(args, Path(tmp_name), procs)
        finally:
            stop(procs)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of a process and its children threads/processes, e.g. nginx's workers."""
    if pid is None:
        return 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        ticks = sum(sum(int(x) for x in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11:13]) for p in pids)
    except OSError:
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def start(procs: list, argv: list[str], log: Path, ready_url: str, what: str) -> subprocess.Popen:
    p = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO)
    procs.append(p)
    wait_ready(ready_url, p, what)
    return p


def start_servers(args, tmp: Path, procs: list) -> tuple[dict[str, str], dict[str, int]]:
    """The wrk script and body in ``tmp``, and the three ``ondeck serve`` upstreams: their addresses and pids by name."""
    examples = Path(args.examples or os.environ.get("ONDECK_EXAMPLES") or tmp / "examples")
    if not (examples / "churn" / "v1" / "ondeck.json").is_file():
        print(f"building the example packages into {examples} ...", file=sys.stderr)
        from ondeck.package.examples import build_examples

        build_examples(examples, log=lambda msg: None)
    (tmp / "post.lua").write_text(WRK_SCRIPT)
    (tmp / "body.json").write_text(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": ROW}]}))
    servers, server_pids = {}, {}
    # The canary serves the stable's package, so that "route vs direct" compares the same model's work with and
    # without the hop (churn/v2 costs the same per run, ~17 us a row). The shadow is the candidate, churn/v2:
    # what it costs is the point of that target.
    for name, package in (("stable", "churn/v1"), ("canary", "churn/v1"), ("candidate", "churn/v2")):
        http, grpc = free_port(), free_port()
        start(procs, ONDECK + ["serve", str(examples / package), "--host", "127.0.0.1", "--http-port", str(http),
                               "--grpc-port", str(grpc), "--variant", name],
              tmp / f"serve-{name}.log", f"http://127.0.0.1:{http}/v2/health/ready", f"ondeck serve {package}")
        servers[name] = f"127.0.0.1:{http}"
        server_pids[name] = procs[-1].pid
    return servers, server_pids


def run(args, tmp: Path, procs: list) -> int:
    servers, server_pids = start_servers(args, tmp, procs)

    def variant(name: str, version: str, weight: int) -> dict:
        return {"name": name, "version": version, "weight": weight, "endpoints": [{"http": servers[name]}]}

    split = [variant("stable", "v1", 90), variant("canary", "v1", 10)]
    routers = {}
    for key, cfg, workers in (("route", {"model": "churn", "variants": split}, 1),
                              ("route2", {"model": "churn", "variants": split}, 2),
                              ("shadow", {"model": "churn", "variants": split + [variant("candidate", "v2", 0)],
                                          "shadow": {"variant": "candidate", "fraction": SHADOW_FRACTION}}, 1)):
        import yaml

        (tmp / f"{key}.yaml").write_text(yaml.safe_dump(cfg))
        port = free_port()
        p = start(procs, ONDECK + ["route", "--config", str(tmp / f"{key}.yaml"), "--host", "127.0.0.1",
                                   "--http-port", str(port), "--workers", str(workers)],
                  tmp / f"route-{key}.log", f"http://127.0.0.1:{port}/healthz", "ondeck route")
        routers[key] = (port, p.pid)

    nginx_port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, stable=servers["stable"], canary=servers["canary"],
                                                      port=nginx_port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx_pid = start(procs, [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"],
                      tmp / "nginx.log", f"http://127.0.0.1:{nginx_port}/v2/health/ready", "nginx").pid

    # (name, port, pid of the proxy whose CPU time per request is measured)
    # In this order the router is measured right after direct and right before the shadow: the pairs of the
    # first and last goals are neighbours in time, which the paired ratios rely on. Every other round runs the
    # order backwards (ABBA), so a host that speeds up or slows down through a round favours neither side.
    targets = [(NGINX, nginx_port, nginx_pid), (DIRECT, int(servers["stable"].rsplit(":", 1)[1]), None),
               (ROUTE, *routers["route"]), (SHADOW, *routers["shadow"]), (ROUTE2, *routers["route2"])]
    everyone = [pid for _, _, pid in targets if pid is not None] + list(server_pids.values())
    for _, port, _ in targets:  # warm-up: connections, pools, caches
        wrk(port, args.connections, 2, tmp)
    throughputs: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
    latencies: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
    for round_ in range(args.rounds):  # interleaved, so a neighbour's burst of CPU hits every target alike
        order = targets if round_ % 2 == 0 else targets[::-1]
        for name, port, pid in order:  # the throughput runs back to back: the paired ratios compare these
            cpu, total = cpu_seconds(pid), sum(map(cpu_seconds, everyone))
            t = wrk(port, args.connections, args.seconds, tmp)
            if name == SHADOW:
                t["settle_seconds"] = settle(port)
            t["proxy_cpu_us"] = (cpu_seconds(pid) - cpu) / t["requests"] * 1e6
            # every ondeck process and nginx (wrk aside), per request: steadier than rps, and it shows where a
            # target's extra work goes (the shadow's: its router's comparisons plus the shadow server's runs)
            t["system_cpu_us"] = (sum(map(cpu_seconds, everyone)) - total) / t["requests"] * 1e6
            throughputs[name].append(t)
        for name, port, pid in order:
            latencies[name].append(wrk(port, 1, args.latency_seconds, tmp))
            if name == SHADOW:
                settle(port)
        for name, _, _ in targets:  # the format ROUND_LINE reads back
            print(f"round {round_ + 1}: {name:28s} {throughputs[name][-1]['rps']:9.0f} rps  "
                  f"{throughputs[name][-1]['system_cpu_us']:5.0f} us CPU/request  p50 {latencies[name][-1]['p50_us']} us (1 conn)",
                  file=sys.stderr)
    runs = {name: list(zip(throughputs[name], latencies[name])) for name, _, _ in targets}
    results = {name: (median(r[0] for r in rs), median(r[1] for r in rs)) for name, rs in runs.items()}
    for name, rs in runs.items():  # the least disturbed round: what the target does when neighbours are quiet
        results[name][0]["best_rps"] = max(r[0]["rps"] for r in rs)
    rounds = [{name: Round(rs[i][0]["rps"], rs[i][0]["system_cpu_us"], rs[i][1]["p50_us"]) for name, rs in runs.items()}
              for i in range(args.rounds)]

    canary_share = (metric(routers["route"][0], "ondeck_router_requests_total", variant="canary")
                    / max(1.0, metric(routers["route"][0], "ondeck_router_requests_total")))
    shadow_outcomes = {o: metric(routers["shadow"][0], "ondeck_shadow_requests_total", outcome=o)
                       for o in ("compared", "dropped", "error", "timeout")}
    report = render(args, results, rounds, canary_share, shadow_outcomes)
    print(report)
    if not args.no_readme:
        write_readme(report)
    return 0


class Round(NamedTuple):
    """One target's figures in one round."""

    rps: float  # throughput at --connections
    cpu: float  # servers + proxy CPU us per request
    p50: float  # us, at one connection


def median_interval(xs: list[float], draws: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of the median of ``xs``: how much the host's noise leaves a figure open."""
    rng = random.Random(0)  # the same rounds always print the same interval
    medians = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(draws))
    return medians[int(draws * 0.025)], medians[int(draws * 0.975) - 1]


def paired_goals(rounds: list[dict[str, Round]]) -> list[tuple[str, list[float], str, str, object]]:
    """Each goal's per-round figure: (goal, figures, format, target, test). A paired figure compares two targets
    measured back to back in the same round, so a slow spell of the host that spans a round hits both sides."""
    return [
        ("p50 overhead of the router (c1, route - direct)", [(r[ROUTE].p50 - r[DIRECT].p50) / 1000 for r in rounds],
         "{:.3f} ms", "<= 1 ms", lambda x: x <= 1),
        ("router rps / direct rps", [r[ROUTE].rps / r[DIRECT].rps for r in rounds], "{:.2f}", ">= 0.8", lambda x: x >= 0.8),
        ("router rps / nginx rps", [r[ROUTE].rps / r[NGINX].rps for r in rounds], "{:.2f}", ">= 0.8", lambda x: x >= 0.8),
        ("rps the 10% shadow costs the client", [(1 - r[SHADOW].rps / r[ROUTE].rps) * 100 for r in rounds], "{:.1f}%",
         "<= 5%", lambda x: x <= 5),
        # The same cost in CPU: what the shadow target spends per client request beyond the plain router, over
        # what the plain router's target spends (servers and proxy; wrk's share is the same on both sides).
        ("CPU the 10% shadow adds per client request (servers + proxy; supporting figure)",
         [(r[SHADOW].cpu / r[ROUTE].cpu - 1) * 100 for r in rounds], "{:.1f}%", "(<= 5%)", lambda x: x <= 5),
    ]


def render(args, results: dict, rounds: list[dict[str, Round]], canary_share: float, shadow: dict) -> str:
    direct_t, direct_l = results[DIRECT]
    route_t, route_l = results[ROUTE]
    lines = [
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; medians of {args.rounds} interleaved rounds of "
        f"wrk -t1 -c{args.connections} for {args.seconds:g} s (throughput) and -c1 for {args.latency_seconds:g} s "
        f"(latency); V2 JSON body with one churn row.",
        "",
        f"| target | rps (c{args.connections}), median | vs direct | best round | best vs best direct | p50 c{args.connections} | "
        f"p99 c{args.connections} | p50 c1 | proxy CPU per request | servers + proxy CPU per request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (t, l) in results.items():
        cpu = f"{t['proxy_cpu_us']:.0f} us" if name != DIRECT else "-"
        lines.append(f"| {name} | {t['rps']:.0f} | {t['rps'] / direct_t['rps']:.2f}x | {t['best_rps']:.0f} | "
                     f"{t['best_rps'] / direct_t['best_rps']:.2f}x | {t['p50_us'] / 1000:.2f} ms | {t['p99_us'] / 1000:.2f} ms | "
                     f"{l['p50_us'] / 1000:.3f} ms | {cpu} | {t['system_cpu_us']:.0f} us | {t['errors'] + l['errors']} |")
    # The same goals from the medians of the whole run (one figure per target): what the table above shows.
    of_medians = [(route_l["p50_us"] - direct_l["p50_us"]) / 1000, route_t["rps"] / direct_t["rps"],
                  route_t["rps"] / results[NGINX][0]["rps"], (1 - results[SHADOW][0]["rps"] / route_t["rps"]) * 100,
                  (results[SHADOW][0]["system_cpu_us"] / route_t["system_cpu_us"] - 1) * 100]
    lines += ["", "Goals, for the one-process router (the default):", "",
              "| goal | of the medians | paired: median of per-round figures | its 95% interval | target | met (medians / paired) |",
              "|---|---|---|---|---|---|"]
    for (goal, xs, fmt, target, ok), whole in zip(paired_goals(rounds), of_medians):
        paired, (lo, hi) = statistics.median(xs), median_interval(xs)
        lines.append(f"| {goal} | {fmt.format(whole)} | {fmt.format(paired)} | {fmt.format(lo)} to {fmt.format(hi)} | "
                     f"{target} | {'yes' if ok(whole) else 'NO'} / {'yes' if ok(paired) else 'NO'} |")
    lines += ["", f"Canary share through the router: {canary_share * 100:.2f}% of all requests. Shadow outcomes: "
              + ", ".join(f"{k} {v:.0f}" for k, v in shadow.items())
              + f"; after a throughput run the shadow's last mirrors took {results[SHADOW][0]['settle_seconds']:.2f} s "
              "(median) to be accounted for, counted in its CPU (see settle()). Load average at the end: "
              + " ".join(f"{x:.1f}" for x in os.getloadavg()) + "."]
    return "\n".join(lines)


def read_rounds(path: str) -> list[dict[str, Round]]:
    """The complete rounds of one saved output, from the lines each round prints."""
    rounds: dict[int, dict[str, Round]] = {}
    for line in Path(path).read_text().splitlines():
        m = ROUND_LINE.match(line)
        if m:
            rounds.setdefault(int(m[1]), {})[m[2].strip()] = Round(float(m[3]), float(m[4]), float(m[5]))
    return [r for _, r in sorted(rounds.items()) if {NGINX, DIRECT, ROUTE, SHADOW} <= r.keys()]


def render_pooled(paths: list[str]) -> str:
    """One goal table over the rounds of several runs: a run's 9 rounds leave a paired figure open by about
    +-0.1 on this kind of host, and pooled rounds narrow that."""
    runs = [(path, read_rounds(path)) for path in paths]
    rounds = [r for _, rs in runs for r in rs]
    if not rounds:
        sys.exit("no complete rounds in " + ", ".join(paths))
    lines = [f"{len(rounds)} rounds pooled from {len(runs)} runs ("
             + ", ".join(f"{Path(p).name}: {len(rs)}" for p, rs in runs) + ").", "",
             "| goal | median of per-round figures | its 95% interval | per run | target | met |", "|---|---|---|---|---|---|"]
    per_run = [paired_goals(rs) for _, rs in runs if rs]
    for k, (goal, xs, fmt, target, ok) in enumerate(paired_goals(rounds)):
        each = ", ".join(fmt.format(statistics.median(goals[k][1])) for goals in per_run)
        median, (lo, hi) = statistics.median(xs), median_interval(xs)
        lines.append(f"| {goal} | {fmt.format(median)} | {fmt.format(lo)} to {fmt.format(hi)} | {each} | {target} | "
                     f"{'yes' if ok(median) else 'NO'} |")
    return "\n".join(lines)


def write_readme(report: str) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = README.read_text() if README.exists() else f"# Router benchmark\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{start}\n{report}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
