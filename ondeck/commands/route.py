"""`ondeck route`: split traffic between model variants (weights, header and sticky rules, shadow)."""
from __future__ import annotations

import argparse


def configure(parser) -> None:
    parser.add_argument("--config", required=True, metavar="ROUTER.yaml",
                        help="router config (variants, endpoints, rules, shadow); reloaded when it changes")
    parser.add_argument("--http-port", type=int, default=8080, metavar="P", help="REST port (default 8080; 0 picks one)")
    parser.add_argument("--grpc-port", type=int, default=None, metavar="G", help="gRPC port (default: no gRPC)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--pair-log", metavar="FILE", help="write compared shadow pairs here as JSON lines")
    parser.add_argument("--poll-seconds", type=float, default=1.0, metavar="S",
                        help="how often to check the config file for changes (default 1)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="router processes sharing the ports (default 1); more than 1 needs fixed ports")
    # set by the supervisor on the workers it starts
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-state", help=argparse.SUPPRESS)


def run(args) -> int:
    import logging
    import sys

    from ondeck.errors import UserError
    from ondeck.serving.router.config import RouterConfig

    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.workers > 1 and args.worker_index is None:
        if args.http_port == 0 or args.grpc_port == 0:
            raise UserError("with --workers > 1 the ports must be fixed (not 0): every worker binds the same ones")
        RouterConfig.load(args.config)  # a bad config stops here, once, rather than in every worker
        from ondeck.serving.router.workers import supervise

        return supervise(_worker_argv(args), args.workers)

    import uvloop

    from ondeck.serving.router.server import Router, serve
    from ondeck.serving.router.workers import WorkerGroup

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    group = WorkerGroup(args.worker_index, args.worker_state) if args.worker_index is not None else None
    router = Router(args.config, pair_log=args.pair_log, group=group)  # a bad config stops here: one line, exit 2
    worker = f" (worker {args.worker_index})" if group else ""

    def ready(http_port: int, grpc_port: int | None) -> None:
        grpc_text = f", gRPC on {args.host}:{grpc_port}" if grpc_port is not None else ""
        print(f"ondeck route: model {router.routes.config.model!r}, REST on {args.host}:{http_port}{grpc_text}{worker}",
              file=sys.stderr, flush=True)

    uvloop.run(serve(router, args.host, args.http_port, args.grpc_port, args.poll_seconds, ready))
    return 0


def _worker_argv(args) -> list[str]:
    argv = ["--config", args.config, "--http-port", str(args.http_port), "--host", args.host,
            "--poll-seconds", str(args.poll_seconds)]
    if args.grpc_port is not None:
        argv += ["--grpc-port", str(args.grpc_port)]
    if args.pair_log:
        argv += ["--pair-log", args.pair_log]
    return argv
