"""The REST front-end: Open Inference Protocol V2 and V1 over HTTP/1.1, on httptools + asyncio.

Why not a web framework: the infer path is the product, and a framework's routing, request objects
and middleware cost more than the model itself (a churn model runs in ~10 us). This module only
parses HTTP, routes a handful of fixed paths and hands rows to the data plane; everything about
what a request means lives in ``ondeck.serving.protocol`` and ``ondeck.serving.dataplane``.

Per connection, requests are answered in order (HTTP/1.1 pipelining) and reading pauses while too
many are queued, so one client cannot pile up unbounded work. A body over the limit is read and
discarded and answered 413 (or refused before it is sent, for ``Expect: 100-continue``).
"""
from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from typing import Any, Callable
from urllib.parse import unquote

import httptools
import orjson

from ondeck.errors import InvalidInput
from ondeck.serving.dataplane import DataPlane, ServedModel, new_request_id
from ondeck.serving.feedback import FANOUT_HEADER
from ondeck.serving.metrics import BODY_TOO_LARGE
from ondeck.serving.protocol import v1, v2
from ondeck.serving.protocol.tensors import BAD_REQUEST

JSON = b"application/json"
STATUS = {100: b"Continue", 200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
          413: b"Payload Too Large", 500: b"Internal Server Error", 503: b"Service Unavailable"}
MAX_QUEUED = 16  # pipelined requests per connection before reading pauses


class Request:
    __slots__ = ("method", "path", "headers", "body", "keep_alive", "too_large", "started")

    def __init__(self, method: bytes, path: str, headers: dict[bytes, bytes], body: bytes,
                 keep_alive: bool, too_large: bool):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.too_large = too_large
        self.started = time.perf_counter()


