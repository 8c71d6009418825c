"""The gRPC front-end: every V2 GRPCInferenceService call routed by the same rules as REST.

Request and answer messages pass through as bytes (no deserialization); gRPC metadata plays the
part of headers. Only mirrored ModelInfer answers are ever parsed, later, by the shadow process.
"""
from __future__ import annotations

import pickle
import time
from typing import TYPE_CHECKING

import grpc

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.router.compare import CompareError, Predictions, from_grpc
from ondeck.serving.router.forward import VariantDown, forward
from ondeck.serving.router.shadow_process import frame
from ondeck.serving.router.upstream import GRPC_SERVICE, Endpoint, GrpcAnswer, UpstreamError

if TYPE_CHECKING:
    from ondeck.serving.router.server import Router

METHODS = tuple(m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods)
MIRRORED = "ModelInfer"
# Metadata gRPC itself sets on each hop; the rest (x-request-id, auth, ...) travels on.
_TRANSPORT_KEYS = frozenset({"user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout"})
# The HTTP status a gRPC code stands for in `code` metric labels (docs/metrics.md).
_HTTP_CODE = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_code(code: grpc.StatusCode) -> int:
    return _HTTP_CODE.get(code, 500)


def handler(router: "Router") -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        GRPC_SERVICE, {m: grpc.unary_unary_rpc_method_handler(_route(router, m)) for m in METHODS})


def _route(router: "Router", method: str):
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        start = time.perf_counter()
        routes = router.routes
        table = routes.table
        metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ())
                         if k not in _TRANSPORT_KEYS and not k.startswith(":"))
        headers = {k: v for k, v in metadata if isinstance(v, str)} if table.needs_headers else None
        variant = table.choose(headers)
        mirror = method == MIRRORED and table.shadow_variant is not None and table.mirror(variant)
        remaining = context.time_remaining()
        timeout = routes.config.timeouts.request_seconds
        timeout = min(timeout, remaining) if remaining is not None else timeout
        tried: list[Endpoint] = []

        def send(endpoint: Endpoint, done) -> None:
            tried.append(endpoint)
            endpoint.grpc_send(method, request, metadata, timeout, done)

        metrics = router.metrics
        try:
            served, answer = await forward(routes, variant, "grpc", send, metrics)
        except (VariantDown, UpstreamError) as exc:
            v = routes.variants[variant]
            down = isinstance(exc, VariantDown)
            code = grpc.StatusCode.UNAVAILABLE if down else grpc.StatusCode.DEADLINE_EXCEEDED
            details = str(exc) if down else f"model {routes.config.model!r} variant {variant!r}: {exc}"
            metrics.answered(v.name, v.version, "grpc", http_code(code), time.perf_counter() - start)
            await context.send_initial_metadata((("x-ondeck-variant", v.name),))
            await context.abort(code, details)
        await context.send_initial_metadata((("x-ondeck-variant", served.name),))
        status = http_code(answer.code)
        metrics.answered(served.name, served.version, "grpc", status, time.perf_counter() - start)
        if answer.code != grpc.StatusCode.OK:
            if status >= 500:
                metrics.upstream_error(served.name, served.version, tried[-1].grpc, "status")
            await context.abort(answer.code, answer.details)
        if mirror:
            router.shadow.offer(routes, served.name, GrpcMirror(request, metadata, answer.body))
        return answer.body

    return call


class GrpcMirror:
    """A ModelInfer call to replay on the shadow, with the primary's answer to compare against."""

    protocol = "grpc"

    def __init__(self, request: bytes, metadata: tuple, primary_body: bytes):
        self.request = request
        self.metadata = metadata
        self.primary_body = primary_body

    def frame(self, primary: str) -> bytes:
        """The mirror as the shadow process reads it back."""
        return frame(b"G", primary.encode(), self.request, self.primary_body, pickle.dumps(self.metadata))

    @property
    def request_id(self) -> str | None:
        return next((v for k, v in self.metadata if k == "x-request-id"), None)

    def send(self, endpoint: Endpoint, timeout: float, connect_timeout: float, done) -> None:
        endpoint.grpc_send(MIRRORED, self.request, self.metadata, timeout, done)

    def primary(self) -> Predictions:
        return from_grpc(pb.ModelInferResponse.FromString(self.primary_body))

    def shadow(self, answer: GrpcAnswer) -> Predictions:
        if answer.code != grpc.StatusCode.OK:
            raise CompareError(f"shadow answered {answer.code.name}: {answer.details}")
        return from_grpc(pb.ModelInferResponse.FromString(answer.body))
