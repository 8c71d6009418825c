"""`ondeck route` as a process: the current routes, hot reload, admin endpoints, both front-ends.

Reload swaps one immutable :class:`Routes` object. A request reads ``router.routes`` once when it
starts and keeps that snapshot to the end, so a reload never changes a request in flight, and
endpoints the new config still names keep their warm connections and health records.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import signal
import tempfile
from pathlib import Path

import orjson

from ondeck.errors import UserError
from ondeck.serving.router.config import ConfigError, RouterConfig
from ondeck.serving.router.forward import Routes
from ondeck.serving.router.metrics import RouterMetrics
from ondeck.serving.router.shadow_process import ShadowProcess
from ondeck.serving.router.workers import SNAPSHOT_SECONDS, WorkerGroup

log = logging.getLogger("ondeck.route")
JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
DRAIN_SECONDS = 10.0  # longest wait on shutdown for requests in flight


class Router:
    def __init__(self, config_path: str | Path, pair_log: str | Path | None = None, group: WorkerGroup | None = None):
        self.config_path = Path(config_path)
        self.group = group  # the sibling workers, with --workers > 1
        text = self._read()
        config = RouterConfig.from_text(text, source=str(self.config_path))
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()
        self.metrics = RouterMetrics(config.model)
        self.routes = Routes(config, {})
        self.metrics.set_weights({(v.name, v.version_label): v.weight for v in config.variants})
        # The shadow process's series: among the workers' snapshots with --workers, else in a directory of our own.
        if group is not None:
            self._own_dir, snapshot = None, group.state_dir / f"shadow-{group.index}.json"
        else:
            self._own_dir = tempfile.mkdtemp(prefix="ondeck-route-")
            snapshot = Path(self._own_dir) / "shadow.json"
        self.shadow = ShadowProcess(self.metrics, text, str(self.config_path), snapshot, pair_log)
        self.in_flight = 0  # REST requests being proxied, so that shutdown can let them finish

    def _read(self) -> str:
        try:
            return self.config_path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read router config {self.config_path}: {exc}") from None

    def reload(self, force: bool = True) -> bool:
        """Apply the config file if it parses; keep the current one (and raise) if not.

        ``force=False`` (the file watcher) skips a file whose content has not changed. Returns
        whether a new config was applied.
        """
        try:
            text = self._read()
            sha256 = hashlib.sha256(text.encode()).hexdigest()
            if not force and sha256 == self.sha256:
                return False
            config = RouterConfig.from_text(text, source=str(self.config_path))
        except ConfigError as exc:
            self.metrics.reloaded(ok=False)
            log.error("config reload rejected, keeping the current config: %s", exc)
            raise
        old = self.routes
        self.routes = Routes(config, old.endpoints)
        self.shadow.configure(text, str(self.config_path))
        self.sha256 = sha256
        self.metrics.set_model(config.model)
        self.metrics.set_weights({(v.name, v.version_label): v.weight for v in config.variants})
        self.metrics.reloaded(ok=True)
        for key, endpoint in old.endpoints.items():
            if key not in self.routes.endpoints:
                asyncio.get_running_loop().create_task(endpoint.close())
        log.info("config reloaded (sha256 %s): weights %s", sha256[:12], config.weights)
        return True

    async def watch(self, interval: float) -> None:
        """Reload when the file's content changes. Reading and hashing a few KB every ``interval``
        catches in-place writes, renames and Kubernetes' ConfigMap symlink swaps alike."""
        while True:
            await asyncio.sleep(interval)
            self.reload_quietly()

    def reload_quietly(self) -> None:
        """Apply the file if it changed; a bad one is logged and counted by reload(), and may be fixed later."""
        try:
            self.reload(force=False)
        except ConfigError:
            pass

    def admin(self, method: str, path: str) -> tuple[int, bytes, bytes]:
        """The router's own endpoints: (status, content type, body)."""
        if path == "/healthz":
            return self._only(method, "GET") or (200, JSON, orjson.dumps(
                {"status": "ok", "model": self.routes.config.model, "config_sha256": self.sha256}))
        if path == "/metrics":
            # with --workers, the shadow processes' snapshots are among the workers'
            peers = self.group.peer_snapshots() if self.group else self.shadow.snapshots()
            return self._only(method, "GET") or (200, PROMETHEUS, self.metrics.exposition(peers))
        if path == "/admin/config":
            return self._only(method, "GET") or (200, JSON, self._config_json())
        if path == "/admin/reload":
            wrong = self._only(method, "POST")
            if wrong:
                return wrong
            try:
                self.reload()
            except ConfigError as exc:
                return 400, JSON, orjson.dumps({"error": str(exc), "kept_config_sha256": self.sha256})
            if self.group:
                self.group.reload_all()  # the other workers check the file now rather than at their next poll
            return 200, JSON, self._config_json()
        return 404, JSON, orjson.dumps({"error": f"no router endpoint {path}"})

    def _config_json(self) -> bytes:
        return orjson.dumps({"source": str(self.config_path), "sha256": self.sha256,
                             "config": self.routes.config.to_dict()})

    @staticmethod
    def _only(method: str, allowed: str) -> tuple[int, bytes, bytes] | None:
        if method == allowed:
            return None
        return 405, JSON, orjson.dumps({"error": f"method {method} not allowed here (use {allowed})"})

    async def close(self) -> None:
        self.shadow.close()
        await asyncio.gather(*(e.close() for e in self.routes.endpoints.values()), return_exceptions=True)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)


