"""The server replicas behind the router: keep-alive HTTP pools, gRPC channels, passive health.

One :class:`Endpoint` per replica (a REST and/or gRPC address). It outlives config reloads when the
new config still names it, so its warm connections and its health record carry over.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import grpc
import httptools

from ondeck.serving.router.config import Ejection

MAX_IDLE_CONNECTIONS = 256  # per endpoint; more idle sockets than the client concurrency buys nothing
GRPC_SERVICE = "inference.GRPCInferenceService"
GRPC_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024))


class UpstreamError(Exception):
    """An attempt that got no usable answer. ``kind`` is the metric label (``connect``, ``timeout``).

    ``retryable`` is true only when the replica cannot have acted on the request (refused, reset
    or closed before any answer byte), so trying another replica never runs a request twice.
    """

    def __init__(self, kind: str, message: str, retryable: bool):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


class GrpcAnswer:
    """A replica's gRPC answer: the response bytes, or a status that is the replica's to give
    (INVALID_ARGUMENT, NOT_FOUND, ...) and that the router passes on unchanged."""

    __slots__ = ("code", "details", "body")

    def __init__(self, code: grpc.StatusCode, details: str, body: bytes):
        self.code = code
        self.details = details
        self.body = body


class HttpResponse:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


Done = Callable[[object, "UpstreamError | None"], None]  # done(answer, error): exactly one of them is None


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection to a replica, one request at a time.

    Callback-driven rather than awaited: the request path creates no task and no future, which is
    a good part of a Python proxy's per-request cost.
    """

    def __init__(self, endpoint: "Endpoint", loop: asyncio.AbstractEventLoop):
        self.endpoint = endpoint
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.open = False
        self._done: Done | None = None
        # One timer per connection, re-armed only when it fires, instead of a call_later and a cancel per
        # request (~3 us on uvloop; ~4 us of router CPU per request in the benchmark): a request moves the deadline.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._armed_at = 0.0
        self._timeout = 0.0
        self._answered = False  # any byte of the answer seen: from then on a failure is not retryable
        self._head = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    @property
    def reusable(self) -> bool:
        return self.open and self._done is None

    def request(self, data: bytes, head: bool, timeout: float, done: Done) -> None:
        self._done = done
        self._answered, self._head, self._headers, self._body = False, head, [], []
        self._timeout = timeout
        self._deadline = deadline = self.loop.time() + timeout
        if self._timer is None or deadline < self._armed_at:  # none, or set for a longer timeout than this one's
            self._arm(deadline)
        self.transport.write(data)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self.loop.call_at(when, self._check_deadline)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        self._answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("connect", f"unreadable HTTP answer: {exc}", retryable=False))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._timer is not None:  # do not keep a closed connection alive until its timer fires
            self._timer.cancel()
            self._timer = None
        if self._done is not None:
            if self._answered:
                self._fail(UpstreamError("connect", "connection closed in the middle of the answer", retryable=False))
            else:
                self._fail(UpstreamError("connect", f"connection closed before an answer ({exc or 'EOF'})", retryable=True))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head:  # a HEAD answer has no body, which the parser cannot know: finish here
            self._complete(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._done is not None:
            self._complete(self.parser.should_keep_alive())

    def _complete(self, keep_alive: bool) -> None:
        done, self._done = self._done, None
        if not keep_alive:
            self.open = False
            self.transport.close()
        self.endpoint.release(self)
        done(HttpResponse(self.parser.get_status_code(), self._headers, b"".join(self._body)), None)

    def _check_deadline(self) -> None:
        """The timer fired: fail the request in flight if its deadline has passed, else wait for it."""
        self._timer = None
        if self._done is None:  # idle: the next request arms a new timer
            return
        if self.loop.time() >= self._deadline - 0.001:  # the loop's clock has millisecond steps
            self._fail(UpstreamError("timeout", f"no answer within {self._timeout:g}s", retryable=False))
        else:  # a later request's deadline
            self._arm(self._deadline)

    def _fail(self, error: UpstreamError) -> None:
        done, self._done = self._done, None
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.close()
        if done is not None:
            done(None, error)


class Endpoint:
    """One replica: its connections and whether it is ejected."""

    def __init__(self, http: str | None, grpc_address: str | None):
        self.http = http
        self.grpc = grpc_address
        self._idle: list[HttpConnection] = []
        self._channel: grpc.aio.Channel | None = None
        self._grpc_methods: dict[str, Callable] = {}
        self._failures = 0
        self._ejected_until = 0.0
        self.closed = False

    # --- passive health -----------------------------------------------------------------

    def available(self, now: float) -> bool:
        return now >= self._ejected_until

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self, now: float, ejection: Ejection) -> bool:
        """Count a failed attempt; True when this one ejects the endpoint."""
        self._failures += 1
        if self._failures >= ejection.consecutive_failures and now >= self._ejected_until:
            self._ejected_until = now + ejection.seconds
            self._failures = 0
            return True
        return False

    # --- HTTP ---------------------------------------------------------------------------

    def http_send(self, data: bytes, head: bool, connect_timeout: float, timeout: float, done: Done) -> None:
        """Send one request on an idle keep-alive connection (or a new one); ``done`` gets the answer."""
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                conn.request(data, head, timeout, done)
                return
        asyncio.get_running_loop().create_task(self._connect_and_send(data, head, connect_timeout, timeout, done))

    async def _connect_and_send(self, data: bytes, head: bool, connect_timeout: float, timeout: float, done: Done) -> None:
        host, _, port = self.http.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: HttpConnection(self, loop), host.strip("[]"), int(port)), connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            done(None, UpstreamError("connect", f"cannot connect to {self.http}: {str(exc) or 'timed out'}", retryable=True))
            return
        conn.request(data, head, timeout, done)

    def release(self, conn: HttpConnection) -> None:
        """Back to the idle pool after an answer, if it can carry another request."""
        if conn.open:
            if not self.closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
            else:
                conn.open = False
                conn.transport.close()

    # --- gRPC ---------------------------------------------------------------------------

    def grpc_send(self, method: str, request: bytes, metadata: tuple, timeout: float, done: Done) -> None:
        """Call ``method`` with the request bytes; ``done`` gets a :class:`GrpcAnswer`."""
        task = asyncio.get_running_loop().create_task(self.grpc_call(method, request, metadata, timeout))
        task.add_done_callback(lambda t: done(None, t.exception()) if t.exception() else done(t.result(), None))

    async def grpc_call(self, method: str, request: bytes, metadata: tuple, timeout: float) -> GrpcAnswer:
        call = self._grpc_methods.get(method)
        if call is None:
            if self._channel is None:
                self._channel = grpc.aio.insecure_channel(self.grpc, options=GRPC_OPTIONS)
            # No serializers: the request and answer bytes pass through untouched.
            call = self._grpc_methods[method] = self._channel.unary_unary(f"/{GRPC_SERVICE}/{method}")
        try:
            return GrpcAnswer(grpc.StatusCode.OK, "", await call(request, metadata=metadata, timeout=timeout))
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise UpstreamError("connect", f"{self.grpc}: {exc.details()}", retryable=True) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UpstreamError("timeout", f"no answer from {self.grpc} within {timeout:g}s", retryable=False) from None
            return GrpcAnswer(code, exc.details() or "", b"")

    async def close(self) -> None:
        """Drop idle connections now; busy ones close when their request ends."""
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.transport.close()
        if self._channel is not None:
            await self._channel.close(grace=5.0)

    def label(self, protocol: str) -> str | None:
        return self.http if protocol == "http" else self.grpc
