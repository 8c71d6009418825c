"""500 ModelDeployments applied at once: time until the operator has reconciled them all, and its RSS.

The anchor is the same objects without the operator: everything the operator renders for those
ModelDeployments (2 variants + router each: 3 Deployments, 3 Services, 1 ConfigMap), applied by one
``kubectl apply --server-side`` in another namespace. Its time to "every Deployment ready" is the
floor the cluster itself sets (apiserver, scheduler, kwok on the same 2 cores); the operator's time
to "every ModelDeployment Healthy" is reported against it as a ratio. On a shared machine wall time
moves with everyone else's load, so the CPU seconds the apiserver and the operator spent in each
phase (from /proc) are reported too: they move much less. The operator's RSS is read
from /proc (VmRSS sampled, VmHWM at the end) and compared with its own idle RSS.

Runs against $ONDECK_KUBECONFIG if set (it needs room for 2 x 3 x count pods), else starts a
private cluster (scripts/k8s-up with enough kwok nodes) and stops it afterwards.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = Path(__file__).with_name("README.md")
GOAL_SECONDS, GOAL_RSS_MB = 60.0, 200.0
PODS_PER_NODE = 100  # kwok nodes advertise 110


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=500, help="ModelDeployments (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="longest wait for each phase; what is not reached by then is reported as '> TIMEOUT s'")
    ap.add_argument("--no-readme", action="store_true", help="print only; leave README.md alone")
    ap.add_argument("--operator-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `ondeck operator` (repeatable), e.g. --operator-arg=--tick-seconds=30")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ondeck-bench-operator-") as tmp:
        work = Path(tmp)
        kubeconfig, state, stop = _cluster(work, pods=2 * 3 * args.count)
        try:
            kubectl = Kubectl(kubeconfig)
            apiserver = _pid(state / "pids" / "kube-apiserver.pid") if state else None
            kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
            kubectl("wait", "--for=condition=Established", "crd/modeldeployments.ondeck.io", "--timeout=60s")
            manifests = [_manifest(i) for i in range(args.count)]
            anchor = _anchor(kubectl, work, manifests, args.timeout, apiserver)
            measured = _operator(kubectl, kubeconfig, work, manifests, args.timeout, apiserver, args.operator_arg)
        finally:
            stop()
    report = _report(args.count, anchor, measured, args.timeout)
    print(report)
    if not args.no_readme:
        _write_readme(report)
    return 0


class Kubectl:
    """kubectl for setting things up, and the Python client (``api``) for watching."""

    def __init__(self, kubeconfig: str):
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        self.api = client
        config.load_kube_config(kubeconfig)
        self.bin = os.environ.get("ONDECK_K8S_BIN") or subprocess.run(
            [str(ROOT / "scripts" / "k8s-bin")], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]

    def __call__(self, *args: str, input: str | None = None) -> str:
        return subprocess.run([f"{self.bin}/kubectl", "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, check=True, timeout=600).stdout


def _cluster(work: Path, pods: int):
    """(kubeconfig, state dir of scripts/k8s-up or None, stop)."""
    external = os.environ.get("ONDECK_KUBECONFIG")
    if external:
        state = os.environ.get("ONDECK_CLUSTER_DIR")
        return external, Path(state) if state else None, lambda: None
    state = work / "cluster"
    env = dict(os.environ, ONDECK_CLUSTER_DIR=str(state), ONDECK_K8S_NODES=str(pods // PODS_PER_NODE + 2))
    up = subprocess.run([str(ROOT / "scripts" / "k8s-up")], env=env, capture_output=True, text=True, timeout=3600)
    if up.returncode != 0:
        sys.exit(f"scripts/k8s-up failed:\n{up.stderr[-3000:]}")
    return up.stdout.strip().splitlines()[-1], state, lambda: subprocess.run(
        [str(ROOT / "scripts" / "k8s-down")], env=env, capture_output=True, timeout=300)


def _manifest(i: int) -> dict:
    """A two-variant canary, like the ones users write (file:// models: kwok runs no containers)."""
    return {
        "apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": f"model-{i:04d}"},
        "spec": {
            "variants": [{"name": "stable", "version": "v1", "uri": "file:///models/churn/v1"},
                         {"name": "canary", "version": "v2", "uri": "file:///models/churn/v2"}],
            "strategy": {"canary": {"canaryVariant": "canary", "steps": [{"setWeight": 10}, {"pause": {}}]}},
        },
    }


