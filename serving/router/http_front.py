"""The REST front-end: an asyncio + httptools reverse proxy, plus the router's own admin endpoints.

Built for low overhead on the path every request takes: bodies are forwarded as bytes and never
parsed, headers become a dict only when a rule or stickiness needs them, upstream connections are
kept alive and reused, and only mirrored requests pay for JSON parsing (later, in the shadow process).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools
import orjson

from ondeck.serving.router.compare import CompareError, Predictions, from_json
from ondeck.serving.router.feedback import FeedbackFanout, fanout_request, is_feedback
from ondeck.serving.router.forward import Exchange, VariantDown, VariantRuntime
from ondeck.serving.router.merging import Mergeable, mergeable
from ondeck.serving.router.shadow_process import frame
from ondeck.serving.router.upstream import Endpoint, HttpResponse, UpstreamError

if TYPE_CHECKING:
    from ondeck.serving.router.server import Router

# Hop-by-hop headers are the router's own business on each side; content-length is recomputed.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
                        b"upgrade", b"content-length", b"proxy-authenticate", b"proxy-authorization"})
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_PIPELINED = 32  # requests parsed ahead on one connection before reading pauses
ROUTER_PATHS = (b"/healthz", b"/metrics", b"/admin/")
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def status_line(code: int) -> bytes:
    return _STATUS_LINES.get(code) or b"HTTP/1.1 %d Unknown\r\n" % code


class Request:
    __slots__ = ("method", "url", "headers", "body", "keep_alive", "http10")

    def __init__(self, method, url, headers, body, keep_alive, http10):
        self.method: bytes = method
        self.url: bytes = url
        self.headers: list[tuple[bytes, bytes]] = headers
        self.body: bytes = body
        self.keep_alive: bool = keep_alive
        self.http10: bool = http10


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order (pipelining included)."""

    def __init__(self, router: "Router"):
        self.router = router
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._closed = False
        self._busy = False
        self._paused = False
        self._queue: deque[Request] = deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(501, "the router does not support protocol upgrades")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", [], [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY_BYTES:
            raise httptools.HttpParserError(f"request body larger than {MAX_BODY_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        req = Request(p.get_method(), self._url, self._headers, b"".join(self._body), p.should_keep_alive(),
                      p.get_http_version() == "1.0")
        if self._busy:
            self._queue.append(req)
            if len(self._queue) >= MAX_PIPELINED and not self._paused:
                self._paused = True
                self.transport.pause_reading()
        else:
            self._busy = True
            self._handle(req)

    # answering: callbacks all the way (no task per request), one request at a time per connection
    def _handle(self, req: Request) -> None:
        try:
            path = req.url.partition(b"?")[0]
            if path.startswith(ROUTER_PATHS):
                status, content_type, payload = self.router.admin(req.method.decode(), path.decode("latin-1"))
                self.respond(status, [(b"content-type", content_type)], payload, None, req)
                self.next_request()
                return
            if path.endswith(b"/feedback") and is_feedback(req.method, path):  # one bytes check per request
                FeedbackFanout(self, req, fanout_request(_upstream_request(req))).start()
                return
            Proxied(self, req, path).start()
        except Exception as exc:  # noqa: BLE001 - a router bug must cost one request, not the connection
            self.respond_crash(req, exc)

    def respond_crash(self, req: Request, exc: Exception) -> None:
        self.respond(500, [(b"content-type", b"application/json")], _error(f"router error: {exc!r}"), None, req)
        self.next_request()

    def next_request(self) -> None:
        """The current request is answered: start the next pipelined one, if any."""
        if self._closed or not self._queue:
            self._busy = False
            return
        req = self._queue.popleft()
        if self._paused and len(self._queue) < MAX_PIPELINED // 2:
            self._paused = False
            self.transport.resume_reading()
        self._handle(req)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, variant: bytes | None,
              req: Request) -> None:
        if self._closed:
            return
        out = [status_line(status)]
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                out += (name, b": ", value, b"\r\n")
        if variant is not None:
            out += (b"x-ondeck-variant: ", variant, b"\r\n")
        if not req.keep_alive:
            out.append(b"connection: close\r\n")
        elif req.http10:
            out.append(b"connection: keep-alive\r\n")
        out += (b"content-length: %d\r\n\r\n" % len(body), body)
        self.transport.write(b"".join(out))
        if not req.keep_alive:
            self._closed = True
            self.transport.close()

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, then close: the byte stream cannot be trusted after it."""
        if not self._closed:
            self.respond(status, [(b"content-type", b"application/json")], _error(message), None,
                       Request(b"", b"", [], b"", False, False))


class Proxied:
    """One proxied request: choose the variant, forward, answer the client, maybe mirror."""

    __slots__ = ("conn", "req", "protocol", "routes", "variant", "mirror", "data", "tried", "start_time")

    def __init__(self, conn: ClientConnection, req: Request, path: bytes):
        self.conn, self.req = conn, req
        self.start_time = time.perf_counter()
        self.protocol = "rest_v1" if path.startswith(b"/v1/") else "rest_v2"
        self.routes = routes = conn.router.routes  # one snapshot for the whole request: a reload changes nothing
        table = routes.table
        self.variant = table.choose(_header_dict(req.headers) if table.needs_headers else None)
        self.mirror = table.shadow_variant is not None and req.method == b"POST" and table.mirror(self.variant)
        self.data = _upstream_request(req)
        self.tried: list[Endpoint] = []
        conn.router.in_flight += 1

    def start(self) -> None:
        Exchange(self.routes, self.variant, "http", self.send, self.finish, self.conn.router.metrics).start()

    def send(self, endpoint: Endpoint, done) -> None:
        self.tried.append(endpoint)
        timeouts = self.routes.config.timeouts
        endpoint.http_send(self.data, self.req.method == b"HEAD", timeouts.connect_seconds, timeouts.request_seconds, done)

    def finish(self, served: VariantRuntime, answer: HttpResponse | None, error: Exception | None) -> None:
        conn, req, router = self.conn, self.req, self.conn.router
        router.in_flight -= 1
        try:
            if error is None:
                conn.respond(answer.status, answer.headers, answer.body, served.header, req)
                status = answer.status
            else:
                if isinstance(error, VariantDown):
                    status, message = 503, str(error)
                elif isinstance(error, UpstreamError):  # a timeout: not retried, the request may be running
                    status, message = 504, f"model {self.routes.config.model!r} variant {served.name!r}: {error}"
                else:
                    status, message = 500, f"router error: {error!r}"
                conn.respond(status, [(b"content-type", b"application/json")], _error(message), served.header, req)
            router.metrics.answered(served.name, served.version, self.protocol, status, time.perf_counter() - self.start_time)
            if error is None:
                if status >= 500:
                    router.metrics.upstream_error(served.name, served.version, self.tried[-1].http, "status")
                elif self.mirror and status == 200:
                    router.shadow.offer(self.routes, served.name, HttpMirror(self.data, req, answer.body))
        except Exception as exc:  # noqa: BLE001 - see ClientConnection._handle
            conn.respond_crash(req, exc)
            return
        conn.next_request()


class HttpMirror:
    """A REST request to replay on the shadow, with the primary's answer to compare against."""

    __slots__ = ("data", "req", "primary_body")
    protocol = "http"

    def __init__(self, data: bytes, req: Request, primary_body: bytes):
        self.data = data
        self.req = req
        self.primary_body = primary_body

    def frame(self, primary: str) -> bytes:
        """The mirror as the shadow process reads it back (:meth:`from_frame`)."""
        return frame(b"H", primary.encode(), self.data, self.primary_body)

    @classmethod
    def from_frame(cls, data: bytes, primary_body: bytes) -> "HttpMirror":
        """The mirror of the request ``data`` (as sent upstream by :func:`_upstream_request`), answered ``primary_body``."""
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, url, _ = lines[0].split(b" ", 2)
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        return cls(data, Request(method, url, headers, body, True, False), primary_body)

    def mergeable(self) -> Mergeable:
        """Whether (and how) it can go to the shadow merged with others (asked once, as it is offered)."""
        return mergeable(self.req.url.partition(b"?")[0], self.req.headers, self.req.body)

    @property
    def request_id(self) -> str | None:
        return _header_dict(self.req.headers).get("x-request-id")

    def send(self, endpoint: Endpoint, timeout: float, connect_timeout: float, done) -> None:
        endpoint.http_send(self.data, False, connect_timeout, timeout, done)

    def primary(self) -> Predictions:
        return from_json(self.primary_body)

    def shadow(self, answer: HttpResponse) -> Predictions:
        if answer.status != 200:
            raise CompareError(f"shadow answered HTTP {answer.status}")
        return from_json(answer.body)


def _header_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}


def _upstream_request(req: Request) -> bytes:
    out = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
    for name, value in req.headers:
        if name.lower() not in HOP_BY_HOP:
            out += (name, b": ", value, b"\r\n")
    out += (b"content-length: %d\r\n\r\n" % len(req.body), req.body)
    return b"".join(out)


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})
