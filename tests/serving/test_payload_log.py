"""Payload logging: sampled records off the request path, rotation, drops counted, all flushed on close."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ondeck.serving.payload_log import PayloadLog, record
from tests.helpers import wait_for

from .conftest import sample


def lines(directory, worker=0):
    out = []
    for path in sorted(directory.glob(f"payload-{worker}.jsonl*"), reverse=True):  # .3 .2 .1 then current
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def rec(i: int) -> dict:
    return record(f"id-{i}", "m", "v", "default", "rest_v2", np.full((1, 2), i, np.float32), {"label": np.array([i])})


def test_records_rotate_and_close_flushes_everything(tmp_path):
    log = PayloadLog(tmp_path, 0, 1.0, max_bytes=600, backups=20)
    for i in range(30):
        assert log.offer(rec(i))
    log.close()
    got = lines(tmp_path)
    assert [r["id"] for r in got] == [f"id-{i}" for i in range(30)]
    assert got[3]["rows"] == [[3.0, 3.0]] and got[3]["outputs"] == {"label": [3]}
    files = list(tmp_path.glob("payload-0.jsonl*"))
    assert len(files) > 2 and all(f.stat().st_size <= 600 for f in files)


def test_a_full_queue_drops_instead_of_blocking(tmp_path):
    release = threading.Event()
    written = []
    log = PayloadLog(tmp_path, 0, 1.0, queue_size=1, on_written=lambda tag: (release.wait(10), written.append(tag)))
    assert log.offer(rec(0), 0)
    wait_for(lambda: log.waiting() == 0, timeout=10, what="the writer to take the first record")
    assert log.offer(rec(1), 1)      # waits in the queue while the writer is held
    assert not log.offer(rec(2), 2)  # queue full: dropped, the caller counts it
    release.set()
    log.close()
    assert written == [0, 1] and [r["id"] for r in lines(tmp_path)] == ["id-0", "id-1"]


def test_sampling_fraction(tmp_path):
    log = PayloadLog(tmp_path, 0, 0.25)
    hits = sum(log.sampled() for _ in range(4000))
    log.close()
    assert 700 < hits < 1300


def test_server_logs_requests_with_their_ids(start_server, tmp_path, churn_rows):
    server = start_server("--payload-log-dir", str(tmp_path), "--payload-log-fraction", "1")
    rows = churn_rows[0][:2]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 20], "data": rows.ravel().tolist()}]}
    server.request("POST", "/v2/models/churn/infer", body, {"x-request-id": "logged-1"})
    wait_for(lambda: sample(server.metrics(), "ondeck_payload_log_records_total") == 1, timeout=10, what="the record")
    (line,) = lines(tmp_path)
    assert line["id"] == "logged-1" and line["model"] == "churn" and line["version"] == "v1"
    assert line["variant"] == "default" and line["protocol"] == "rest_v2"
    np.testing.assert_allclose(line["rows"], rows, rtol=1e-6)
    assert set(line["outputs"]) == {"label", "probabilities"}


def test_server_counts_what_it_drops(start_server, tmp_path, churn_rows):
    # A queue of one and bursts of concurrent requests answered in the same loop iteration.
    server = start_server("--payload-log-dir", str(tmp_path), "--payload-log-fraction", "1", "--payload-log-queue", "1",
                          "--max-batch-size", "32", "--max-batch-delay-us", "20000")
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": churn_rows[0][0].tolist()}]}
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: server.request("POST", "/v2/models/churn/infer", body)[0], range(128)))
    assert statuses == [200] * 128

    def settled():
        m = server.metrics()
        return sample(m, "ondeck_payload_log_records_total") + sample(m, "ondeck_payload_log_dropped_total") == 128

    wait_for(settled, timeout=20, what="every response logged or counted as dropped")
    m = server.metrics()
    assert sample(m, "ondeck_payload_log_dropped_total") > 0
    code, _ = server.terminate()
    assert code == 0
    assert len(lines(tmp_path)) == sample(m, "ondeck_payload_log_records_total")
