"""Feedback through the router: every primary variant gets the request, the one that served each row counts it.

A feedback item names a request id, and only the server that answered that request holds its
prediction, so sending feedback to one variant by the weights (as any other request) would count
most of it as unmatched and leave the other variants' accuracy without labels. The router instead
sends ``POST .../feedback`` to one replica of every variant that answers clients (not the shadow:
its answers were never served), with :data:`~ondeck.serving.feedback.FANOUT_HEADER` telling the
servers not to count the ids they do not hold. Each server counts what it matched, on the version
that served it. The router answers with the sum (``matched``, ``duplicates``) and the ids nobody
matched (``unmatched`` = items - matched - duplicates), which it counts once, in
``ondeck_router_feedback_items_total{result="unmatched"}``.

When a variant cannot be reached the answer is 503 and nothing is counted as unmatched: the ids it
may hold are unknown. Sending the same feedback again is safe: rows already counted come back as
duplicates. A variant that does not serve the version named in the path answers 404 and is left
out; if every variant does, or a server rejects the body (400), that answer is passed on.

Only feedback requests take this path (the REST front-end checks the path once); inference
requests pay nothing for it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ondeck.serving.feedback import FANOUT_HEADER
from ondeck.serving.router.forward import Exchange, VariantDown, VariantRuntime
from ondeck.serving.router.upstream import Endpoint, HttpResponse, UpstreamError

if TYPE_CHECKING:
    from ondeck.serving.router.http_front import ClientConnection, Request

JSON = [(b"content-type", b"application/json")]


def is_feedback(method: bytes, path: bytes) -> bool:
    """``POST /v2/models/<name>[/versions/<v>]/feedback``."""
    return method == b"POST" and path.endswith(b"/feedback") and path.startswith(b"/v2/models/")


class FeedbackFanout:
    """One feedback request: sent to every primary variant at once, answered when all have answered."""

    __slots__ = ("conn", "req", "routes", "data", "answers", "errors", "pending")

    def __init__(self, conn: "ClientConnection", req: "Request", data: bytes):
        self.conn, self.req = conn, req
        self.routes = conn.router.routes  # one snapshot, as for any request
        self.data = data
        self.answers: dict[str, HttpResponse] = {}
        self.errors: dict[str, Exception] = {}
        self.pending = 0

    def start(self) -> None:
        config = self.routes.config
        shadow = config.shadow.variant if config.shadow else None
        names = [v.name for v in config.variants if v.name != shadow]
        self.pending = len(names)
        self.conn.router.in_flight += 1
        for name in names:  # an exchange may finish at once (no endpoint): pending is set before
            Exchange(self.routes, name, "http", self._send, self._finished, self.conn.router.metrics,
                     fallback=False).start()

    def _send(self, endpoint: Endpoint, done) -> None:
        timeouts = self.routes.config.timeouts
        endpoint.http_send(self.data, False, timeouts.connect_seconds, timeouts.request_seconds, done)

    def _finished(self, variant: VariantRuntime, answer: HttpResponse | None, error: Exception | None) -> None:
        if error is not None:
            self.errors[variant.name] = error
        else:
            self.answers[variant.name] = answer
        self.pending -= 1
        if self.pending == 0:
            self._answer()

    def _answer(self) -> None:
        conn, router = self.conn, self.conn.router
        router.in_flight -= 1
        try:
            status, headers, body = self._merge()
            conn.respond(status, headers, body, None, self.req)
            router.metrics.feedback_answered(status)
        except Exception as exc:  # noqa: BLE001 - a router bug must cost one request, not the connection
            conn.respond_crash(self.req, exc)
            return
        conn.next_request()

    def _merge(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        model = self.routes.config.model
        if self.errors:
            name, error = next(iter(self.errors.items()))
            why = str(error) if isinstance(error, (VariantDown, UpstreamError)) else repr(error)
            return 503, JSON, orjson.dumps({"error": (
                f"feedback not taken: model {model!r} variant {name!r} did not answer ({why}); send it again "
                "(items already counted come back as duplicates)")})
        refused = [a for a in self.answers.values() if a.status not in (200, 404)]
        ok = {n: a for n, a in self.answers.items() if a.status == 200}
        if refused or not ok:  # a bad body (every server says the same), or no variant serves that version
            a = refused[0] if refused else next(iter(self.answers.values()))
            return a.status, a.headers, a.body
        matched = duplicates = items = 0
        for a in ok.values():
            counts = orjson.loads(a.body)
            matched += int(counts["matched"])
            duplicates += int(counts["duplicates"])
            items = max(items, int(counts["matched"]) + int(counts["unmatched"]) + int(counts["duplicates"]))
        # An id held by two variants (a client reusing request ids) can be matched twice: never below 0.
        unmatched = max(0, items - matched - duplicates)
        self.conn.router.metrics.feedback_items(matched, duplicates, unmatched)
        return 200, JSON, orjson.dumps({"matched": matched, "unmatched": unmatched, "duplicates": duplicates})


def fanout_request(data: bytes) -> bytes:
    """The upstream request bytes with the fan-out header added after the request line."""
    line_end = data.index(b"\r\n") + 2
    return data[:line_end] + FANOUT_HEADER + b": 1\r\n" + data[line_end:]
