"""Reloads and failures under load: no request is lost to a config change, and a killed replica
costs at most 0.1% of requests."""
from __future__ import annotations

import json
import threading
from collections import Counter

from tests.helpers import wait_for
from tests.router.conftest import ONDECK, config, load, metric, request, variants, write_config


class Background:
    """``load(...)`` in a thread, with its progress visible to the test."""

    def __init__(self, port: int, total: int, clients: int):
        self.progress: list = []
        self.outcomes: list = []
        self._thread = threading.Thread(target=lambda: self.outcomes.extend(
            load(port, total=total, clients=clients, progress=self.progress)), daemon=True)
        self._thread.start()

    def wait_done(self, timeout: float = 120) -> list:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "load did not finish"
        return self.outcomes


def current_weights(router) -> dict[str, int]:
    doc = json.loads(request(router.http, "GET", "/admin/config")[2])
    return {v["name"]: v["weight"] for v in doc["config"]["variants"]}


def test_hot_reload_under_load_loses_nothing(procs, servers):
    router = procs.router(config(variants(servers, stable=90, canary=10)))
    bg = Background(router.http, total=3000, clients=4)

    wait_for(lambda: len(bg.progress) >= 500, timeout=60, what="load under way")
    write_config(router.config_path, config(variants(servers, stable=50, canary=50)))  # picked up by the file watch
    wait_for(lambda: current_weights(router) == {"stable": 50, "canary": 50}, timeout=10, what="file reload")

    wait_for(lambda: len(bg.progress) >= 1500, timeout=60, what="more load")
    write_config(router.config_path, config(variants(servers, stable=0, canary=100)))
    status, _, body = request(router.http, "POST", "/admin/reload")  # applied now, not at the next poll
    assert status == 200 and {v["name"]: v["weight"] for v in json.loads(body)["config"]["variants"]} == {"stable": 0, "canary": 100}
    served_before = len(bg.progress)

    outcomes = bg.wait_done()
    assert len(outcomes) == 3000 and all(o.status == 200 for o in outcomes)
    by_variant = Counter(o.variant for o in outcomes)
    assert by_variant["canary"] > 0.1 * 3000  # the split really moved during the run
    # everything sent after the admin reload went to canary (the clients' in-flight requests may not have)
    assert by_variant["canary"] >= 3000 - served_before - 4
    assert metric(router.http, "ondeck_router_config_reloads_total", result="ok") >= 2
    assert metric(router.http, "ondeck_router_weight", variant="canary") == 100


def test_bad_reload_is_rejected_and_the_old_config_kept(procs, servers):
    router = procs.router(config(variants(servers)))
    router.config_path.write_text("model: churn\nvariants: [{name: stable, weight: 70, endpoints: [{http: 'x:1'}]}]\n")
    wait_for(lambda: metric(router.http, "ondeck_router_config_reloads_total", result="error") >= 1, timeout=10,
             what="the rejected reload counted")
    status, _, body = request(router.http, "POST", "/admin/reload")
    assert status == 400 and "weights must add up to 100, got 70" in json.loads(body)["error"]
    assert current_weights(router) == {"stable": 90, "canary": 10}
    outcomes = load(router.http, total=100, clients=2)
    assert Counter((o.status, o.variant) for o in outcomes) == {(200, "stable"): 90, (200, "canary"): 10}


def test_killing_a_replica_under_load_costs_at_most_a_tenth_of_a_percent(procs):
    replicas = [procs.serve("churn/v1", "stable"), procs.serve("churn/v1", "stable")]
    router = procs.router(config([{"name": "stable", "version": "v1", "weight": 100,
                                   "endpoints": [r.endpoint() for r in replicas]}]))
    bg = Background(router.http, total=3000, clients=4)
    wait_for(lambda: len(bg.progress) >= 800, timeout=60, what="load under way")
    replicas[0].kill()  # SIGKILL: no drain, connections reset mid-request
    outcomes = bg.wait_done()

    failed = sum(o.status != 200 for o in outcomes)
    print(f"replica kill under load: {failed} of {len(outcomes)} requests failed")
    assert len(outcomes) == 3000
    assert failed / len(outcomes) <= 0.001, Counter(o.status for o in outcomes)
    # the dead replica was noticed and ejected, and the survivor took the rest
    assert metric(router.http, "ondeck_router_endpoint_ejections_total", endpoint=replicas[0].http_address) >= 1


def test_workers_share_the_ports_metrics_and_reloads(procs, servers):
    from tests.helpers import free_port

    http, grpc = free_port(), free_port()
    path = write_config(procs.tmp / "router-workers.yaml", config(variants(servers, stable=90, canary=10)))
    router = procs._start([*ONDECK, "route", "--config", str(path), "--host", "127.0.0.1",
                           "--http-port", str(http), "--grpc-port", str(grpc), "--workers", "2",
                           "--poll-seconds", "60"],  # so only the admin reload's signal can update the other worker
                          "router-workers", "/healthz", ports=(http, grpc))
    outcomes = load(router.http, total=1000, clients=8)
    assert all(o.status == 200 for o in outcomes)
    canary = Counter(o.variant for o in outcomes)["canary"]
    assert abs(canary - 100) <= 2  # each worker's split is exact: off by at most one request per worker
    # whichever worker answers a scrape reports both, the other's share from its snapshot (at most a second
    # old): so wait until several scrapes in a row, over fresh connections that reach either worker, agree
    wait_for(lambda: all(metric(router.http, "ondeck_router_requests_total") == 1000 for _ in range(8)),
             timeout=10, what="every worker's scrape summing both workers")

    write_config(path, config(variants(servers, stable=0, canary=100)))
    assert request(router.http, "POST", "/admin/reload")[0] == 200
    # the other worker is told at once: new requests over 8 fresh connections (spread over both workers) go to canary
    wait_for(lambda: all(o.variant == "canary" for o in load(router.http, total=40, clients=8)), timeout=3,
             what="both workers on the new weights")
