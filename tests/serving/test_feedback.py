"""Feedback joins true labels to served predictions and exports live accuracy / error."""
from __future__ import annotations

import numpy as np
import pytest

import ondeck

from .conftest import sample


def infer(server, rows, request_id):
    body = {"id": request_id, "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                                          "data": rows.ravel().tolist()}]}
    status, out = server.json("POST", "/v2/models/" + server.model + "/infer", body)
    assert status == 200, out
    return out


def test_classifier_accuracy(start_server, examples_dir, churn_rows):
    server = start_server("--feedback-capacity", "50")
    server.model = "churn"
    churn = ondeck.load(str(examples_dir / "churn" / "v1"))
    rows, labels = churn_rows
    for i in range(20):
        infer(server, rows[i:i + 1], f"req-{i}")
    infer(server, rows[20:23], "multi")  # a 3-row request: feedback names the row
    items = [{"id": f"req-{i}", "truth": int(labels[i])} for i in range(20)]
    items += [{"id": "multi", "row": k, "truth": int(labels[20 + k])} for k in range(3)]
    items += [{"id": "never-served", "truth": 1}, {"id": "multi", "row": 7, "truth": 0}]
    status, out = server.json("POST", "/v2/models/churn/feedback", {"items": items})
    assert status == 200 and out == {"matched": 23, "unmatched": 2, "duplicates": 0}
    correct = int((churn.predict(rows[:23]) == labels[:23]).sum())
    m = server.metrics()
    assert sample(m, "ondeck_feedback_total", model="churn", version="v1") == 23
    assert sample(m, "ondeck_feedback_correct_total") == correct
    assert sample(m, "ondeck_feedback_unmatched_total") == 2
    # The same rows again: counted once only.
    status, out = server.json("POST", "/v2/models/churn/versions/v1/feedback", {"items": items[:5]})
    assert out == {"matched": 0, "unmatched": 0, "duplicates": 5}
    # Old predictions fall out of the bounded store (capacity 50 rows).
    for i in range(60):
        infer(server, rows[i:i + 1], f"later-{i}")
    status, out = server.json("POST", "/v2/models/churn/feedback", {"items": [{"id": "later-0", "truth": 0},
                                                                              {"id": "later-59", "truth": 0}]})
    assert out == {"matched": 1, "unmatched": 1, "duplicates": 0}


@pytest.mark.parametrize("doc, message", [
    ({"items": []}, '{"items"'),
    ({"items": [{"truth": 1}]}, "items[0] needs an 'id'"),
    ({"items": [{"id": "x", "truth": 7}]}, "not one of the classes [0, 1]"),
    ({"items": [{"id": "x", "truth": 1, "row": -1}]}, "non-negative"),
])
def test_bad_feedback(server, doc, message):
    status, err = server.json("POST", "/v2/models/churn/feedback", doc)
    assert status == 400 and err["reason"] == "bad_request" and message in err["error"]


def test_feedback_for_an_unknown_model(server):
    status, err = server.json("POST", "/v2/models/nope/feedback", {"items": [{"id": "x", "truth": 1}]})
    assert status == 404 and err["reason"] == "not_found"


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from ondeck.package.build import package

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"]).astype(np.float32)
    y = x["a"] * 2 + x["b"] - x["c"]
    return package(LinearRegression().fit(x, y), x, name="price", version="r1",
                   out=tmp_path_factory.mktemp("pkg") / "price")


def test_regressor_absolute_error(start_server, regressor):
    server = start_server(packages=[str(regressor)])
    server.model = "price"
    rows = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    out = infer(server, rows, "r")
    preds = np.array(out["outputs"][0]["data"])
    truths = [2.5, 1.0, -2.0]
    status, res = server.json("POST", "/v2/models/price/feedback",
                              {"items": [{"id": "r", "row": k, "truth": t} for k, t in enumerate(truths)]})
    assert res["matched"] == 3
    m = server.metrics()
    assert sample(m, "ondeck_feedback_absolute_error_total") == pytest.approx(float(np.abs(preds - truths).sum()), rel=1e-5)
    status, err = server.json("POST", "/v2/models/price/feedback", {"items": [{"id": "r", "truth": "high"}]})
    assert status == 400 and "predicts a number" in err["error"]


def test_conversions_and_fanned_out_copies(start_server, churn_rows):
    """Positive outcomes (truth class 1) are counted for conversion A/B tests; a router's fanned-out
    copy (x-ondeck-feedback-fanout) leaves unmatched ids to the router."""
    server = start_server()
    server.model = "churn"
    rows, _ = churn_rows
    for i in range(6):
        infer(server, rows[i:i + 1], f"c-{i}")
    items = [{"id": f"c-{i}", "truth": int(i % 3 == 0)} for i in range(6)] + [{"id": "elsewhere", "truth": 1}]
    status, out = server.json("POST", "/v2/models/churn/feedback", {"items": items},
                              headers={"x-ondeck-feedback-fanout": "1", "content-type": "application/json"})
    assert status == 200 and out == {"matched": 6, "unmatched": 1, "duplicates": 0}
    m = server.metrics()
    assert sample(m, "ondeck_feedback_total") == 6 and sample(m, "ondeck_feedback_positive_total") == 2
    assert sample(m, "ondeck_feedback_unmatched_total") == 0  # the router counts it, once, not every variant
    server.json("POST", "/v2/models/churn/feedback", {"items": [{"id": "nowhere", "truth": 0}]})
    assert sample(server.metrics(), "ondeck_feedback_unmatched_total") == 1  # sent directly: counted here
