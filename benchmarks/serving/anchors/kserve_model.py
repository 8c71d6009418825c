"""The KServe anchor: a custom kserve.Model running the ONNX model with onnxruntime, as KServe's docs show.

Run: MODEL_DIR=... python kserve_model.py --http_port P --grpc_port G --workers 1
"""
import os
import uuid

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Churn(Model):
    def __init__(self):
        super().__init__("churn")
        self.session = ort.InferenceSession(os.path.join(os.environ["MODEL_DIR"], "model.onnx"))
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32)
        label, proba = self.session.run(None, {"input": x})
        outputs = []
        for name, arr, datatype in (("label", label, "INT64"), ("probabilities", proba, "FP32")):
            out = InferOutput(name=name, shape=list(arr.shape), datatype=datatype)
            out.set_data_from_numpy(arr, binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    ModelServer().start([Churn()])