def _anchor(kubectl: Kubectl, work: Path, manifests: list[dict], timeout: float, apiserver: int | None) -> dict:
    """The rendered objects applied straight by kubectl, without the operator (and without owners)."""
    from ondeck.operator.render import Context, render
    from ondeck.spec import parse_manifest
    from ondeck.spec.traffic import desired_weights

    ns = f"bench-anchor-{os.getpid()}"
    kubectl("create", "namespace", ns)
    objects = []
    for manifest in manifests:
        md = parse_manifest(manifest)
        for obj in render(md, Context(namespace=ns, uid="none", image="ondeck:bench", weights=desired_weights(md.spec))):
            del obj["metadata"]["ownerReferences"]  # no owner exists: the garbage collector would remove them
            objects.append(obj)
    path = work / "anchor.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    cpu0 = _cpu(apiserver)
    t0 = time.monotonic()
    kubectl("apply", "--server-side", "--field-manager", "bench", "-f", str(path))
    applied = time.monotonic() - t0
    want = sum(o["kind"] == "Deployment" for o in objects)
    ready = _watch(kubectl.api.AppsV1Api().list_namespaced_deployment, (ns,), t0, timeout, "anchor Deployments ready",
                   lambda deployments: sum(map(_deployment_ready, deployments.values())) >= want)
    apiserver_cpu = _cpu(apiserver) - cpu0
    # gone before the operator's turn: garbage-collecting it would compete with what is measured
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=600s")
    return {"objects": len(objects), "applied": applied, "ready": ready, "apiserver_cpu": apiserver_cpu}


