"""`ondeck serve DIR [DIR...]`: serve packages over the Open Inference Protocol (see docs/serving.md)."""
from __future__ import annotations

import argparse
import os

OVERRIDE_KEYS = ("max_batch_size", "max_batch_delay_us")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packages", nargs="+", metavar="DIR",
                        help="package directories; DIR:max_batch_size=8,max_batch_delay_us=500 overrides batching "
                             "for that package. The last version given for a name is its default")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    parser.add_argument("--http-port", type=int, default=8080, help="REST port, 0 for any free one (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port, 0 for any free one (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the ports (default %(default)s)")
    parser.add_argument("--variant", default=os.environ.get("ONDECK_VARIANT", "default"),
                        help="the 'variant' label on every metric (default: $ONDECK_VARIANT or 'default')")
    parser.add_argument("--max-batch-size", type=int, default=64,
                        help="rows per model run when merging concurrent requests; 1 turns batching off (default %(default)s)")
    parser.add_argument("--max-batch-delay-us", type=int, default=0,
                        help="longest a request waits for others to batch with, in microseconds; 0 merges only "
                             "requests that arrive together (default %(default)s)")
    parser.add_argument("--model-threads", type=int, default=1,
                        help="onnxruntime threads per model per worker (default %(default)s)")
    parser.add_argument("--grpc-threads", type=int, default=32,
                        help="gRPC calls in progress at once per worker (each waits on a thread) (default %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=8 << 20,
                        help="largest request body (and gRPC message) accepted, bigger gets 413 (default %(default)s)")
    parser.add_argument("--feedback-capacity", type=int, default=100_000,
                        help="recent predicted rows kept per model and worker for feedback to join (default %(default)s)")
    parser.add_argument("--payload-log-dir", help="directory for payload-<worker>.jsonl (payload logging is off without it)")
    parser.add_argument("--payload-log-fraction", type=float, default=0.0,
                        help="share of requests logged, 0..1 (default %(default)s)")
    parser.add_argument("--payload-log-max-bytes", type=int, default=64 << 20, help="rotate the log past this size")
    parser.add_argument("--payload-log-backups", type=int, default=3, help="rotated files kept (default %(default)s)")
    parser.add_argument("--payload-log-queue", type=int, default=10_000,
                        help="records waiting to be written before new ones are dropped (and counted)")
    parser.add_argument("--no-metrics", dest="metrics", action="store_false",
                        help="count nothing and answer /metrics 404: only to measure what metrics cost (rollouts "
                             "and drift detection read them)")
    parser.add_argument("--shutdown-delay", type=float, default=0.0,
                        help="seconds to keep serving after SIGTERM with readiness false (default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="longest wait for in-flight requests on shutdown (default %(default)s)")


def run(args) -> int:
    from ondeck.errors import UserError
    from ondeck.serving.server import ServeConfig, serve

    if not 0.0 <= args.payload_log_fraction <= 1.0:
        raise UserError("--payload-log-fraction must be between 0 and 1")
    if args.payload_log_fraction > 0 and not args.payload_log_dir:
        raise UserError("--payload-log-fraction needs --payload-log-dir")
    for flag in ("max_batch_size", "model_threads", "grpc_threads", "max_body_bytes", "payload_log_queue"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_batch_delay_us < 0:
        raise UserError("--max-batch-delay-us must not be negative")
    config = ServeConfig(
        models=[parse_package(p) for p in args.packages], host=args.host, http_port=args.http_port,
        grpc_port=args.grpc_port, workers=args.workers, variant=args.variant, max_batch_size=args.max_batch_size,
        max_batch_delay_us=args.max_batch_delay_us, model_threads=args.model_threads, grpc_threads=args.grpc_threads,
        max_body_bytes=args.max_body_bytes, feedback_capacity=args.feedback_capacity,
        payload_log_dir=args.payload_log_dir, payload_log_fraction=args.payload_log_fraction,
        payload_log_max_bytes=args.payload_log_max_bytes, payload_log_backups=args.payload_log_backups,
        payload_log_queue=args.payload_log_queue, shutdown_delay=args.shutdown_delay, drain_timeout=args.drain_timeout,
        metrics=args.metrics,
    )
    return serve(config)


def parse_package(arg: str):
    """``DIR`` or ``DIR:key=value,key=value`` (keys: max_batch_size, max_batch_delay_us)."""
    from ondeck.errors import UserError
    from ondeck.serving.server import ModelSpec

    path, sep, options = arg.rpartition(":")
    if not sep or "=" not in options:
        return ModelSpec(arg)
    spec = ModelSpec(path)
    for item in options.split(","):
        key, _, value = item.partition("=")
        if key not in OVERRIDE_KEYS:
            raise UserError(f"{arg}: unknown package option {key!r}; use {', '.join(OVERRIDE_KEYS)}")
        try:
            setattr(spec, key, int(value))
        except ValueError:
            raise UserError(f"{arg}: {key} must be an integer, got {value!r}") from None
    return spec
