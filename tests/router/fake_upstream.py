"""A stand-in model server for fault injection: answers V2 infer (REST and gRPC) with a fixed
prediction, optionally after a delay. Used where the real `ondeck serve` cannot misbehave on
purpose: a shadow that sleeps, an endpoint that answers what we say.

    python -m tests.router.fake_upstream --http-port P --grpc-port G --name NAME [--proba 0.8] [--sleep 2]
"""
from __future__ import annotations

import argparse
import asyncio
import struct

import grpc
import httptools
import orjson
import uvloop

from ondeck.serving.protocol import grpc_predict_v2_pb2 as pb


def answer(name: str, proba: float, rows: int = 1) -> dict:
    return {"model_name": "churn", "model_version": name, "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [rows], "data": [int(proba >= 0.5)] * rows},
        {"name": "probabilities", "datatype": "FP32", "shape": [rows, 2], "data": [1 - proba, proba] * rows},
    ]}


class Http(asyncio.Protocol):
    def __init__(self, args):
        self.args = args
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""
        self.headers = {}

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.url, self.body, self.headers = b"", b"", {}

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        asyncio.get_running_loop().create_task(self.respond(self.url, self.body, self.headers))

    async def respond(self, url, body, headers):
        if url.endswith(b"/infer"):
            await asyncio.sleep(self.args.sleep)
            doc = answer(self.args.name, self.args.proba)
            rid = headers.get("x-request-id") or orjson.loads(body or b"{}").get("id")
            if rid:
                doc["id"] = rid
            status, payload = 200, orjson.dumps(doc)
        elif url.startswith(b"/v2/health/"):
            status, payload = 200, b"{}"
        else:
            status, payload = 404, b'{"error": "not found"}'
        self.transport.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nx-served-by: %s\r\n"
                             b"content-length: %d\r\n\r\n%s" % (status, self.args.name.encode(), len(payload), payload))


class Grpc:
    def __init__(self, args):
        self.args = args

    async def ModelInfer(self, request, context):
        if self.args.sleep:
            await asyncio.sleep(self.args.sleep)
        p = self.args.proba
        await context.send_initial_metadata((("x-served-by", self.args.name),))
        return pb.ModelInferResponse(
            model_name="churn", model_version=self.args.name, id=request.id,
            outputs=[pb.ModelInferResponse.InferOutputTensor(name="label", datatype="INT64", shape=[1]),
                     pb.ModelInferResponse.InferOutputTensor(name="probabilities", datatype="FP32", shape=[1, 2])],
            raw_output_contents=[struct.pack("<q", int(p >= 0.5)), struct.pack("<2f", 1 - p, p)])

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)


async def main(args):
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Http(args), "127.0.0.1", args.http_port)
    server = grpc.aio.server()
    servicer = Grpc(args)
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(servicer.ModelInfer, pb.ModelInferRequest.FromString,
                                                          pb.ModelInferResponse.SerializeToString),
        "ServerReady": grpc.unary_unary_rpc_method_handler(servicer.ServerReady, pb.ServerReadyRequest.FromString,
                                                           pb.ServerReadyResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),))
    server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    await server.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--proba", type=float, default=0.8)
    p.add_argument("--sleep", type=float, default=0.0)
    uvloop.run(main(p.parse_args()))