def _operator(kubectl: Kubectl, kubeconfig: str, work: Path, manifests: list[dict], timeout: float,
              apiserver: int | None, extra_args: list[str]) -> dict:
    ns = f"bench-operator-{os.getpid()}"
    kubectl("create", "namespace", ns)
    log = open(work / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ondeck.cli", "operator", "--kubeconfig", kubeconfig, "-n", ns,
                             "--health-port", "0", "--image", "ondeck:bench", *extra_args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        time.sleep(5)  # let it start and settle: the idle RSS is the baseline, not a synchronisation
        idle = _rss(proc.pid)["VmRSS"]
        path = work / "mds.yaml"
        path.write_text(yaml.safe_dump_all(manifests))
        samples = []
        cpu0, own0 = _cpu(apiserver), _cpu(proc.pid)
        t0 = time.monotonic()
        kubectl("-n", ns, "apply", "-f", str(path))
        applied = time.monotonic() - t0
        count = len(manifests)

        marks: dict[str, float] = {}

        def progress(mds: dict[str, dict]) -> bool:
            samples.append(_rss(proc.pid)["VmRSS"])
            statuses = [md.get("status") or {} for md in mds.values()]
            if "reconciled" not in marks and sum("observedGeneration" in s for s in statuses) >= count:
                marks["reconciled"] = time.monotonic() - t0
                print(f"all reconciled: {marks['reconciled']:.1f} s", file=sys.stderr, flush=True)
            # Ready, not phase: with a canary the phase is the rollout's (Paused at a gate, ...)
            ready = [c for s in statuses for c in s.get("conditions") or () if c["type"] == "Ready" and c["status"] == "True"]
            return len(ready) >= count

        healthy = _watch(kubectl.api.CustomObjectsApi().list_namespaced_custom_object,
                         ("ondeck.io", "v1alpha1", ns, "modeldeployments"), t0, timeout, "all Ready", progress)
        reconciled = marks.get("reconciled")
        rss = _rss(proc.pid)
        return {"applied": applied, "reconciled": reconciled, "healthy": healthy, "idle_rss": idle,
                "rss": max(samples + [rss["VmRSS"]]), "peak_rss": rss["VmHWM"],
                "apiserver_cpu": _cpu(apiserver) - cpu0, "operator_cpu": _cpu(proc.pid) - own0, "args": extra_args}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        kubectl("delete", "namespace", ns, "--wait=false")


def _deployment_ready(d: dict) -> bool:
    status = d.get("status") or {}
    return status.get("readyReplicas", 0) >= d["spec"].get("replicas", 1) and \
        status.get("observedGeneration", 0) >= d["metadata"]["generation"]


def _watch(list_fn, args: tuple, t0: float, timeout: float, what: str, done) -> float | None:
    """Seconds since ``t0`` until ``done(objects by name)``, following a watch (cheap for the apiserver,
    unlike polling lists); None if ``timeout`` passed first."""
    from kubernetes import watch

    objects: dict[str, dict] = {}
    stream = watch.Watch()
    left = max(1, int(timeout - (time.monotonic() - t0)))
    for event in stream.stream(list_fn, *args, timeout_seconds=left):
        obj = event["raw_object"]
        if event["type"] == "DELETED":
            objects.pop(obj["metadata"]["name"], None)
        else:
            objects[obj["metadata"]["name"]] = obj
        if done(objects):
            stream.stop()
            print(f"{what}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
            return time.monotonic() - t0
    print(f"{what}: not within {timeout:.0f} s", file=sys.stderr, flush=True)
    return None


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (NaN when unknown)."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MB
    return fields


def _report(count: int, anchor: dict, m: dict, timeout: float) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    secs = lambda x: f"{x:.1f} s" if x is not None else f"> {timeout:.0f} s"  # noqa: E731
    ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"  # noqa: E731
    flags = f" with `{' '.join(m['args'])}`" if m["args"] else " with default flags"
    return "\n".join([
        f"Run {now} on {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}; "
        f"{count} ModelDeployments (2 variants + router each: {anchor['objects']} objects, {3 * count} pods on kwok); "
        f"operator{flags}.",
        "",
        "| | apply | all reconciled (status written) | all ready | vs anchor (ready) | apiserver CPU | vs anchor | operator CPU |",
        "|---|---|---|---|---|---|---|---|",
        f"| kubectl apply --server-side of the rendered objects (anchor) | {secs(anchor['applied'])} | - | "
        f"{secs(anchor['ready'])} | 1.00x | {anchor['apiserver_cpu']:.1f} s | 1.00x | - |",
        f"| `ondeck operator` from {count} ModelDeployments | {secs(m['applied'])} | {secs(m['reconciled'])} | "
        f"{secs(m['healthy'])} | {ratio(m['healthy'], anchor['ready'])} | {m['apiserver_cpu']:.1f} s | "
        f"{ratio(m['apiserver_cpu'], anchor['apiserver_cpu'])} | {m['operator_cpu']:.1f} s |",
        "",
        f"Machine load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| operator RSS | MB | vs idle |",
        "|---|---|---|",
        f"| idle (no ModelDeployments) | {m['idle_rss']:.0f} | 1.00x |",
        f"| highest sample while reconciling | {m['rss']:.0f} | {m['rss'] / m['idle_rss']:.2f}x |",
        f"| peak (VmHWM) | {m['peak_rss']:.0f} | {m['peak_rss'] / m['idle_rss']:.2f}x |",
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
        f"| time to all reconciled | {secs(m['reconciled'])} | <= {GOAL_SECONDS:.0f} s | "
        f"{yes(m['reconciled'] is not None and m['reconciled'] <= GOAL_SECONDS)} |",
        f"| operator peak RSS | {m['peak_rss']:.0f} MB | <= {GOAL_RSS_MB:.0f} MB | {yes(m['peak_rss'] <= GOAL_RSS_MB)} |",
    ])


def _write_readme(report: str) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = README.read_text()
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{start}\n{report}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
