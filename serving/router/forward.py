"""Sending a request to a variant, whatever the protocol: endpoint choice, retry, ejection, fallback.

The REST and gRPC front-ends and the shadow hand an :class:`Exchange` a ``send(endpoint, done)``
function; everything about which replica to try next, when a replica is ejected and when a variant
counts as down lives here once.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from ondeck.serving.router.choose import RoutingTable
from ondeck.serving.router.config import RouterConfig
from ondeck.serving.router.config import Endpoint as EndpointConfig
from ondeck.serving.router.metrics import RouterMetrics
from ondeck.serving.router.upstream import Done, Endpoint, UpstreamError


class VariantDown(Exception):
    """No endpoint of the variant (nor of the fallback) answered; the client gets 503 / UNAVAILABLE."""

    def __init__(self, model: str, variant: str, reason: str):
        super().__init__(f"model {model!r} variant {variant!r} is unavailable: {reason}")
        self.variant = variant


class VariantRuntime:
    """A variant's endpoints in the order they are tried round-robin."""

    def __init__(self, name: str, version: str, endpoints: list[Endpoint]):
        self.name = name
        self.version = version
        self.header = name.encode()  # the x-ondeck-variant value, encoded once
        self.endpoints = endpoints
        self._next = 0

    def pick(self, protocol: str, now: float, tried: list[Endpoint]) -> Endpoint | None:
        """The next available endpoint not yet tried; the only available one again if it was tried.

        Retrying the same replica helps when it is the only one: the failed attempt was most
        likely a keep-alive connection the replica had just closed, and the retry uses a new one.
        """
        candidates = [e for e in self.endpoints if e.label(protocol) is not None and e.available(now)]
        if not candidates:
            return None
        fresh = [e for e in candidates if e not in tried]
        if not fresh:
            return candidates[0] if len(candidates) == 1 else None
        self._next += 1
        return fresh[self._next % len(fresh)]


class Routes:
    """One config made runnable: its routing table and its variants' endpoints. Swapped whole on reload."""

    def __init__(self, config: RouterConfig, pool: dict[EndpointConfig, Endpoint]):
        """``pool`` holds the endpoints of the previous config; those named again are reused."""
        self.config = config
        self.table = RoutingTable(config)
        self.endpoints: dict[EndpointConfig, Endpoint] = {}
        self.variants: dict[str, VariantRuntime] = {}
        for v in config.variants:
            eps = []
            for e in v.endpoints:
                ep = self.endpoints.get(e) or pool.get(e) or Endpoint(e.http, e.grpc)
                self.endpoints[e] = ep
                eps.append(ep)
            self.variants[v.name] = VariantRuntime(v.name, v.version_label, eps)


Send = Callable[[Endpoint, Done], None]  # send(endpoint, done): start one attempt on that endpoint
Finish = Callable[[VariantRuntime, object, "Exception | None"], None]  # finish(variant, answer, error)


class Exchange:
    """One request's way through a variant's endpoints, then the fallback's: the retry state machine.

    It tries up to ``retry.attempts`` endpoints per variant; an attempt that failed before the
    replica could act (refused, reset) moves on to the next endpoint, and every failure counts
    toward that endpoint's ejection. ``finish`` is called exactly once: with the variant that
    answered and its answer, or with the chosen variant and :class:`VariantDown`, or with a
    non-retryable :class:`UpstreamError` (a timeout: the request may be running, so it is not
    sent again).
    """

    __slots__ = ("routes", "send", "finish", "metrics", "protocol", "_order", "_variant", "_tried", "_left", "_reason",
                 "_requested")

    def __init__(self, routes: Routes, variant: str, protocol: str, send: Send, finish: Finish,
                 metrics: RouterMetrics, fallback: bool = True):
        config = routes.config
        self.routes, self.send, self.finish, self.metrics, self.protocol = routes, send, finish, metrics, protocol
        self._requested = routes.variants[variant]
        self._order = [self._requested]
        if fallback and config.fallback and config.fallback != variant:
            self._order.append(routes.variants[config.fallback])
        self._variant: VariantRuntime | None = None
        self._tried: list[Endpoint] = []
        self._left = 0
        self._reason = f"no {protocol} endpoint available (none configured, or all ejected after failures)"

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        while True:
            if self._left > 0:
                endpoint = self._variant.pick(self.protocol, time.monotonic(), self._tried)
                if endpoint is not None:
                    self._left -= 1
                    self._tried.append(endpoint)
                    self.send(endpoint, self._attempted)
                    return
            if not self._order:
                self.finish(self._requested, None,
                            VariantDown(self.routes.config.model, self._requested.name, self._reason))
                return
            self._variant, self._tried = self._order.pop(0), []
            self._left = self.routes.config.retry.attempts

    def _attempted(self, answer: object, error: Exception | None) -> None:
        endpoint, variant = self._tried[-1], self._variant
        if error is None:
            endpoint.succeeded()
            self.finish(variant, answer, None)
            return
        if not isinstance(error, UpstreamError):  # a bug, not a replica's failure: no retry
            self.finish(variant, None, error)
            return
        label = endpoint.label(self.protocol)
        self.metrics.upstream_error(variant.name, variant.version, label, error.kind)
        if endpoint.failed(time.monotonic(), self.routes.config.ejection):
            self.metrics.ejected(variant.name, variant.version, label)
        if not error.retryable:
            self.finish(variant, None, error)
            return
        self._reason = str(error)
        self._next()


def forward(routes: Routes, variant: str, protocol: str, send: Send, metrics: RouterMetrics,
            fallback: bool = True) -> "asyncio.Future[tuple[VariantRuntime, object]]":
    """:class:`Exchange` as an awaitable: the variant that answered and its answer, or the error raised."""
    future = asyncio.get_running_loop().create_future()

    def finish(v: VariantRuntime, answer: object, error: Exception | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result((v, answer))

    Exchange(routes, variant, protocol, send, finish, metrics, fallback).start()
    return future
