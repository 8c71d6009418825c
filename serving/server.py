"""Assembles ``ondeck serve``: loads the packages, starts REST + gRPC on one event loop, drains on SIGTERM.

Workers: with ``--workers 1`` (the default and the fast path) this process serves. With N > 1 it
becomes a small supervisor that spawns N fresh worker processes (``python -m
ondeck.serving.server``); each binds the same ports with SO_REUSEPORT, so the kernel spreads
connections. Metrics and recent predictions live in shared memory the supervisor creates
(inherited as file descriptors), so ``/metrics`` on any worker is complete and feedback on any
worker joins predictions served by all. A worker that dies is restarted.

Shutdown (SIGTERM or SIGINT): ready turns false at once (``/v2/health/ready`` 503, gRPC
ServerReady false), the server keeps answering for ``shutdown_delay`` seconds (time for a load
balancer to notice), stops accepting, lets in-flight requests finish (queued batches run at
once), closes idle connections, writes the last payload-log records and exits 0.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ondeck.errors import UserError

STATS_FLUSH_SECONDS = 0.25
RESTART_WINDOW_SECONDS = 5.0


@dataclass
class ModelSpec:
    path: str
    max_batch_size: int | None = None   # overrides ServeConfig's for this package
    max_batch_delay_us: int | None = None


@dataclass
class ServeConfig:
    models: list[ModelSpec]
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    workers: int = 1
    variant: str = "default"
    max_batch_size: int = 64
    max_batch_delay_us: int = 0
    model_threads: int = 1
    grpc_threads: int = 32
    max_body_bytes: int = 8 << 20
    feedback_capacity: int = 100_000
    payload_log_dir: str | None = None
    payload_log_fraction: float = 0.0
    payload_log_max_bytes: int = 64 << 20
    payload_log_backups: int = 3
    payload_log_queue: int = 10_000
    shutdown_delay: float = 0.0
    drain_timeout: float = 30.0
    metrics: bool = True

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        raw = json.loads(text)
        raw["models"] = [ModelSpec(**m) for m in raw["models"]]
        return cls(**raw)


def serve(config: ServeConfig) -> int:
    """Run the server until SIGTERM; returns the exit code."""
    from ondeck.serving.feedback import SharedRings
    from ondeck.serving.metrics import Layout, SharedCounters

    if config.workers < 1:
        raise UserError("--workers must be at least 1")
    if config.workers > 1 and (config.http_port == 0 or config.grpc_port == 0):
        raise UserError("with --workers > 1 the ports must be fixed (not 0): every worker binds the same ones")
    models, shapes = _load(config)
    layout = Layout(config.variant, shapes)
    counters = SharedCounters(layout, config.workers)
    rings = SharedRings(len(models), config.workers, config.feedback_capacity)
    if config.workers == 1:
        return _run_loop(_worker(config, 0, models, shapes, layout, counters, rings))
    del models
    return _supervise(config, counters.fd, rings.fd)


def _load(config: ServeConfig):
    from ondeck.package.load import load
    from ondeck.serving.metrics import ModelShape

    if not config.models:
        raise UserError("give at least one package directory to serve")
    models = [load(spec.path, threads=config.model_threads) for spec in config.models]
    seen = set()
    for m in models:
        if (m.name, m.version) in seen:
            raise UserError(f"{m.name}:{m.version} is given twice")
        seen.add((m.name, m.version))
    shapes = []
    for spec, m in zip(config.models, models):
        try:
            shapes.append(ModelShape.of(m))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{spec.path}: reference.json is missing or incomplete ({type(exc).__name__}: {exc})") from None
    return models, shapes


def _run_loop(main) -> int:
    import uvloop

    return uvloop.run(main)


async def _worker(config: ServeConfig, index: int, models, shapes, layout, counters, rings) -> int:
    from ondeck.serving import grpc as grpc_front
    from ondeck.serving.batching import BatchPolicy
    from ondeck.serving.dataplane import DataPlane, ServedModel
    from ondeck.serving.metrics import ModelStats, NullStats
    from ondeck.serving.payload_log import PayloadLog
    from ondeck.serving.rest import RestApp

    values = counters.worker(index)
    stats_class = ModelStats if config.metrics else NullStats
    served = []
    for k, (spec, model, shape) in enumerate(zip(config.models, models, shapes)):
        policy = BatchPolicy(
            spec.max_batch_size if spec.max_batch_size is not None else config.max_batch_size,
            spec.max_batch_delay_us if spec.max_batch_delay_us is not None else config.max_batch_delay_us,
        )
        stats = stats_class(values, layout.models[model.name, model.version], shape)
        served.append(ServedModel(model, shape, stats, rings.store(k, index), policy))
    log = None
    if config.payload_log_dir and config.payload_log_fraction > 0:
        log = PayloadLog(config.payload_log_dir, index, config.payload_log_fraction,
                         max_bytes=config.payload_log_max_bytes, backups=config.payload_log_backups,
                         queue_size=config.payload_log_queue,
                         on_written=lambda stats: stats.add(stats.s.payload_records))
    plane = DataPlane(served, stats_class(values, layout.unknown), counters, config.variant, log)
    reuse = config.workers > 1
    rest = RestApp(plane, config.max_body_bytes, config.metrics)
    try:
        http_server = await rest.start(config.host, config.http_port, reuse)
    except OSError as exc:  # port taken, address not local: the user's to fix, in one line
        raise UserError(f"cannot listen for HTTP on {config.host}:{config.http_port}: {exc.strerror or exc}") from None
    loop = asyncio.get_running_loop()
    grpc_server, grpc_port = grpc_front.start(plane, loop, config.host, config.grpc_port, threads=config.grpc_threads,
                                              max_message_bytes=config.max_body_bytes, reuse_port=reuse)
    http_port = http_server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def flush_stats() -> None:  # bins of buffered rows reach the shared counters within this period
        plane.flush_stats()
        timer[0] = loop.call_later(STATS_FLUSH_SECONDS, flush_stats)

    timer = [loop.call_later(STATS_FLUSH_SECONDS, flush_stats)]
    names = ", ".join(f"{s.name}:{s.version}" for s in served)
    print(f"ondeck serve: worker {index} (pid {os.getpid()}) serving {names} "
          f"http={config.host}:{http_port} grpc={config.host}:{grpc_port} variant={config.variant}", flush=True)

    await stop.wait()
    plane.ready = False
    if config.shutdown_delay > 0:
        await asyncio.sleep(config.shutdown_delay)
    http_server.close()
    # gRPC's stop waits on a thread for calls in flight, which this loop answers meanwhile.
    grpc_stopped = loop.run_in_executor(None, lambda: grpc_server.stop(config.drain_timeout).wait())
    rest.close_idle()
    try:
        await asyncio.wait_for(plane.drained(), config.drain_timeout)
    except asyncio.TimeoutError:
        print(f"ondeck serve: worker {index}: {plane.in_flight} requests still running after "
              f"{config.drain_timeout}s; exiting anyway", file=sys.stderr, flush=True)
    await grpc_stopped
    timer[0].cancel()
    plane.flush_stats()
    if log is not None:
        log.close(config.drain_timeout)
    return 0


def _supervise(config: ServeConfig, metrics_fd: int, feedback_fd: int) -> int:
    """Spawn the workers, restart any that dies, pass SIGTERM/SIGINT on, exit 0 when all exited cleanly."""
    stopping = False
    workers: dict[int, tuple[int, subprocess.Popen, float]] = {}  # pid -> (index, process, started)

    def spawn(index: int) -> None:
        cmd = [sys.executable, "-m", "ondeck.serving.server", "--worker", str(index),
               "--metrics-fd", str(metrics_fd), "--feedback-fd", str(feedback_fd), "--config", config.to_json()]
        proc = subprocess.Popen(cmd, pass_fds=(metrics_fd, feedback_fd))
        workers[proc.pid] = (index, proc, time.monotonic())

    def forward(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for _, proc, _ in workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(config.workers):
        spawn(i)
    code = 0
    while workers:
        pid, status = os.waitpid(-1, 0)
        if pid not in workers:
            continue
        index, proc, started = workers.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc
        if stopping:
            code = code or (rc if rc > 0 else 0)
        elif time.monotonic() - started < RESTART_WINDOW_SECONDS:
            print(f"ondeck serve: worker {index} exited with {rc} right after starting; stopping", file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
            code = 1
        else:
            print(f"ondeck serve: worker {index} exited with {rc}; restarting it", file=sys.stderr, flush=True)
            spawn(index)
    return code


def _worker_main(argv: list[str]) -> int:
    """Entry point of a spawned worker (see :func:`_supervise`)."""
    import argparse

    from ondeck.serving.feedback import SharedRings
    from ondeck.serving.metrics import Layout, SharedCounters

    p = argparse.ArgumentParser()
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--metrics-fd", type=int, required=True)
    p.add_argument("--feedback-fd", type=int, required=True)
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    config = ServeConfig.from_json(args.config)
    models, shapes = _load(config)
    layout = Layout(config.variant, shapes)
    counters = SharedCounters(layout, config.workers, fd=args.metrics_fd)
    rings = SharedRings(len(models), config.workers, config.feedback_capacity, fd=args.feedback_fd)
    return _run_loop(_worker(config, args.worker, models, shapes, layout, counters, rings))


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
