"""`ondeck operator`: run the Kubernetes operator (kopf) for ModelDeployment resources."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG)")
    parser.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                        help="watch only this namespace (repeatable; default: all namespaces)")
    parser.add_argument("--image", help="ondeck image for servers and routers when a spec names none "
                                        "(default ghcr.io/ondeck/ondeck:<this version>)")
    parser.add_argument("--workers", type=int, default=16, help="threads running reconcile passes (default %(default)s)")
    parser.add_argument("--resync-seconds", type=float, default=300.0,
                        help="reconcile every ModelDeployment again this often, repairing hand edits (default %(default)s)")
    parser.add_argument("--poll-seconds", type=float, default=15.0,
                        help="how often to look for newly installed route/monitoring CRDs (default %(default)s)")
    parser.add_argument("--health-port", type=int, default=8081, help="liveness endpoint port, 0 for none (default %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every handled event")
    controllers = parser.add_argument_group("rollout and drift controllers")
    controllers.add_argument("--prometheus-url", metavar="URL",
                             help="Prometheus the controllers read metrics from (e.g. http://prometheus-operated."
                                  "monitoring.svc:9090); without it analysis is inconclusive and drift unwatched")
    controllers.add_argument("--analysis-templates", metavar="FILE",
                             help="cluster-wide analysis templates (YAML shaped like spec.analysis): what "
                                  "canary steps' clusterScope: true references name")
    controllers.add_argument("--metrics-port", type=int, metavar="P",
                             help="serve the controllers' metrics on this port's /metrics (0: any free port)")
    controllers.add_argument("--tick-seconds", type=float, default=5.0, metavar="S",
                             help="how often the controllers look at each ModelDeployment (default %(default)s)")


def run(args) -> int:
    from ondeck.errors import UserError
    from ondeck.operator.main import DEFAULT_IMAGE, Options, load_templates, run as run_operator

    if args.workers < 1 or args.resync_seconds <= 0 or args.poll_seconds <= 0 or args.tick_seconds <= 0:
        raise UserError("--workers, --resync-seconds, --poll-seconds and --tick-seconds must be positive")
    if args.analysis_templates:
        load_templates(args.analysis_templates)  # a bad file stops here, with its problem, not in a handler
    return run_operator(Options(
        kubeconfig=args.kubeconfig, namespaces=tuple(args.namespace), image=args.image or DEFAULT_IMAGE,
        workers=args.workers, resync_seconds=args.resync_seconds, poll_seconds=args.poll_seconds,
        health_port=args.health_port, verbose=args.verbose, prometheus_url=args.prometheus_url,
        analysis_templates=args.analysis_templates, metrics_port=args.metrics_port, tick_seconds=args.tick_seconds))
