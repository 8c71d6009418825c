"""Generated traffic for the demo and the tests: bounded, on loopback, with feedback labels.

Requests go through the router (``POST /v2/models/<model>/infer``) with an ``x-request-id``; for a
share of them the true labels are posted back as feedback (``/v2/models/<model>/feedback``), so live
accuracy exists. Feedback is joined to the prediction by the server that made it: it goes, batched
per variant (the router names it in ``x-ondeck-variant``), to the address ``feedback_to(variant)``
gives: that variant's server, or the router, which hands it to every variant.
"""
from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

FEEDBACK_BATCH = 200  # labels per feedback request
CONNECT_TIMEOUT = 5.0


def churn_requests(package: str | Path, requests: int, *, rows: int = 1, seed: int = 0,
                   shift: dict[str, float] | None = None) -> tuple[list[bytes], list[list[int]]]:
    """V2 infer bodies of ``rows`` live churn rows each, and their true labels (``churned``)."""
    from ondeck.package.examples import CHURN_LABEL, churn_frame

    meta = json.loads((Path(package) / "ondeck.json").read_text())
    spec = meta["inputs"][0]
    frame = churn_frame(requests * rows, seed=seed, part="live", shift=shift)
    x = frame[spec["features"]].to_numpy(dtype="float32").round(4)
    y = frame[CHURN_LABEL].to_numpy()
    bodies, labels = [], []
    for i in range(0, requests * rows, rows):
        data = [float(v) for v in x[i:i + rows].ravel()]
        bodies.append(json.dumps({"inputs": [{"name": spec["name"], "shape": [rows, x.shape[1]], "datatype": "FP32",
                                              "data": data}]}).encode())
        labels.append([int(v) for v in y[i:i + rows]])
    return bodies, labels


class Traffic:
    """``rate`` requests per second from a few threads until :meth:`stop` (or ``max_requests``)."""

    def __init__(self, router: str, model: str, bodies: list[bytes], labels: list[list[int]], *, rate: float,
                 feedback: float = 0.5, feedback_to: Callable[[str], str | None] = lambda variant: None,
                 threads: int = 4, seed: int = 0, max_requests: int | None = None, prefix: str = "req",
                 headers_for: Callable[[int], dict[str, str]] | None = None):
        """``headers_for(k)``: extra headers of the k-th request (e.g. a user key for sticky routing)."""
        self.router, self.model = router, model
        self.headers_for = headers_for
        self.rate, self.feedback, self.feedback_to = rate, feedback, feedback_to
        self.threads, self.max_requests, self.prefix = threads, max_requests, prefix
        self._rows = (bodies, labels)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._workers: list[threading.Thread] = []
        self.sent = self.failed = self.feedback_posted = self.feedback_failed = 0
        self.by_variant: dict[str, int] = defaultdict(int)
        self.by_status: dict[int, int] = defaultdict(int)

    def use(self, bodies: list[bytes], labels: list[list[int]]) -> None:
        """Switch the rows sent from now on (e.g. to drifted ones)."""
        self._rows = (bodies, labels)

    def start(self) -> "Traffic":
        self._t0 = time.monotonic()
        self._workers = [threading.Thread(target=self._work, name=f"traffic-{i}", daemon=True) for i in range(self.threads)]
        for w in self._workers:
            w.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout)
        self._flush_feedback(force=True)

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        path = f"/v2/models/{self.model}/infer"
        while not self._stop.is_set():
            k = next(self._counter)
            if self.max_requests is not None and k >= self.max_requests:
                return
            due = self._t0 + k / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):  # pacing to the rate, not synchronisation
                return
            bodies, labels = self._rows
            i = k % len(bodies)
            request_id = f"{self.prefix}-{k}"
            try:
                conn = conn or http.client.HTTPConnection(*self._host_port(self.router), timeout=CONNECT_TIMEOUT)
                headers = {"content-type": "application/json", "x-request-id": request_id}
                if self.headers_for is not None:
                    headers.update(self.headers_for(k))
                conn.request("POST", path, bodies[i], headers)
                resp = conn.getresponse()
                resp.read()
                status, variant = resp.status, resp.getheader("x-ondeck-variant")
            except (OSError, http.client.HTTPException):
                if conn:
                    conn.close()
                conn = None
                with self._lock:
                    self.failed += 1
                continue
            with self._lock:
                self.sent += 1
                self.by_status[status] += 1
                if variant:
                    self.by_variant[variant] += 1
                if status == 200 and variant and self._rng.random() < self.feedback:
                    self._pending[variant] += [{"id": request_id, "row": j, "truth": t} for j, t in enumerate(labels[i])]
            self._flush_feedback()
        if conn:
            conn.close()

    def _flush_feedback(self, force: bool = False) -> None:
        with self._lock:
            ready = {v: items for v, items in self._pending.items() if items and (force or len(items) >= FEEDBACK_BATCH)}
            for v in ready:
                self._pending[v] = []
        for variant, items in ready.items():
            address = self.feedback_to(variant)
            ok = address is not None and self._post_feedback(address, items)
            with self._lock:
                if ok:
                    self.feedback_posted += len(items)
                else:
                    self.feedback_failed += len(items)

    def _post_feedback(self, address: str, items: list[dict[str, Any]]) -> bool:
        conn = http.client.HTTPConnection(*self._host_port(address), timeout=CONNECT_TIMEOUT)
        try:
            conn.request("POST", f"/v2/models/{self.model}/feedback", json.dumps({"items": items}).encode(),
                         {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    @staticmethod
    def _host_port(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        return host, int(port)
