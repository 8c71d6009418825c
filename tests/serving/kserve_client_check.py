"""Drive `ondeck serve` with kserve's own clients; run as a separate process (see test_kserve_client).

kserve registers `inference.*` protobuf messages that clash with tritonclient's, so it cannot share
a process with the tritonclient tests. Prints one JSON document with what the clients got back.
"""
from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(rows: np.ndarray, request_id: str) -> InferRequest:
    inp = InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    return InferRequest(model_name="churn", infer_inputs=[inp], request_id=request_id)


async def main(url: str, grpc_address: str, rows_json: str) -> dict:
    rows = np.asarray(json.loads(rows_json), dtype=np.float32)
    out: dict = {}
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out["rest_live"] = await v2.is_server_live(url)
    out["rest_ready"] = await v2.is_server_ready(url)
    out["rest_model_ready"] = await v2.is_model_ready(url, "churn")
    res = await v2.infer(url, request(rows, "kserve-rest-1"), model_name="churn")
    out["rest_id"] = res.id
    out["rest_label"] = res.outputs[0].as_numpy().tolist()
    out["rest_proba"] = {o.name: o.as_numpy().tolist() for o in res.outputs}["probabilities"]
    await v2.close()
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))
    out["v1_live"] = await v1.is_server_live(url)
    out["v1_model_ready"] = await v1.is_model_ready(url, "churn")
    out["v1_predictions"] = (await v1.infer(url, {"instances": rows.tolist()}, model_name="churn"))["predictions"]
    await v1.close()
    client = InferenceGRPCClient(grpc_address, timeout=30)
    out["grpc_live"] = await client.is_server_live()
    out["grpc_ready"] = await client.is_server_ready()
    out["grpc_model_ready"] = await client.is_model_ready("churn")
    res = await client.infer(request(rows, "kserve-grpc-1"))
    out["grpc_id"] = res.id
    out["grpc_label"] = {o.name: o.as_numpy().tolist() for o in res.outputs}["label"]
    await client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
