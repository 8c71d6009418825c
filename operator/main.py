"""Start the operator: a Kubernetes client, the reconciler, kopf's handlers, and kopf itself.

``ondeck operator`` calls :func:`run`; ``python -m ondeck.operator.main`` does the same with
default options (handy in a container without the CLI).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ondeck import __version__

DEFAULT_IMAGE = f"ghcr.io/ondeck/ondeck:{__version__}"


@dataclass(frozen=True)
class Options:
    kubeconfig: str | None = None  # None: in-cluster service account, else $KUBECONFIG / ~/.kube/config
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    image: str = DEFAULT_IMAGE
    workers: int = 16  # threads running reconcile passes
    resync_seconds: float = 300.0  # reconcile everything again this often (repairs hand edits)
    poll_seconds: float = 15.0  # how often to look for new optional CRDs and due resyncs
    health_port: int = 8081  # kopf's liveness endpoint; 0 turns it off
    verbose: bool = False
    prometheus_url: str | None = None  # where the rollout and drift controllers read metrics
    analysis_templates: str | None = None  # a file of cluster-wide default analysis templates
    metrics_port: int | None = None  # controller metrics (docs/metrics.md, "Controllers"); None: not served
    tick_seconds: float = 5.0  # how often the controllers look at each ModelDeployment


def run(options: Options) -> int:
    import kopf

    from ondeck.operator.handlers import register
    from ondeck.operator.kube import Kube
    from ondeck.operator.reconcile import Reconciler

    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not options.verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)  # a line per handled object drowns the useful ones
    logging.getLogger("ondeck.operator").info(
        "watching ModelDeployments in %s; default image %s", ", ".join(options.namespaces) or "all namespaces", options.image)
    kube = Kube(options.kubeconfig, pool_size=options.workers * 2, discovery_ttl=options.poll_seconds)
    reconciler = Reconciler(kube, image=options.image)
    controllers = _controllers(reconciler, options)
    exporter = None
    if options.metrics_port is not None:
        from ondeck.controller_metrics import Exporter

        exporter = Exporter("0.0.0.0", options.metrics_port, render=controllers.metrics)
        logging.getLogger("ondeck.operator").info("controller metrics on :%d/metrics", exporter.port)
    registry = register(reconciler, workers=options.workers, resync_seconds=options.resync_seconds,
                        poll_seconds=options.poll_seconds, controllers=controllers, tick_seconds=options.tick_seconds)
    kopf.run(
        registry=registry,
        standalone=True,  # no peering objects: one operator per cluster (the Deployment has 1 replica)
        namespaces=list(options.namespaces),
        clusterwide=not options.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{options.health_port}/healthz" if options.health_port else None,
    )
    if exporter is not None:
        exporter.close()
    return 0


def _controllers(reconciler, options: Options):
    from ondeck.operator.controllers import Controllers
    from ondeck.operator.monitoring import DriftController
    from ondeck.operator.packages import Packages
    from ondeck.operator.prometheus import Prometheus
    from ondeck.operator.rolling import CanaryController

    prometheus = Prometheus(options.prometheus_url) if options.prometheus_url else None
    packages = Packages()
    templates = load_templates(options.analysis_templates) if options.analysis_templates else {}
    drift = DriftController(prometheus, packages, secrets=reconciler.kube.secret_key)
    return Controllers(reconciler, CanaryController(prometheus, packages, templates), drift, event=reconciler.kube.post_event)


def load_templates(path: str) -> dict:
    """Cluster-wide analysis templates: a file shaped like a ModelDeployment's ``spec.analysis``."""
    from ondeck.spec.templates import load

    return load(path)


if __name__ == "__main__":
    raise SystemExit(run(Options()))
