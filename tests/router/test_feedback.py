"""Feedback through the router reaches the variant that answered (serving/router/feedback.py), with real servers."""
from __future__ import annotations

import json

from tests.helpers import wait_for
from tests.router.conftest import CHURN_ROW, config, metric, request

FEEDBACK = "/v2/models/churn/feedback"


def rows_body(i: int) -> dict:
    row = [v + (i % 7) for v in CHURN_ROW]  # a few different rows, so both classes come up
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, len(row)], "data": row}]}


def test_feedback_is_counted_by_the_variant_that_served_each_request(procs):
    a, b, shadow = procs.serve("churn/v1", "a"), procs.serve("churn/v2", "b"), procs.serve("churn/v2-bad", "candidate")
    router = procs.router(config([
        {"name": "a", "version": "v1", "weight": 50, "endpoints": [a.endpoint()]},
        {"name": "b", "version": "v2", "weight": 50, "endpoints": [b.endpoint()]},
        {"name": "candidate", "version": "v2-bad", "weight": 0, "endpoints": [shadow.endpoint()]}],
        shadow={"variant": "candidate", "fraction": 1.0}))
    served, labels = {}, {}
    for i in range(40):
        status, headers, body = request(router.http, "POST", "/v2/models/churn/infer", rows_body(i),
                                        headers={"x-request-id": f"r{i}"})
        assert status == 200
        served[f"r{i}"] = headers["x-ondeck-variant"]
        labels[f"r{i}"] = json.loads(body)["outputs"][0]["data"][0]  # the served class: feedback says it was right
    assert sorted(set(served.values())) == ["a", "b"]
    wait_for(lambda: metric(router.http, "ondeck_shadow_requests_total", outcome="compared") == 40, 30, 0.1,
             "every request mirrored to the shadow")
    items = [{"id": rid, "truth": int(label)} for rid, label in labels.items()] + [
        {"id": "never-served", "truth": 1}, {"id": "typo", "truth": 0}]
    status, headers, body = request(router.http, "POST", FEEDBACK, {"items": items})
    assert status == 200 and json.loads(body) == {"matched": 40, "unmatched": 2, "duplicates": 0}
    for name, server in (("a", a), ("b", b)):
        mine = sum(v == name for v in served.values())
        assert metric(server.http, "ondeck_feedback_total", variant=name) == mine
        assert metric(server.http, "ondeck_feedback_correct_total", variant=name) == mine  # truth = what it answered
        assert metric(server.http, "ondeck_feedback_unmatched_total") == 0  # the router counts those, once
    assert metric(shadow.http, "ondeck_feedback_total") == 0  # its answers were never served
    assert metric(router.http, "ondeck_router_feedback_items_total", result="matched") == 40
    assert metric(router.http, "ondeck_router_feedback_items_total", result="unmatched") == 2
    assert metric(router.http, "ondeck_router_feedback_requests_total", code="200") == 1
    assert metric(router.http, "ondeck_shadow_requests_total", outcome="error") == 0  # feedback is never mirrored
    assert metric(router.http, "ondeck_router_requests_total") == 40  # nor counted as an inference request

    # Again: duplicates, not counted twice.
    status, _, body = request(router.http, "POST", FEEDBACK, {"items": items[:10]})
    assert status == 200 and json.loads(body) == {"matched": 0, "unmatched": 0, "duplicates": 10}
    # A version only one variant serves: the other's 404 is left out.
    later = {}
    for i in range(100, 106):
        later[f"r{i}"] = request(router.http, "POST", "/v2/models/churn/infer", rows_body(i),
                                 headers={"x-request-id": f"r{i}"})[1]["x-ondeck-variant"]
    at_b = [{"id": rid, "truth": 0} for rid, v in later.items() if v == "b"]
    status, _, body = request(router.http, "POST", "/v2/models/churn/versions/v2/feedback", {"items": at_b})
    assert status == 200 and json.loads(body) == {"matched": len(at_b), "unmatched": 0, "duplicates": 0}
    # A bad body: the servers' 400 is passed on, nothing counted.
    status, _, body = request(router.http, "POST", FEEDBACK, {"items": [{"id": "r1", "truth": 7}]})
    assert status == 400 and "not one of the classes" in json.loads(body)["error"]
    status, _, body = request(router.http, "POST", "/v2/models/churn/versions/v9/feedback", {"items": items[:1]})
    assert status == 404


def test_a_variant_that_cannot_be_reached_fails_the_feedback_without_counting_unmatched(procs):
    a, b = procs.serve("churn/v1", "a"), procs.serve("churn/v2", "b")
    router = procs.router(config([
        {"name": "a", "version": "v1", "weight": 50, "endpoints": [a.endpoint()]},
        {"name": "b", "version": "v2", "weight": 50, "endpoints": [b.endpoint()]}]))
    for i in range(4):
        assert request(router.http, "POST", "/v2/models/churn/infer", rows_body(i), headers={"x-request-id": f"r{i}"})[0] == 200
    b.kill()
    items = [{"id": f"r{i}", "truth": 0} for i in range(4)]
    status, _, body = request(router.http, "POST", FEEDBACK, {"items": items})
    assert status == 503 and "variant 'b' did not answer" in json.loads(body)["error"]
    assert metric(router.http, "ondeck_router_feedback_items_total", result="unmatched") == 0
    assert metric(router.http, "ondeck_router_feedback_requests_total", code="503") == 1
    # What a matched is counted there, once (sent again, it would come back as a duplicate).
    assert 0 < metric(a.http, "ondeck_feedback_total") < 4
