"""The shadow's work in a process of its own, at idle CPU priority: the router only hands mirrors over.

Mirroring in the router's own process cost the client ~6% of its throughput at a 10% shadow on the
router benchmark's two shared cores, most of it not the shadow's own code: holding, sending and
comparing the mirrors made the router's event loop pass requests on later and more spread out, and
the stable server, which then ran smaller batches, paid about as much again (benchmarks/router/README.md).
So the router's part of a mirror is now a few appends to a byte buffer, written to a pipe at most every
``FLUSH_SECONDS``; a child process (``python -m ondeck.serving.router.shadow_process``) reads them and
runs :class:`~ondeck.serving.router.shadow.ShadowMirror` on them: bursts, merging, sending, comparing,
the pair log. It runs as ``SCHED_IDLE`` (``nice 19`` where that is refused), so it gets a core only when
no client request wants one: a busy router drops mirrors (counted) before it slows a client.

Bounded at every step: the router's buffer (``MAX_BUFFERED_BYTES``, then it drops and counts), the pipe,
and the child's own queue (``shadow.queue_size``, then it drops and counts). The child's series (compared,
agreement, differences, its drops, timeouts and errors, the shadow endpoints' health) reach the router's
``/metrics`` as a snapshot file it writes every ``SNAPSHOT_SECONDS``, the way ``--workers`` share theirs. A child that dies is started again at
the next mirror (at most once every ``RESTART_SECONDS``); the mirrors it held are lost, as are a
stopping router's, which is what mirrors are for.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ondeck.serving.router.config import RouterConfig
from ondeck.serving.router.forward import Routes
from ondeck.serving.router.metrics import RouterMetrics, Snapshot

if TYPE_CHECKING:
    from ondeck.serving.router.shadow import MirrorJob

log = logging.getLogger("ondeck.route")

FLUSH_SECONDS = 0.02  # mirrors wait this long in the router's buffer: one write() for ~45 of them at 2,200 a second
MAX_BUFFERED_BYTES = 8 * 1024 * 1024  # ~8,000 one-row V2 mirrors; beyond it the router drops
PIPE_BYTES = 1024 * 1024  # asked of the kernel (F_SETPIPE_SZ); its default is 64 KB
SNAPSHOT_SECONDS = 0.25
RESTART_SECONDS = 1.0
STOP_SECONDS = 2.0  # how long a stopping router waits for the child to write its last pairs and series
FRAMES_PER_TURN = 256  # half a full merged request (MAX_MERGED_ROWS one-row mirrors)
MAX_UNREAD_BYTES = 1024 * 1024

# A frame: kind, then four lengths, then the four parts.
#   b"C" config: text, source, -, -
#   b"H" REST mirror: primary variant, the upstream request as sent, the primary's answer body, -
#   b"G" gRPC mirror: primary variant, ModelInferRequest bytes, the primary's ModelInferResponse bytes, metadata (pickle)
_HEAD = struct.Struct("<c4I")


def frame(kind: bytes, a: bytes = b"", b: bytes = b"", c: bytes = b"", d: bytes = b"") -> bytes:
    return _HEAD.pack(kind, len(a), len(b), len(c), len(d)) + a + b + c + d


class ShadowProcess:
    """The router's side: hands each mirror to the child process (started on the first one), or drops it."""

    def __init__(self, metrics: RouterMetrics, config_text: str, source: str, snapshot_path: str | os.PathLike,
                 pair_log: str | os.PathLike | None = None):
        self.metrics = metrics
        self.snapshot_path = Path(snapshot_path)
        self.pair_log = pair_log
        self._config = frame(b"C", config_text.encode(), source.encode())
        self._buffer = bytearray()
        self._proc: subprocess.Popen | None = None
        self._fd: int | None = None  # the pipe's write end, non-blocking
        self._flush: asyncio.Handle | None = None
        self._writing = False  # waiting for the pipe to take more (add_writer)
        self._started = -RESTART_SECONDS

    def configure(self, config_text: str, source: str) -> None:
        """A reload: mirrors offered from now on are the new config's (frames are read in order)."""
        self._config = frame(b"C", config_text.encode(), source.encode())
        if self._fd is not None:
            self._put(self._config)

    def offer(self, routes: Routes, primary: str, job: "MirrorJob") -> None:
        """Pass ``job`` on to the child, or drop it (counted) when the child cannot take it; never blocks or raises."""
        if len(self._buffer) >= MAX_BUFFERED_BYTES or (self._fd is None and not self._start()):
            self.metrics.shadow(primary, routes.config.shadow.variant, "dropped")
            return
        try:
            part = job.frame(primary)
        except Exception:  # noqa: BLE001 - a mirror that cannot be framed must not reach the client's connection
            self.metrics.shadow(primary, routes.config.shadow.variant, "error")
            return
        self._put(part)

    def _put(self, data: bytes) -> None:
        self._buffer += data
        if self._flush is None and not self._writing:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._write)

    def _start(self) -> bool:
        now = time.monotonic()
        if now - self._started < RESTART_SECONDS:
            return False
        self._started = now
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                import fcntl

                fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # room for a burst while the child waits for a core
            except OSError:
                pass
            argv = [sys.executable, "-m", "ondeck.serving.router.shadow_process", "--snapshot", str(self.snapshot_path)]
            if self.pair_log:
                argv += ["--pair-log", str(self.pair_log)]
            self._proc = subprocess.Popen(argv, stdin=read)
            idle_priority(self._proc.pid)  # from the parent, so that even its start-up (imports) takes only idle CPU
        except OSError as exc:
            os.close(write)
            log.error("cannot start the shadow process: %s", exc)
            return False
        finally:
            os.close(read)
        os.set_blocking(write, False)
        self._fd = write
        self._buffer = bytearray(self._config)
        return True

    def _write(self) -> None:
        self._flush = None
        if self._fd is None:
            self._buffer.clear()
            return
        try:
            n = os.write(self._fd, self._buffer)
        except BlockingIOError:
            n = 0
        except OSError:  # the child died: what it and the buffer held is lost, the next mirror starts another
            log.error("the shadow process exited (%s); starting another at the next mirror", self._proc.poll())
            self._lost()
            return
        del self._buffer[:n]
        loop = asyncio.get_running_loop()
        if self._buffer and not self._writing:
            self._writing = True
            loop.add_writer(self._fd, self._write)
        elif not self._buffer and self._writing:
            self._writing = False
            loop.remove_writer(self._fd)

    def _lost(self) -> None:
        if self._writing:
            asyncio.get_running_loop().remove_writer(self._fd)
            self._writing = False
        os.close(self._fd)
        self._fd = None
        self._buffer.clear()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            # its series so far stay counted: kept beside the next child's under a name of their own
            if self.snapshot_path.exists():
                os.replace(self.snapshot_path, self.snapshot_path.with_name(
                    f"{self.snapshot_path.stem}-lost-{self._proc.pid}{self.snapshot_path.suffix}"))
            self._proc = None

    def snapshots(self) -> list[Snapshot]:
        """The series of the child (at most ``SNAPSHOT_SECONDS`` old) and of those lost before it.

        (With ``--workers`` the router reads them among its siblings' snapshots instead.)
        """
        out = []
        path = self.snapshot_path
        for p in path.parent.glob(f"{path.stem}*{path.suffix}"):
            try:
                out.append(orjson.loads(p.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                pass  # renamed between the listing and the read (a child lost just now)
        return out

    def close(self) -> None:
        """Hand over what the pipe takes of the buffer now, then let the child write its last pairs and series."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._fd is None:
            return
        if self._writing:
            asyncio.get_running_loop().remove_writer(self._fd)
            self._writing = False
        try:  # never blocking: a child that waits for a core must not hold up a stopping router
            os.write(self._fd, self._buffer)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        try:  # end of input: it stops, flushing the pair log and its series
            self._proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# --- the child ------------------------------------------------------------------------------------


class FrameReader(asyncio.Protocol):
    """Reads frames from the router and offers each mirror to the shadow: its queue bounds them (and drops, counted).

    Frames are taken ``FRAMES_PER_TURN`` at a time, one turn of the loop each, so that a backlog (the pipe
    fills while this process waits for a core: ~1,000 mirrors a megabyte) goes out in full merged requests as
    it is read, rather than all reaching the queue before the first burst can leave and overflowing it. Reading
    pauses while more than ``MAX_UNREAD_BYTES`` wait here; the pipe and then the router's buffer hold the rest.
    """

    def __init__(self, mirror, metrics: RouterMetrics, done: asyncio.Future):
        self.mirror = mirror
        self.metrics = metrics
        self.done = done
        self.routes: Routes | None = None
        self.transport: asyncio.ReadTransport | None = None
        self._data = bytearray()
        self._taking: asyncio.Handle | None = None
        self._paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > MAX_UNREAD_BYTES and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        if self._taking is None:
            self._take()

    def _take(self) -> None:
        self._taking = None
        buf, at, end, taken = self._data, 0, len(self._data), 0
        while end - at >= _HEAD.size and taken < FRAMES_PER_TURN:
            kind, a, b, c, d = _HEAD.unpack_from(buf, at)
            size = _HEAD.size + a + b + c + d
            if end - at < size:
                break
            p = at + _HEAD.size
            parts = bytes(buf[p:p + a]), bytes(buf[p + a:p + a + b]), bytes(buf[p + a + b:p + a + b + c]), \
                bytes(buf[p + a + b + c:p + size - _HEAD.size])
            at += size
            taken += 1
            try:
                self._frame(kind, *parts)
            except Exception:  # noqa: BLE001 - one bad frame (a bug) must not stop the shadow
                log.exception("shadow process: cannot take a %r frame", kind)
        del buf[:at]
        if taken == FRAMES_PER_TURN:  # maybe more: after the bursts these frames started (call_soon is in order)
            self._taking = asyncio.get_running_loop().call_soon(self._take)
        elif self._paused:
            self._paused = False
            self.transport.resume_reading()

    def _frame(self, kind: bytes, a: bytes, b: bytes, c: bytes, d: bytes) -> None:
        if kind == b"C":
            config = RouterConfig.from_text(a.decode(), source=b.decode())
            self.routes = Routes(config, self.routes.endpoints if self.routes else {})
            self.metrics.set_model(config.model)
            return
        if self.routes is None or self.routes.config.shadow is None:
            return  # mirrored under a config that a reload since took the shadow out of
        if kind == b"H":
            from ondeck.serving.router.http_front import HttpMirror

            job = HttpMirror.from_frame(b, c)
        elif kind == b"G":
            from ondeck.serving.router.grpc_front import GrpcMirror

            job = GrpcMirror(b, pickle.loads(d), c)
        else:
            raise ValueError(f"unknown frame kind {kind!r}")
        self.mirror.offer(self.routes, a.decode(), job)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


def idle_priority(pid: int) -> None:
    """Let ``pid`` run only on CPU no one else wants (SCHED_IDLE); where that is refused, at the lowest nice."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)
        except OSError:
            pass


def _write_snapshot(path: Path, metrics: RouterMetrics) -> None:
    tmp = path.with_name("." + path.name)
    tmp.write_bytes(orjson.dumps(metrics.snapshot()))
    os.replace(tmp, path)


async def _run(snapshot: Path, pair_log: str | None) -> None:
    from ondeck.serving.router.shadow import PairLog, ShadowMirror

    loop = asyncio.get_running_loop()
    metrics = RouterMetrics("")
    mirror = ShadowMirror(metrics, PairLog(pair_log) if pair_log else None)
    done = loop.create_future()
    transport, _ = await loop.connect_read_pipe(lambda: FrameReader(mirror, metrics, done), os.fdopen(0, "rb", 0))
    last = None
    try:
        while not done.done():
            await asyncio.wait([done], timeout=SNAPSHOT_SECONDS)
            if mirror.pair_log is not None:
                mirror.pair_log.flush()
            state = metrics.snapshot()
            if state != last:
                _write_snapshot(snapshot, metrics)
                last = state
    finally:
        transport.close()
        mirror.close()  # the pairs compared so far are written
        _write_snapshot(snapshot, metrics)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ondeck.serving.router.shadow_process",
                                 description="the shadow's half of `ondeck route` (started by it; reads mirrors on stdin)")
    ap.add_argument("--snapshot", required=True, help="where to write this process's series for the router's /metrics")
    ap.add_argument("--pair-log", help="the compared pairs' JSON lines")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import uvloop

    uvloop.run(_run(Path(args.snapshot), args.pair_log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
