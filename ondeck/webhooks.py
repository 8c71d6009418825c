"""Deliver a retrain request to the ``retrain.webhook`` URL: one POST, the outcome as text.

Shared by the operator and ``ondeck run``.

The retry bookkeeping (which episode is pending, when to try again, backing off, never twice once
delivered) is :mod:`ondeck.monitor`'s, kept in ``status.monitoring``: this module only makes the
attempt. The request id travels in ``x-ondeck-retrain-id`` (and in the body), so a receiver that
got an attempt whose answer was lost can recognise the retry. With a secret, each attempt is signed
(:mod:`ondeck.signing`: ``X-Ondeck-Signature`` over ``X-Ondeck-Timestamp`` and the body).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from ondeck import signing

TIMEOUT = 5.0


def post(url: str, payload: dict[str, Any], *, timeout: float = TIMEOUT, secret: bytes | None = None) -> str | None:
    """POST ``payload`` as JSON, signed when ``secret`` is given; None on a 2xx answer, else what went
    wrong (for the next attempt's log)."""
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "x-ondeck-retrain-id": payload["id"]}
    if secret is not None:  # signed here, over the very bytes sent
        headers.update(signing.headers(secret, body, time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
