"""Shadow traffic: mirror a fraction of answered requests to the shadow variant, compare, log the pairs.

Everything here happens after the client has its answer. The queue is bounded and a full queue
drops (counted), each mirrored request has the shadow's own timeout, and a shadow variant that is
down is found out by the same passive health as any other, so a slow or dead shadow costs the
client nothing but the queue push.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import orjson

from ondeck.serving.router.compare import CompareError, Pair, Predictions, compare, compare_merged
from ondeck.serving.router.forward import Exchange, Routes
from ondeck.serving.router.merging import CANNOT, MAX_MERGED_ROWS, Mergeable, merged_answer, merged_request
from ondeck.serving.router.metrics import RouterMetrics
from ondeck.serving.router.upstream import Done, Endpoint, UpstreamError

# Mirrors cut for merging, or compared, per turn of the event loop. A 50 ms burst at 2,500 mirrors a second held ~125
# of them (a 200 ms one ~500), and cutting them (~0.3 ms) or comparing them (~0.4 ms) all at once held every client of
# the router while the replicas ran dry: the shadow target's p99 was ~1.11x the plain router's, ~1.03x since. The work
# stays in the burst, a slice at a time: done as each request was answered instead, it ran cold between requests and
# cost more CPU.
MIRRORS_PER_TURN = 32


class MirrorJob(Protocol):
    """One answered request to replay on the shadow; made by the front-end that served it."""

    protocol: str  # "http" or "grpc"
    request_id: str | None  # the client's x-request-id, if it sent one

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
    cores that is the client's CPU. Callback-driven like the REST path (no worker tasks, no queue futures).
    """

    def __init__(self, metrics: RouterMetrics, pair_log: PairLog | None = None):
        self.metrics = metrics
        self.pair_log = pair_log
        self._waiting: deque[tuple[Routes, str, MirrorJob]] = deque()
        self._active = 0
        self._burst: asyncio.Handle | None = None  # the pending send of the waiting jobs
        self._cut = 0  # waiting jobs, from the first, whose merge is worked out (see _cut_slice)

    def offer(self, routes: Routes, primary: str, job: MirrorJob) -> None:
        """Mirror ``job`` soon, or drop it (counted) when the queue is full; never blocks, never raises."""
        shadow = routes.config.shadow
        if len(self._waiting) >= shadow.queue_size:
            self.metrics.shadow(primary, shadow.variant, "dropped")
            return
        self._waiting.append((routes, primary, job))
        if len(self._waiting) >= MAX_MERGED_ROWS and self._burst is not None and self._active < shadow.concurrency:
            # A full merged request's worth waits: waiting longer only fills the queue (at a high mirror rate
            # a 200 ms burst would pass ``queue_size``).
            self._burst.cancel()
            self._burst = None
            self._schedule(0.0)
        else:
            self._schedule(shadow.burst_seconds)

    def _schedule(self, delay: float) -> None:
        # Started from the loop rather than from offer(): the client's connection moves on first.
        if self._burst is None and self._waiting:
            loop = asyncio.get_running_loop()
            self._burst = loop.call_later(delay, self._send_burst) if delay > 0 else loop.call_soon(self._send_burst)

    def _send_burst(self) -> None:
        self._burst = None
        if self._cut_slice():  # more to cut: the rest on the next turns, the router's clients in between
            self._burst = asyncio.get_running_loop().call_soon(self._send_burst)
            return
        self._cut = 0  # all are cut; what stays waiting is re-checked next time (each job keeps its cut)
        while self._waiting:
            routes = self._waiting[0][0]
            if self._active >= routes.config.shadow.concurrency:
                return  # the next finished job schedules the rest
            self._active += 1
            group = self._take_group() if routes.config.shadow.merge else [self._waiting.popleft()]
            if len(group) > 1:
                self._start_merged(routes, group)
            else:
                self._start(*group[0])

    def _cut_slice(self) -> bool:
        """Work out how the next ``MIRRORS_PER_TURN`` waiting jobs merge; True while more wait to be cut."""
        if not self._waiting or not self._waiting[0][0].config.shadow.merge:
            return False
        end = min(self._cut + MIRRORS_PER_TURN, len(self._waiting))
        for _, _, job in itertools.islice(self._waiting, self._cut, end):
            _mergeable(job)
        self._cut = end
        return end < len(self._waiting)

    def _take_group(self) -> list[tuple[Routes, str, MirrorJob]]:
        """The first waiting job and every waiting job that merges with it (see :mod:`merging`), in order."""
        first = self._waiting.popleft()
        key = _mergeable(first[2]).key
        if key is None:
            return [first]
        group, rest, rows = [first], deque(), _mergeable(first[2]).rows
        for item in self._waiting:
            part = _mergeable(item[2])
            if item[0] is first[0] and part.key == key and rows + part.rows <= MAX_MERGED_ROWS:
                group.append(item)
                rows += part.rows
            else:
                rest.append(item)
        self._waiting = rest
        return group

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

    def _start_merged(self, routes: Routes, group: list[tuple[Routes, str, MirrorJob]]) -> None:
        """One request to the shadow for the whole group; each job is then compared and counted on its own."""
        shadow, timeouts = routes.config.shadow, routes.config.timeouts
        parts = [_mergeable(job) for _, _, job in group]
        _, data = merged_request(parts[0].key[0], parts)

        def send(endpoint: Endpoint, done: Done) -> None:
            endpoint.http_send(data, False, timeouts.connect_seconds, shadow.timeout_seconds, done)

        def finish(_variant, answer: Any, error: Exception | None) -> None:
            if error is None:
                try:
                    if answer.status != 200:
                        raise CompareError(f"shadow answered HTTP {answer.status}")
                    merged = merged_answer(answer.body, sum(p.rows for p in parts))
                except Exception as exc:  # noqa: BLE001 - a bad answer (or a bug) must not stop the shadow
                    error = exc
            if error is None:
                self._compare_slice(routes, group, parts, merged, 0, 0)
                return
            try:  # every request of the group counted once, as an error or a timeout
                for _, primary, job in group:
                    self._record(routes, primary, job, None, error)
            finally:
                self._release()

        try:
            Exchange(routes, shadow.variant, "http", send, finish, self.metrics, fallback=False).start()
        except Exception as exc:  # noqa: BLE001 - see _start
            finish(None, None, exc)

    def _compare_slice(self, routes: Routes, group: list[tuple[Routes, str, MirrorJob]], parts: list[Mergeable],
                       merged: Predictions, first: int, start: int) -> None:
        """Compare and count ``MIRRORS_PER_TURN`` requests of a merged group from request ``first`` (whose rows start at
        row ``start`` of the merged answer), and leave the rest to the next turn of the loop."""
        last = min(first + MIRRORS_PER_TURN, len(group))
        items, shares = group[first:last], parts[first:last]
        try:
            try:
                pairs = compare_merged([job.primary_body for _, _, job in items], [p.rows for p in shares], merged, start)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the shadow: these requests count as errors
                for _, primary, job in items:
                    self._record(routes, primary, job, None, exc)
            else:
                self._record_merged(routes, items, shares, merged, pairs, start)
        finally:
            if last < len(group):
                asyncio.get_running_loop().call_soon(self._compare_slice, routes, group, parts, merged, last,
                                                     start + sum(p.rows for p in shares))
            else:
                self._release()

    def _release(self) -> None:
        self._active -= 1
        # Jobs that wait with no burst pending were held back by ``concurrency``: a backlog, so the freed
        # slot goes on at once. From the loop: a shadow that fails fast must not recurse once per waiting job.
        self._schedule(0.0)

    def _record(self, routes: Routes, primary: str, job: MirrorJob, answer: Any, error: Exception | None) -> None:
        """Count and log the outcome of one mirrored request sent on its own."""
        shadow = routes.config.shadow.variant
        if error is not None:
            timeout = isinstance(error, UpstreamError) and error.kind == "timeout"
            self.metrics.shadow(primary, shadow, "timeout" if timeout else "error")
            return
        try:
            primary_out, shadow_out = job.primary(), job.shadow(answer)
            pair = compare(primary_out, shadow_out)
        except CompareError:
            self.metrics.shadow(primary, shadow, "error")
            return
        self.metrics.compared(primary, shadow, [pair])
        if self.pair_log is not None:
            self._log(routes, primary, job, primary_out, shadow_out, pair)

    def _record_merged(self, routes: Routes, group: list[tuple[Routes, str, MirrorJob]], parts: list[Mergeable],
                       merged: Predictions, pairs: list[Pair | CompareError], start: int) -> None:
        """Count and log the outcomes of (a slice of) a merged group whose rows start at row ``start`` of the merged
        answer: each request on its own, counted per primary at once."""
        shadow = routes.config.shadow.variant
        compared: dict[str, list[Pair]] = {}
        for (_, primary, job), part, pair in zip(group, parts, pairs):
            if isinstance(pair, CompareError):
                self.metrics.shadow(primary, shadow, "error")
            else:
                compared.setdefault(primary, []).append(pair)
                if self.pair_log is not None:
                    self._log(routes, primary, job, job.primary(), merged.part(start, part.rows), pair)
            start += part.rows
        for primary, done in compared.items():
            self.metrics.compared(primary, shadow, done)

    def _log(self, routes: Routes, primary: str, job: MirrorJob, primary_out: Predictions, shadow_out: Predictions,
             pair: Pair) -> None:
        self.pair_log.write({
            "time": time.time(), "request_id": job.request_id or primary_out.request_id or uuid.uuid4().hex,
            "model": routes.config.model, "protocol": job.protocol, "primary": primary,
            "shadow": routes.config.shadow.variant, "primary_output": _output(primary_out),
            "shadow_output": _output(shadow_out), **pair.to_dict(),
        })

    def close(self) -> None:
        """Forget waiting jobs and write the pairs logged so far."""
        self._waiting.clear()
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
