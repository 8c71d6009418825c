"""kserve's InferenceRESTClient (V2 and V1) and InferenceGRPCClient, unmodified, in their own process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import ondeck


def test_kserve_clients(server, churn_rows, examples_dir):
    churn = ondeck.load(str(examples_dir / "churn" / "v1"))
    rows = churn_rows[0][:6]
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("kserve_client_check.py")), server.url, server.grpc,
         json.dumps(rows.tolist())],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = churn.predict(rows).tolist()
    assert out["rest_live"] and out["rest_ready"] and out["rest_model_ready"]
    assert out["v1_live"] and out["v1_model_ready"]
    assert out["grpc_live"] and out["grpc_ready"] and out["grpc_model_ready"]
    assert out["rest_id"] == "kserve-rest-1" and out["grpc_id"] == "kserve-grpc-1"
    assert out["rest_label"] == expected and out["grpc_label"] == expected and out["v1_predictions"] == expected
    np.testing.assert_allclose(np.array(out["rest_proba"]).reshape(-1, 2), churn.predict_proba(rows), rtol=1e-6)
