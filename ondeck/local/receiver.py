"""A retrain-webhook receiver on loopback: what a CI system's hook would be, for the demo and tests.

It answers every ``POST`` with 200 and keeps what it got (path, the retrain id header, the JSON
body), so a caller can check that each retrain episode arrived exactly once. Given a ``secret`` it
checks signatures as a real receiver should (:func:`ondeck.signing.verify` on the raw body): a
request that fails is answered 401 and kept with ``verified: False`` and the reason.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ondeck import signing

MAX_BODY = 1 << 20


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, secret: bytes | None = None):
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                if not 0 <= length <= MAX_BODY:
                    self.send_error(413, "body too large")
                    return
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    self.send_error(400, "expected a JSON body")
                    return
                record = {"time": time.time(), "path": self.path, "body": body,
                          "id": self.headers.get("x-ondeck-retrain-id"),
                          "signature": self.headers.get(signing.SIGNATURE_HEADER),
                          "timestamp": self.headers.get(signing.TIMESTAMP_HEADER), "verified": None}
                if receiver.secret is not None:
                    try:
                        signing.verify(receiver.secret, raw, record["signature"], record["timestamp"], now=time.time())
                        record["verified"] = True
                    except signing.BadSignature as exc:
                        record.update(verified=False, error=str(exc))
                receiver._keep(record)
                if record["verified"] is False:
                    self.send_error(401, "bad signature")
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "15")
                self.end_headers()
                self.wfile.write(b'{"status":"ok"}')

            def log_message(self, *args: Any) -> None:
                pass  # the demo prints what matters itself

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="retrain-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _keep(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(record)

    def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.received if r["path"].startswith(path_prefix)]

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
