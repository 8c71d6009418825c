"""Deliver a retrain request to the ``retrain.webhook`` URL: one POST, the outcome as text.

Shared by the operator and ``ondeck run``.

The retry bookkeeping (which episode is pending, when to try again, backing off, never twice once
delivered) is :mod:`ondeck.monitor`'s, kept in ``status.monitoring``: this module only makes the
attempt. The request id travels in ``x-ondeck-retrain-id`` (and in the body), so a receiver that
got an attempt whose answer was lost can recognise the retry.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

TIMEOUT = 5.0


def post(url: str, payload: dict[str, Any], *, timeout: float = TIMEOUT) -> str | None:
    """POST ``payload`` as JSON; None on a 2xx answer, else what went wrong (for the next attempt's log)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers={
        "content-type": "application/json", "x-ondeck-retrain-id": payload["id"]})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
