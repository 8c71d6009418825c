"""The anchor: an ONNX model behind FastAPI + uvicorn, the way a user writes it (V2 JSON in and out)."""
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

session = ort.InferenceSession(os.path.join(os.environ["MODEL_DIR"], "model.onnx"))
app = FastAPI()


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferRequest(BaseModel):
    inputs: list[Tensor]


@app.post("/v2/models/{name}/infer")
def infer(name: str, request: InferRequest):
    x = np.asarray(request.inputs[0].data, dtype=np.float32).reshape(request.inputs[0].shape)
    label, proba = session.run(None, {"input": x})
    return {
        "model_name": name,
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": list(label.shape), "data": label.tolist()},
            {"name": "probabilities", "datatype": "FP32", "shape": list(proba.shape), "data": proba.ravel().tolist()},
        ],
    }