class RestApp:
    """Routes and handlers; one per worker, shared by its connections."""

    def __init__(self, plane: DataPlane, max_body_bytes: int, metrics: bool = True):
        self.plane = plane
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.draining = False

    async def start(self, host: str, port: int, reuse_port: bool) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: Connection(self), host, port, reuse_port=reuse_port or None,
                                        backlog=2048)

    def close_idle(self) -> None:
        """On shutdown: close connections with nothing in progress (busy ones close after answering)."""
        self.draining = True
        for conn in list(self.connections):
            conn.close_if_idle()

    # -- routing ------------------------------------------------------------------------------
    def handle(self, conn: "Connection", req: Request) -> None:
        path = req.path
        if path.startswith("/v2/models/"):
            return self._v2_model(conn, req, path[len("/v2/models/"):])
        if path == "/v2/health/live":
            return self._get(conn, req, lambda: (200, {"live": True}))
        if path == "/v2/health/ready":
            return self._get(conn, req, lambda: (200 if self.plane.ready else 503, {"ready": self.plane.ready}))
        if path in ("/v2", "/v2/"):
            return self._get(conn, req, lambda: (200, self.plane.server_metadata()))
        if path.startswith("/v1/models/"):
            return self._v1_model(conn, req, path[len("/v1/models/"):])
        if path == "/v1/models":
            return self._get(conn, req, lambda: (200, {"models": list(self.plane.by_name)}))
        if path == "/metrics" and self.metrics:
            if req.method != b"GET":
                return self._not_allowed(conn, req, b"GET")
            return conn.respond(req, 200, self.plane.metrics(), b"text/plain; version=0.0.4; charset=utf-8")
        if path == "/":
            return self._get(conn, req, lambda: (200, {"status": "alive"}))
        conn.respond_error(req, 404, "not_found", f"no such endpoint: {path}")

    def _v2_model(self, conn: "Connection", req: Request, rest: str) -> None:
        parts = rest.split("/")
        name, version, action = parts[0], None, parts[1:]
        if len(action) >= 2 and action[0] == "versions":
            version, action = action[1], action[2:]
        if not name or len(action) > 1:
            return conn.respond_error(req, 404, "not_found", f"no such endpoint: {req.path}")
        action_name = action[0] if action else ""
        if action_name == "infer":
            if req.method != b"POST":
                return self._not_allowed(conn, req, b"POST")
            return self._infer(conn, req, name, version, "rest_v2")
        if action_name == "feedback":
            if req.method != b"POST":
                return self._not_allowed(conn, req, b"POST")
            # The router sends feedback to every variant and counts what none of them matched itself.
            fanout = req.headers.get(FANOUT_HEADER) is not None
            return self._call(conn, req, lambda: (200, self.plane.feedback(name, version, v2.load_json(self._body(req)),
                                                                           count_unmatched=not fanout)))
        if action_name == "ready":
            return self._get(conn, req, lambda: (200, {"name": self.plane.resolve(name, version).name, "ready": True}))
        if action_name == "":
            return self._get(conn, req, lambda: (200, self.plane.resolve(name, version).metadata(self.plane.versions(name))))
        conn.respond_error(req, 404, "not_found", f"no such endpoint: {req.path}")

    def _v1_model(self, conn: "Connection", req: Request, rest: str) -> None:
        if rest.endswith(":predict"):
            if req.method != b"POST":
                return self._not_allowed(conn, req, b"POST")
            return self._infer(conn, req, rest[: -len(":predict")], None, "rest_v1")
        if "/" in rest or ":" in rest:
            return conn.respond_error(req, 404, "not_found", f"no such endpoint: {req.path}")
        return self._get(conn, req, lambda: (200, {"name": self.plane.resolve(rest).name, "ready": True}))

    def _get(self, conn: "Connection", req: Request, answer: Callable[[], tuple[int, Any]]) -> None:
        if req.method != b"GET":
            return self._not_allowed(conn, req, b"GET")
        self._call(conn, req, answer)

    def _call(self, conn: "Connection", req: Request, answer: Callable[[], tuple[int, Any]]) -> None:
        try:
            self._check_size(req)
            status, doc = answer()
        except InvalidInput as exc:
            return conn.respond_error(req, exc.status, exc.reason, str(exc))
        conn.respond(req, status, orjson.dumps(doc))

    def _not_allowed(self, conn: "Connection", req: Request, allow: bytes) -> None:
        conn.respond_error(req, 405, "method_not_allowed",
                           f"{req.method.decode()} is not allowed on {req.path}; use {allow.decode()}",
                           b"allow: " + allow + b"\r\n")

    def _check_size(self, req: Request) -> None:
        if req.too_large:
            raise InvalidInput(BODY_TOO_LARGE, f"the body is larger than the limit of {self.max_body_bytes} bytes", 413)

    def _body(self, req: Request) -> bytes:
        encoding = req.headers.get(b"content-encoding")
        if not encoding or encoding == b"identity":
            return req.body
        if encoding not in (b"gzip", b"deflate"):
            raise InvalidInput(BAD_REQUEST, f"unsupported Content-Encoding {encoding.decode()!r}; send gzip, deflate or none")
        inflater = zlib.decompressobj(31 if encoding == b"gzip" else 15)
        try:
            body = inflater.decompress(req.body, self.max_body_bytes + 1)
        except zlib.error as exc:
            raise InvalidInput(BAD_REQUEST, f"the body is not valid {encoding.decode()} data: {exc}") from None
        if len(body) > self.max_body_bytes:
            raise InvalidInput(BODY_TOO_LARGE, f"the decompressed body is larger than the limit of {self.max_body_bytes} bytes", 413)
        return body

    # -- inference ----------------------------------------------------------------------------
    def _infer(self, conn: "Connection", req: Request, name: str, version: str | None, protocol: str) -> None:
        plane = self.plane
        plane.begin()
        served: ServedModel | None = None
        try:
            served = plane.resolve(name, version)
            self._check_size(req)
            body = self._body(req)
            if protocol == "rest_v2":
                header_length = req.headers.get(b"inference-header-content-length")
                decoded = v2.decode_infer(body, _int_header(header_length), served.schema, served.outputs)
                rows, outputs, body_id = decoded.rows, decoded.outputs, decoded.id
            else:
                rows, outputs, body_id = v1.decode_predict(body, served.schema), None, None
        except InvalidInput as exc:
            status, reason, message = plane.failed(served, protocol, req.started, exc)
            return conn.respond_error(req, status, reason, message)
        header_id = req.headers.get(b"x-request-id")
        request_id = header_id.decode("latin-1") if header_id else body_id or new_request_id()
        future = served.submit(rows, request_id)
        served.stats.in_flight(1)

        def finish(future: asyncio.Future) -> None:
            try:
                answer(future)
            except Exception as exc:  # a bug must cost one 500, not a connection that never answers
                conn._internal_error(req, exc)

        def answer(future: asyncio.Future) -> None:
            served.stats.in_flight(-1)
            try:
                result = future.result()
            except Exception as exc:  # the model failed on rows that passed validation
                status, reason, message = plane.failed(served, protocol, req.started, exc)
                return conn.respond_error(req, status, reason, message, _id_header(request_id))
            if outputs is None:
                conn.respond(req, 200, v1.encode_predict(result), JSON, _id_header(request_id))
            else:
                body, header_length = v2.encode_infer(served.name, served.version, request_id, result, outputs)
                extra = _id_header(request_id)
                if header_length is None:
                    conn.respond(req, 200, body, JSON, extra)
                else:
                    extra += b"inference-header-content-length: %d\r\n" % header_length
                    conn.respond(req, 200, body, b"application/octet-stream", extra)
            plane.answered(served, protocol, req.started, request_id, rows, result)

        if future.done():
            finish(future)
        else:
            future.add_done_callback(finish)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parse with httptools, queue requests, answer them in order."""

    def __init__(self, app: RestApp):
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Request] = deque()
        self.busy = False
        self.closed = False
        self._dispatching = False
        self._paused = False
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_connection(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail_connection(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = _int_header(self._headers.get(b"content-length"))
        limit = self.app.max_body_bytes
        if length is not None and length > limit:
            self._too_large = True
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            if self._too_large:  # refuse before the client sends the body, and end the connection
                self._fail_connection(413, f"the body ({length} bytes) is larger than the limit of {limit} bytes",
                                      BODY_TOO_LARGE)
            elif not self.closed:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.app.max_body_bytes:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url
        q = url.find(b"?")
        path = (url[:q] if q >= 0 else url).decode("latin-1")
        if "%" in path:
            path = unquote(path)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.queue.append(Request(self.parser.get_method(), path, self._headers, body,
                                  self.parser.should_keep_alive(), self._too_large))
        if len(self.queue) > MAX_QUEUED and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._dispatch()

    # -- answering ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self.queue and not self.busy and not self.closed:
                self.busy = True
                req = self.queue.popleft()
                try:
                    self.app.handle(self, req)
                except Exception as exc:  # a bug must cost one 500, not a connection that never answers
                    self._internal_error(req, exc)
        finally:
            self._dispatching = False
        if self._paused and len(self.queue) <= MAX_QUEUED // 2 and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def respond(self, req: Request, status: int, body: bytes, content_type: bytes = JSON, extra: bytes = b"") -> None:
        self.busy = False
        if self.closed:
            return
        close = not req.keep_alive or (self.app.draining and not self.queue)
        self.transport.write(b"".join((
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (status, STATUS[status], content_type, len(body)),
            extra, b"connection: close\r\n\r\n" if close else b"\r\n", body,
        )))
        if close:
            self.closed = True
            self.transport.close()
        else:
            self._dispatch()

    def respond_error(self, req: Request, status: int, reason: str, message: str, extra: bytes = b"") -> None:
        self.respond(req, status, orjson.dumps({"error": message, "reason": reason}), JSON, extra)

    def _internal_error(self, req: Request, exc: Exception) -> None:
        if self.busy:
            self.respond_error(req, 500, "internal", f"internal error: {type(exc).__name__}: {exc}")
        asyncio.get_running_loop().call_exception_handler({"message": "ondeck serve: request failed", "exception": exc})

    def close_if_idle(self) -> None:
        if not self.busy and not self.queue and not self.closed:
            self.closed = True
            self.transport.close()

    def _fail_connection(self, status: int, message: str, reason: str = "bad_request") -> None:
        if self.closed:
            return
        body = orjson.dumps({"error": message, "reason": reason})
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, STATUS[status], len(body), body))
        self.closed = True
        self.transport.close()


def _int_header(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(BAD_REQUEST, f"header value {value.decode('latin-1')!r} is not an integer") from None


def _id_header(request_id: str) -> bytes:
    return b"x-request-id: " + request_id.encode("latin-1", "replace") + b"\r\n"

