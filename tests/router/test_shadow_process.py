"""The frames that carry mirrors from the router to its shadow process read back as the mirrors they were."""
from __future__ import annotations

import asyncio
import json

import yaml

from ondeck.serving.router.grpc_front import GrpcMirror
from ondeck.serving.router.http_front import HttpMirror, Request, _upstream_request
from ondeck.serving.router.metrics import RouterMetrics
from ondeck.serving.router.shadow_process import FRAMES_PER_TURN, FrameReader, frame

from tests.router.conftest import infer_body

CONFIG = {"model": "churn", "variants": [
    {"name": "stable", "weight": 100, "endpoints": [{"http": "127.0.0.1:1"}]},
    {"name": "candidate", "weight": 0, "endpoints": [{"http": "127.0.0.1:2"}]}],
    "shadow": {"variant": "candidate", "fraction": 1.0}}


class Recorder:
    """Stands in for the ShadowMirror: keeps what is offered."""

    def __init__(self):
        self.offered = []

    def offer(self, routes, primary, job) -> None:
        self.offered.append((routes, primary, job))


def test_frames_split_anyhow_read_back_as_the_mirrors_they_were():
    body = json.dumps(infer_body(request_id="r-1")).encode()
    req = Request(b"POST", b"/v2/models/churn/infer", [(b"content-type", b"application/json"), (b"x-request-id", b"r-1")],
                  body, True, False)
    rest = HttpMirror(_upstream_request(req), req, b'{"outputs": []}')
    grpc = GrpcMirror(b"\x0a\x05churn", (("x-request-id", "g-1"), ("trace-bin", b"\x00\xff")), b"\x12\x01a")
    stream = frame(b"C", yaml.safe_dump(CONFIG).encode(), b"router.yaml") + rest.frame("stable") + grpc.frame("canary")

    async def read() -> Recorder:
        mirror = Recorder()
        reader = FrameReader(mirror, RouterMetrics(""), asyncio.get_running_loop().create_future())
        reader.connection_made(None)
        for i in range(len(stream)):  # one byte at a time: frames cut at every possible place
            reader.data_received(stream[i:i + 1])
        return mirror

    offered = asyncio.run(read()).offered
    assert [(primary, job.protocol) for _, primary, job in offered] == [("stable", "http"), ("canary", "grpc")]
    routes, _, back = offered[0]
    assert routes.config.shadow.variant == "candidate"
    assert (back.data, back.req.method, back.req.url, back.req.body, back.primary_body) == \
           (rest.data, b"POST", req.url, body, rest.primary_body)
    assert back.request_id == "r-1"
    assert back.mergeable().data == rest.mergeable().data and back.mergeable().key == rest.mergeable().key
    _, _, back = offered[1]
    assert (back.request, back.metadata, back.primary_body) == (grpc.request, grpc.metadata, grpc.primary_body)


def test_a_backlog_is_taken_a_slice_per_loop_turn_so_full_bursts_leave_between_slices():
    req = Request(b"POST", b"/v2/models/churn/infer", [], json.dumps(infer_body()).encode(), True, False)
    mirror = HttpMirror(_upstream_request(req), req, b"{}").frame("stable")
    backlog = frame(b"C", yaml.safe_dump(CONFIG).encode(), b"router.yaml") + mirror * 1000

    async def read() -> tuple[int, int]:
        recorder = Recorder()
        reader = FrameReader(recorder, RouterMetrics(""), asyncio.get_running_loop().create_future())
        reader.connection_made(None)
        reader.data_received(backlog)  # what a process that waited for a core reads at once
        first = len(recorder.offered)
        for _ in range(10):  # the rest, a slice per turn of the loop
            await asyncio.sleep(0)
        return first, len(recorder.offered)

    first, last = asyncio.run(read())
    assert first == FRAMES_PER_TURN - 1  # the config frame was one of the first slice
    assert last == 1000
