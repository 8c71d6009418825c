"""/metrics: names and labels of docs/metrics.md, bin counters that add up, complete across workers."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import ondeck
from ondeck.package.profile import bin_counts, prediction_columns

from tests.helpers import wait_for

from .conftest import sample

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def infer(server, rows, path="/v2/models/churn/infer"):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    status, out = server.json("POST", path, body)
    assert status == 200, out
    return out


def test_every_server_metric_of_the_doc_is_exported_with_its_labels(start_server):
    server = start_server(env={"ONDECK_VARIANT": "canary"})
    infer(server, np.ones((1, 20), np.float32))
    documented = set(re.findall(r"^\| `(ondeck_[a-z_]+)`", DOC.read_text().split("## Router")[0], re.M))
    _, _, raw = server.request("GET", "/metrics")
    text = raw.decode()
    exported = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    assert documented and documented <= exported, documented - exported
    for line in text.splitlines():
        if line.startswith("ondeck_") and 'model="churn"' in line:
            assert 'version="v1"' in line and 'variant="canary"' in line, line
    assert sample(server.metrics(), "ondeck_model_info", model="churn", version="v1", variant="canary") == 1


def test_bins_add_up_to_the_rows_served(start_server, examples_dir, churn_rows):
    server = start_server()
    churn = ondeck.load(str(examples_dir / "churn" / "v1"))
    ref = churn.reference
    rows = churn_rows[0][:300]
    for chunk in np.array_split(rows, 37):  # many requests, some batched together
        infer(server, chunk)
    m = server.metrics()
    assert sample(m, "ondeck_inference_rows_total") == 300
    assert sample(m, "ondeck_requests_total", protocol="rest_v2", code="200") == 37
    assert sample(m, "ondeck_request_duration_seconds_count", protocol="rest_v2") == 37
    for i, feature in enumerate(churn.features):
        expected = bin_counts(ref["features"][feature]["bin_edges"], rows[:, i])
        got = [sample(m, "ondeck_feature_bin_total", feature=feature, bin=str(b)) for b in range(len(expected))]
        assert got == expected.tolist(), feature
    preds = prediction_columns(churn.predict_proba(rows), None)
    for output in ("class", "score"):
        expected = bin_counts(ref["prediction"][output]["bin_edges"], preds[output])
        got = [sample(m, "ondeck_prediction_bin_total", output=output, bin=str(b)) for b in range(len(expected))]
        assert got == expected.tolist(), output


def test_two_workers_count_everything_and_join_feedback_across(start_server, examples_dir, churn_rows):
    server = start_server("--feedback-capacity", "1000", workers=2)
    rows, labels = churn_rows
    ids = []
    # A new connection per request: SO_REUSEPORT spreads them over both workers (all 40 on one has
    # odds of 2^-39), so a scrape that misses the other worker's counts would fail below.
    for i in range(40):
        status, headers, raw = server.request("POST", "/v2/models/churn/infer", {"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 20], "data": rows[i].tolist()}]}, {"x-request-id": f"w-{i}"})
        assert status == 200
        ids.append(f"w-{i}")
    # Whichever worker answers the scrape, the totals are complete; the other worker's bin counters
    # catch up within its flush period (0.25 s).
    for _ in range(4):
        assert sample(server.metrics(), "ondeck_inference_rows_total") == 40
    wait_for(lambda: sample(server.metrics(), "ondeck_feature_bin_total", feature="age") == 40, timeout=10,
             what="both workers' bins in one scrape")
    status, out = server.json("POST", "/v2/models/churn/feedback",
                              {"items": [{"id": rid, "truth": int(labels[i])} for i, rid in enumerate(ids)]})
    assert status == 200 and out == {"matched": 40, "unmatched": 0, "duplicates": 0}
    assert sample(server.metrics(), "ondeck_feedback_total") == 40