async def serve(router: Router, host: str, http_port: int, grpc_port: int | None,
                poll_seconds: float = 1.0, ready=None) -> None:
    """Run both front-ends until SIGTERM/SIGINT. ``ready(http_port, grpc_port)`` is told the bound ports."""
    import grpc

    from ondeck.serving.router import grpc_front
    from ondeck.serving.router.http_front import ClientConnection
    from ondeck.serving.router.upstream import GRPC_OPTIONS

    loop = asyncio.get_running_loop()
    shared = router.group is not None  # workers share the ports; a lone router must notice a taken port
    try:
        http_server = await loop.create_server(lambda: ClientConnection(router), host, http_port, backlog=4096,
                                               reuse_address=True, reuse_port=shared)
    except OSError as exc:
        raise UserError(f"cannot listen for HTTP on {host}:{http_port}: {exc.strerror or exc}") from None
    bound_http = http_server.sockets[0].getsockname()[1]
    grpc_server, bound_grpc = None, None
    if grpc_port is not None:
        grpc_server = grpc.aio.server(options=GRPC_OPTIONS + (("grpc.so_reuseport", int(shared)),))
        grpc_server.add_generic_rpc_handlers((grpc_front.handler(router),))
        try:
            bound_grpc = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError as exc:
            http_server.close()
            raise UserError(f"cannot listen for gRPC on {host}:{grpc_port}: {exc}") from None
        await grpc_server.start()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = [loop.create_task(router.watch(poll_seconds))]
    if router.group is not None:
        background.append(loop.create_task(_every(SNAPSHOT_SECONDS, router.group.write_snapshot, router.metrics)))
    loop.add_signal_handler(signal.SIGHUP, router.reload_quietly)  # the usual "re-read your config" signal
    if ready is not None:
        ready(bound_http, bound_grpc)
    try:
        await stop.wait()
    finally:
        http_server.close()  # no new connections; requests in flight get their answers
        if grpc_server is not None:
            await grpc_server.stop(grace=DRAIN_SECONDS)
        deadline = loop.time() + DRAIN_SECONDS
        while router.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for task in background:
            task.cancel()
        await router.close()


async def _every(seconds: float, action, *args) -> None:
    while True:
        await asyncio.sleep(seconds)
        action(*args)
