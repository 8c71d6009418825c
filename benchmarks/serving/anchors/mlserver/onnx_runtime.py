"""The MLServer anchor: a custom MLModel runtime running the ONNX model with onnxruntime.

bench.py writes settings.json and model-settings.json beside this file's copy and runs `mlserver start`.
"""
import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxChurn(MLModel):
    async def load(self) -> bool:
        self.session = ort.InferenceSession(os.path.join(os.environ["MODEL_DIR"], "model.onnx"))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        label, proba = self.session.run(None, {"input": x})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("label", label), NumpyCodec.encode_output("probabilities", proba)],
        )
