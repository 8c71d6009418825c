"""`ondeck run MANIFEST`: run a ModelDeployment on this machine, processes instead of pods (docs/demo.md)."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="a ModelDeployment YAML file (the one kubectl apply takes)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the state, router config, logs and commands live (default ./.ondeck/<name>); "
                             "a restart with the same manifest resumes from it")
    parser.add_argument("--host", default="127.0.0.1", help="address the router listens on (default %(default)s)")
    parser.add_argument("--http-port", type=int, default=8080, help="router REST port, 0 for any free one (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="router gRPC port, 0 for any free one (default %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="P",
                        help="serve the controllers' metrics (docs/metrics.md) on /metrics at this port, 0 for any "
                             "free one (default: not served)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between controller ticks: scrape, rollout step, drift look (default %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="ignore the saved rollout and start it again")
    parser.add_argument("--analysis-templates", metavar="FILE",
                        help="cluster-wide analysis templates (YAML shaped like spec.analysis, as the operator's flag): "
                             "what steps' clusterScope: true references name")
    parser.add_argument("--secrets-dir", metavar="DIR",
                        help="Secret keys as files, DIR/<secret name>/<key> (Secrets mounted as volumes): the "
                             "retrain webhook's secretRef signs with one; without it a signed webhook is not sent")
    parser.add_argument("--no-view", dest="view", action="store_false",
                        help="print log lines instead of the live table (the default when stdout is not a terminal)")


def run(args) -> int:
    import signal

    def interrupt(signum, frame):  # until the loop runs: unwind, so that what started is stopped
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, previous)
    except KeyboardInterrupt:
        return 0  # stopped before anything was started
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args, previous) -> int:
    import signal
    import threading

    from ondeck.errors import UserError
    from ondeck.local import manifest
    from ondeck.local.controller import Controller
    from ondeck.local.state import StateDir, default_dir
    from ondeck.local.view import View, render
    from ondeck.spec import templates

    if not 0 < args.interval <= 60:
        raise UserError("--interval must be between 0 and 60 seconds")
    cluster = templates.load(args.analysis_templates) if args.analysis_templates else None
    deployment = manifest.load(args.manifest, cluster)
    state_dir = StateDir(args.state_dir or default_dir(deployment.name))
    view = View(live=None if args.view else False)
    controller = Controller(deployment, state_dir, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, interval=args.interval, fresh=args.fresh,
                            on_event=view.event, secrets_dir=args.secrets_dir)
    stop = threading.Event()
    try:
        controller.start()
        for sig in previous:  # from here on a signal ends the loop at its next wait
            signal.signal(sig, lambda signum, frame: stop.set())
        controller.run(stop, on_tick=view.update)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        controller.close()
    if view.live and controller.state:
        print("\n".join(render(controller.state)))
    print(f"ondeck run: stopped {deployment.name!r}; every child process is gone. State in {state_dir.path}", flush=True)
    return 0
