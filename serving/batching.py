"""Adaptive batching: concurrent requests for one model merged into one model run, split back.

A request joins the open batch. The batch runs when it holds ``max_batch_size`` rows, when
``max_batch_delay_us`` has passed since its first request, or - with no delay configured - at the
end of the current event-loop iteration, so every request that arrived in the same read merges
without waiting for anything. A request is never split: one larger than the limit runs alone.
With ``max_batch_size`` 1 a request runs at once, inline: batching off adds no latency.

The model runs on the event loop's thread: with one onnxruntime thread per worker a small batch
takes microseconds, less than a hand-off to another thread would cost.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

import numpy as np

# (rows, request ids, rows per request) -> the model's outputs for all the rows
RunBatch = Callable[[np.ndarray, list[str], list[int]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 64
    max_batch_delay_us: int = 0


class Batcher:
    def __init__(self, run: RunBatch, policy: BatchPolicy):
        self._run = run
        self.policy = policy
        self._rows: list[np.ndarray] = []
        self._ids: list[str] = []
        self._futures: list[asyncio.Future] = []
        self._count = 0
        self._timer: asyncio.Handle | asyncio.TimerHandle | None = None

    def submit(self, rows: np.ndarray, request_id: str) -> asyncio.Future:
        """A future of this request's outputs (already done when the request ran inline)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        n = rows.shape[0]
        if self.policy.max_batch_size <= 1 or (n >= self.policy.max_batch_size and not self._rows):
            _settle([future], [n], lambda: self._run(rows, [request_id], [n]))
            return future
        if self._count + n > self.policy.max_batch_size:
            self.flush()  # the open batch is as full as this request lets it be
        self._rows.append(rows)
        self._ids.append(request_id)
        self._futures.append(future)
        self._count += n
        if self._count >= self.policy.max_batch_size:
            self.flush()
        elif self._timer is None:
            delay = self.policy.max_batch_delay_us / 1e6
            self._timer = loop.call_later(delay, self.flush) if delay > 0 else loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        """Run the open batch now (also used when draining on shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._rows:
            return
        rows, ids, futures = self._rows, self._ids, self._futures
        self._rows, self._ids, self._futures, self._count = [], [], [], 0
        counts = [r.shape[0] for r in rows]
        x = rows[0] if len(rows) == 1 else np.concatenate(rows)
        _settle(futures, counts, lambda: self._run(x, ids, counts))


def _settle(futures: list[asyncio.Future], counts: list[int], run: Callable[[], dict[str, np.ndarray]]) -> None:
    try:
        outputs = run()
    except Exception as exc:  # the model failed: every request of the batch gets the error (a 500)
        for f in futures:
            if not f.done():
                f.set_exception(exc)
        return
    if len(futures) == 1:
        if not futures[0].done():
            futures[0].set_result(outputs)
        return
    start = 0
    for f, n in zip(futures, counts):
        if not f.done():  # a cancelled request (client gone) just drops its share
            f.set_result({name: arr[start:start + n] for name, arr in outputs.items()})
        start += n
