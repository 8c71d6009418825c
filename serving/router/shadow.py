"""Shadow traffic: mirror a fraction of answered requests to the shadow variant, compare, log the pairs.

Everything here runs in the router's shadow process (:mod:`ondeck.serving.router.shadow_process`), after
the client has its answer. The queue is bounded and a full queue drops (counted), each mirrored request
has the shadow's own timeout, and a shadow variant that is down is found out by the same passive health
as any other, so a slow or dead shadow costs the client nothing but the hand-over of the mirror.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import orjson

from ondeck.serving.router.compare import CompareError, Pair, Predictions, compare, compare_merged, from_doc
from ondeck.serving.router.forward import Exchange, Routes
from ondeck.serving.router.merging import CANNOT, MAX_MERGED_ROWS, Mergeable, MergedGroup, merged_answer
from ondeck.serving.router.metrics import RouterMetrics
from ondeck.serving.router.upstream import Done, Endpoint, UpstreamError

# Mirrors compared per turn of the event loop. A 200 ms burst at 2,500 mirrors a second holds ~500 of them; compared
# all at once (~0.4 ms for 125) they held the rest of the loop. (When this ran in the router's own loop that was every client:
# the shadow target's p99 was ~1.11x the plain router's, ~1.03x with slices. Now it is the shadow process's reading
# of the pipe and its next burst.)
MIRRORS_PER_TURN = 32


class MirrorJob(Protocol):
    """One answered request to replay on the shadow; made by the front-end that served it."""

    protocol: str  # "http" or "grpc"
    request_id: str | None  # the client's x-request-id, if it sent one

    def frame(self, primary: str) -> bytes:
        """The mirror as the router hands it to the shadow process (see :mod:`shadow_process`), which reads it back."""

    def send(self, endpoint: Endpoint, timeout: float, connect_timeout: float, done: Done) -> None:
        """Start the request on ``endpoint``; ``done(answer, error)`` gets the outcome."""

    def primary(self) -> Predictions: ...

    def shadow(self, answer: Any) -> Predictions: ...


class PairLog:
    """JSON lines of compared pairs, buffered in memory and written by a background flush.

    Bounded twice: at most ``max_pending`` lines wait for a flush (more are dropped), and the file
    rotates to ``FILE.1`` when it passes ``max_bytes``.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = 100 * 1024 * 1024, max_pending: int = 10_000):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self._pending: list[bytes] = []
        self.dropped = 0

    def write(self, record: dict[str, Any]) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(orjson.dumps(record) + b"\n")

    def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            # One O_APPEND write per flush: with --workers N, several processes append whole lines.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"".join(lines))
            finally:
                os.close(fd)
        except OSError:
            self.dropped += len(lines)  # a full disk must not take the router down


