"""The router's metric store: Prometheus text that parses, and workers' snapshots summed into one view."""
from __future__ import annotations

import orjson
from prometheus_client.parser import text_string_to_metric_families

from ondeck.serving.router.compare import Pair
from ondeck.serving.router.metrics import RouterMetrics


def samples(text: bytes) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_exposition_parses_with_documented_names_and_buckets():
    m = RouterMetrics("churn")
    for seconds in (0.0004, 0.0005, 0.003, 20.0):
        m.answered("stable", "v1", "rest_v2", 200, seconds)
    m.answered("canary", "v2", "grpc", 503, 0.001)
    m.set_weights({("stable", "v1"): 90, ("canary", "v2"): 10})
    m.compared("stable", "cand", [Pair(True, 0.2), Pair(False, None)])
    s = samples(m.exposition())
    base = (("model", "churn"), ("protocol", "rest_v2"), ("variant", "stable"), ("version", "v1"))
    assert s[("ondeck_router_requests_total", tuple(sorted(base + (("code", "200"),))))] == 4
    assert s[("ondeck_router_request_duration_seconds_bucket", tuple(sorted(base + (("le", "0.0005"),))))] == 2  # le includes
    assert s[("ondeck_router_request_duration_seconds_bucket", tuple(sorted(base + (("le", "10.0"),))))] == 3
    assert s[("ondeck_router_request_duration_seconds_count", base)] == 4
    pair = (("model", "churn"), ("primary", "stable"), ("shadow", "cand"))
    assert s[("ondeck_shadow_agreement_total", pair)] == 1
    assert s[("ondeck_shadow_requests_total", tuple(sorted(pair + (("outcome", "compared"),))))] == 2
    assert s[("ondeck_shadow_abs_diff_count", pair)] == 1
    assert s[("ondeck_router_weight", (("model", "churn"), ("variant", "canary"), ("version", "v2")))] == 10
    assert s[("ondeck_router_config_reloads_total", (("result", "error"),))] == 0  # exists before the first error


def test_peer_snapshots_are_summed_but_gauges_are_not():
    mine, peer = RouterMetrics("churn"), RouterMetrics("churn")
    mine.answered("stable", "v1", "rest_v2", 200, 0.001)
    peer.answered("stable", "v1", "rest_v2", 200, 0.002)
    peer.answered("canary", "v2", "rest_v2", 200, 0.002)
    peer.reloaded(ok=True)
    mine.set_weights({("stable", "v1"): 100})
    peer.set_weights({("stable", "v1"): 100})
    s = samples(mine.exposition([orjson.loads(orjson.dumps(peer.snapshot()))]))  # as a worker reads it from disk
    stable = (("model", "churn"), ("protocol", "rest_v2"), ("variant", "stable"), ("version", "v1"))
    assert s[("ondeck_router_requests_total", tuple(sorted(stable + (("code", "200"),))))] == 2
    assert s[("ondeck_router_request_duration_seconds_sum", stable)] == 0.003
    assert s[("ondeck_router_config_reloads_total", (("result", "ok"),))] == 1
    assert s[("ondeck_router_weight", (("model", "churn"), ("variant", "stable"), ("version", "v1")))] == 100
