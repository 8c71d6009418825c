"""The gRPC front-end: the full ``inference.GRPCInferenceService`` of the V2 protocol.

gRPC's C core and its thread pool carry HTTP/2; each ModelInfer is handed to the event loop, which
owns the data plane (models, batches, counters, recent predictions). So one thread touches that
state and nothing needs a lock, and gRPC and REST requests for a model batch together. Why not
grpc.aio: measured on this machine, grpc's threaded server plus the hand-off answers about 1.5x the
requests of grpc.aio on the same loop (benchmarks/serving).

Errors carry the same message as the REST JSON error, with the status mapped once: 400 ->
INVALID_ARGUMENT, 404 -> NOT_FOUND, 413 -> RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE, else INTERNAL;
the reason code travels in the trailing metadata ``ondeck-reason``. Request ids: metadata
``x-request-id`` (or ``request_id``), else ``ModelInferRequest.id``, else a new one; the answer
carries it in ``ModelInferResponse.id`` and the trailing metadata ``x-request-id``.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from ondeck.errors import InvalidInput, UserError
from ondeck.serving.dataplane import DataPlane, ServedModel, new_request_id
from ondeck.serving.protocol import grpc_codec
from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb
from ondeck.serving.protocol import grpc_predict_v2_pb2_grpc as pb_grpc

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
ID_KEYS = ("x-request-id", "request_id")


class Failure:
    """What ModelInfer answers instead of a response: an HTTP-style status, reason and message."""

    __slots__ = ("status", "reason", "message")

    def __init__(self, status: int, reason: str, message: str):
        self.status, self.reason, self.message = status, reason, message


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """Runs on gRPC's threads; everything that touches the data plane's state runs on ``loop``."""

    def __init__(self, plane: DataPlane, loop: asyncio.AbstractEventLoop):
        self.plane = plane
        self.loop = loop

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.ready)

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    def ModelReady(self, request, context):
        try:
            self.plane.resolve(request.name, request.version)
        except InvalidInput:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request, context):
        try:
            served = self.plane.resolve(request.name, request.version)
        except InvalidInput as exc:
            _abort(context, Failure(exc.status, exc.reason, str(exc)))
        meta = served.metadata(self.plane.versions(served.name))
        response = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for key in ("inputs", "outputs"):
            for t in meta[key]:
                getattr(response, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return response

    def ModelInfer(self, request, context):
        answer: Future = Future()
        self.loop.call_soon_threadsafe(self._infer_guarded, request, _metadata_id(context), answer)
        response, request_id = answer.result()
        if request_id is not None:
            context.set_trailing_metadata((("x-request-id", request_id),))
        if isinstance(response, Failure):
            _abort(context, response, request_id)
        return response

    def RepositoryModelLoad(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "models are loaded at start: restart with the packages to serve")

    def RepositoryModelUnload(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "models are loaded at start: restart with the packages to serve")

    # -- on the event loop ------------------------------------------------------------------
    def _infer_guarded(self, request: pb.ModelInferRequest, metadata_id: str | None, answer: Future) -> None:
        try:
            self._infer(request, metadata_id, answer)
        except Exception as exc:  # a bug must cost one 500, not a gRPC thread waiting forever
            if not answer.done():
                answer.set_result((Failure(500, "internal", f"internal error: {type(exc).__name__}: {exc}"), None))
            raise

    def _infer(self, request: pb.ModelInferRequest, metadata_id: str | None, answer: Future) -> None:
        started = time.perf_counter()
        plane = self.plane
        plane.begin()
        served: ServedModel | None = None
        try:
            served = plane.resolve(request.model_name, request.model_version)
            decoded = grpc_codec.decode_infer(request, served.schema, served.outputs)
        except InvalidInput as exc:
            answer.set_result((Failure(*plane.failed(served, "grpc", started, exc)), None))
            return
        request_id = metadata_id or decoded.id or new_request_id()
        future = served.submit(decoded.rows, request_id)
        served.stats.in_flight(1)

        def finish(future: asyncio.Future) -> None:
            served.stats.in_flight(-1)
            try:
                outputs = future.result()
            except Exception as exc:  # the model failed on rows that passed validation
                answer.set_result((Failure(*plane.failed(served, "grpc", started, exc)), request_id))
                return
            response = grpc_codec.encode_infer(served.name, served.version, request_id, outputs, decoded.outputs)
            answer.set_result((response, request_id))
            plane.answered(served, "grpc", started, request_id, decoded.rows, outputs)

        if future.done():
            finish(future)
        else:
            future.add_done_callback(finish)


def _abort(context, failure: Failure, request_id: str | None = None) -> None:
    metadata = [("ondeck-reason", failure.reason)] + ([("x-request-id", request_id)] if request_id else [])
    context.set_trailing_metadata(tuple(metadata))
    context.abort(CODES.get(failure.status, grpc.StatusCode.INTERNAL), failure.message)


def _metadata_id(context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key in ID_KEYS and value:
            return value
    return None


def start(plane: DataPlane, loop: asyncio.AbstractEventLoop, host: str, port: int, *, threads: int,
          max_message_bytes: int, reuse_port: bool) -> tuple[grpc.Server, int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ondeck-grpc"), options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane, loop), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise UserError(f"cannot listen for gRPC on {host}:{port}")
    server.start()
    return server, bound