class ShadowMirror:
    """Runs at most ``concurrency`` mirrored requests at once; up to ``queue_size`` more wait; the rest drop.

    Mirrored requests go out in bursts: the first one waits ``burst_seconds`` for others (or until
    ``MAX_MERGED_ROWS`` wait), then all that wait are sent at once (as many as ``concurrency`` allows).
    They reach the shadow in one moment and its adaptive batching runs them as one batch; sent one by
    one, as the primaries answer, each would cost the shadow a model run of its own, and on shared
    cores that is the client's CPU. Requests that can merge wait packed in a :class:`MergedGroup` of their
    form, the rest (V1, gRPC, ...) as they are. Callback-driven like the REST path (no worker tasks, no
    queue futures).
    """

    def __init__(self, metrics: RouterMetrics, pair_log: PairLog | None = None):
        self.metrics = metrics
        self.pair_log = pair_log
        self._waiting: deque[tuple[Routes, str, MirrorJob]] = deque()  # jobs that go on their own
        self._filling: dict[tuple, MergedGroup] = {}  # by form key: the group that mirrors of that form join
        self._full: deque[MergedGroup] = deque()  # groups that take no more, waiting to go
        self._queued = 0  # mirrors waiting, in all
        self._active = 0
        self._burst: asyncio.Handle | None = None  # the pending send of the waiting jobs

    def offer(self, routes: Routes, primary: str, job: MirrorJob) -> None:
        """Mirror ``job`` soon, or drop it (counted) when the queue is full; never blocks, never raises."""
        shadow = routes.config.shadow
        if self._queued >= shadow.queue_size:
            self.metrics.shadow(primary, shadow.variant, "dropped")
            return
        self._queued += 1
        try:
            part = _mergeable(job) if shadow.merge else CANNOT
        except Exception:  # noqa: BLE001 - a merging bug must not reach the client's connection: send it as it came
            part = CANNOT
        full = False
        if part.key is None:
            self._waiting.append((routes, primary, job))
        else:
            group = self._filling.get(part.key)
            if group is not None and (group.routes is not routes or group.rows + part.rows > MAX_MERGED_ROWS):
                self._full.append(group)  # a reload since, or no room: that group is done
                group = None
            if group is None:
                group = self._filling[part.key] = MergedGroup(routes, part.form, self.pair_log is not None)
            group.add(part, primary, job.primary_body, job.request_id if self.pair_log is not None else None)
            if group.rows >= MAX_MERGED_ROWS:
                self._full.append(self._filling.pop(part.key))
                full = True
        if (full or self._queued >= MAX_MERGED_ROWS) and self._burst is not None \
                and self._active < shadow.concurrency:
            # A full merged request's worth waits: waiting longer only fills the queue (at a high mirror rate
            # a 200 ms burst would pass ``queue_size``).
            self._burst.cancel()
            self._burst = None
            self._schedule(0.0)
        else:
            self._schedule(shadow.burst_seconds)

    def _schedule(self, delay: float) -> None:
        # Started from the loop rather than from offer(): the caller (the shadow process's frame reader) finishes its
        # slice of frames first, and the burst then takes all of them.
        if self._burst is None and self._queued:
            loop = asyncio.get_running_loop()
            self._burst = loop.call_later(delay, self._send_burst) if delay > 0 else loop.call_soon(self._send_burst)

    def _send_burst(self) -> None:
        self._burst = None
        self._full.extend(self._filling.values())  # all that wait go now
        self._filling.clear()
        while self._full or self._waiting:
            routes = self._full[0].routes if self._full else self._waiting[0][0]
            if self._active >= routes.config.shadow.concurrency:
                return  # the next finished job schedules the rest
            self._active += 1
            if self._full:
                group = self._full.popleft()
                self._queued -= group.count
                self._start_merged(group)
            else:
                self._queued -= 1
                self._start(*self._waiting.popleft())

    def _start(self, routes: Routes, primary: str, job: MirrorJob) -> None:
        shadow, timeouts = routes.config.shadow, routes.config.timeouts

        def send(endpoint: Endpoint, done: Done) -> None:
            job.send(endpoint, shadow.timeout_seconds, timeouts.connect_seconds, done)

        def finish(_variant, answer: Any, error: Exception | None) -> None:
            try:
                self._record(routes, primary, job, answer, error)
            except Exception:  # noqa: BLE001 - a bad answer must not stop the shadow
                self.metrics.shadow(primary, shadow.variant, "error")
            self._release()

        try:
            Exchange(routes, shadow.variant, job.protocol, send, finish, self.metrics, fallback=False).start()
        except Exception as exc:  # noqa: BLE001 - e.g. the shadow variant vanished in a reload
            finish(None, None, exc)

    def _start_merged(self, group: MergedGroup) -> None:
        """One request to the shadow for the whole group; each request is then compared and counted on its own."""
        routes = group.routes
        shadow, timeouts = routes.config.shadow, routes.config.timeouts
        _, data = group.request()

        def send(endpoint: Endpoint, done: Done) -> None:
            endpoint.http_send(data, False, timeouts.connect_seconds, shadow.timeout_seconds, done)

        def finish(_variant, answer: Any, error: Exception | None) -> None:
            if error is None:
                try:
                    if answer.status != 200:
                        raise CompareError(f"shadow answered HTTP {answer.status}")
                    merged = merged_answer(answer.body, group.rows)
                except Exception as exc:  # noqa: BLE001 - a bad answer (or a bug) must not stop the shadow
                    error = exc
            if error is None:
                self._compare_slice(group, merged, 0, 0)
                return
            try:  # every request of the group counted once, as an error or a timeout
                for primary in group.primaries:
                    self._count_failure(primary, shadow.variant, error)
            finally:
                self._release()

        try:
            Exchange(routes, shadow.variant, "http", send, finish, self.metrics, fallback=False).start()
        except Exception as exc:  # noqa: BLE001 - see _start
            finish(None, None, exc)

    def _compare_slice(self, group: MergedGroup, merged: Predictions, first: int, start: int) -> None:
        """Compare and count ``MIRRORS_PER_TURN`` requests of a merged group from request ``first`` (whose rows start at
        row ``start`` of the merged answer), and leave the rest to the next turn of the loop."""
        last = min(first + MIRRORS_PER_TURN, group.count)
        rows = group.request_rows(first, last)
        shadow = group.routes.config.shadow.variant
        try:
            try:
                docs = group.answers(first, last)
                pairs = compare_merged(docs, rows, merged, start)
            except Exception:  # noqa: BLE001 - a bug must not stop the shadow: these requests count as errors
                for primary in group.primaries[first:last]:
                    self.metrics.shadow(primary, shadow, "error")
            else:
                self._record_merged(group, first, docs, rows, merged, pairs, start)
        finally:
            if last < group.count:
                asyncio.get_running_loop().call_soon(self._compare_slice, group, merged, last, start + sum(rows))
            else:
                self._release()

    def _release(self) -> None:
        self._active -= 1
        # Jobs that wait with no burst pending were held back by ``concurrency``: a backlog, so the freed
        # slot goes on at once. From the loop: a shadow that fails fast must not recurse once per waiting job.
        self._schedule(0.0)

    def _count_failure(self, primary: str, shadow: str, error: Exception) -> None:
        timeout = isinstance(error, UpstreamError) and error.kind == "timeout"
        self.metrics.shadow(primary, shadow, "timeout" if timeout else "error")

    def _record(self, routes: Routes, primary: str, job: MirrorJob, answer: Any, error: Exception | None) -> None:
        """Count and log the outcome of one mirrored request sent on its own."""
        shadow = routes.config.shadow.variant
        if error is not None:
            self._count_failure(primary, shadow, error)
            return
        try:
            primary_out, shadow_out = job.primary(), job.shadow(answer)
            pair = compare(primary_out, shadow_out)
        except CompareError:
            self.metrics.shadow(primary, shadow, "error")
            return
        self.metrics.compared(primary, shadow, [pair])
        if self.pair_log is not None:
            self._log(routes, primary, job.protocol, job.request_id, primary_out, shadow_out, pair)

    def _record_merged(self, group: MergedGroup, first: int, docs: list[Any], rows: list[int], merged: Predictions,
                       pairs: list[Pair | CompareError], start: int) -> None:
        """Count and log the outcomes of requests ``first`` on of a merged group, whose rows start at row ``start``
        of the merged answer: each request on its own, counted per primary at once."""
        routes = group.routes
        shadow = routes.config.shadow.variant
        compared: dict[str, list[Pair]] = {}
        for i, (primary, doc, n, pair) in enumerate(zip(group.primaries[first:], docs, rows, pairs), first):
            if isinstance(pair, CompareError):
                self.metrics.shadow(primary, shadow, "error")
            else:
                compared.setdefault(primary, []).append(pair)
                if self.pair_log is not None:
                    self._log(routes, primary, "http", group.request_ids[i], from_doc(doc), merged.part(start, n), pair)
            start += n
        for primary, done in compared.items():
            self.metrics.compared(primary, shadow, done)

    def _log(self, routes: Routes, primary: str, protocol: str, request_id: str | None, primary_out: Predictions,
             shadow_out: Predictions, pair: Pair) -> None:
        self.pair_log.write({
            "time": time.time(), "request_id": request_id or primary_out.request_id or uuid.uuid4().hex,
            "model": routes.config.model, "protocol": protocol, "primary": primary,
            "shadow": routes.config.shadow.variant, "primary_output": _output(primary_out),
            "shadow_output": _output(shadow_out), **pair.to_dict(),
        })

    def close(self) -> None:
        """Forget waiting jobs and write the pairs logged so far."""
        self._waiting.clear()
        self._filling.clear()
        self._full.clear()
        self._queued = 0
        if self._burst is not None:
            self._burst.cancel()
            self._burst = None
        if self.pair_log is not None:
            self.pair_log.flush()


def _mergeable(job: MirrorJob) -> Mergeable:
    mergeable = getattr(job, "mergeable", None)  # only plain REST jobs can merge
    return mergeable() if mergeable is not None else CANNOT


def _output(p: Predictions) -> dict[str, Any]:
    return {"classes": list(p.classes) if p.classes is not None else None,
            "scores": list(p.scores) if p.scores is not None else None}
