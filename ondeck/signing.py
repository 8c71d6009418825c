"""HMAC-SHA256 signatures on retrain webhook requests: how ondeck signs one, how a receiver checks it.

Stripe's scheme, with GitHub's header form. Each attempt carries two headers:

- ``X-Ondeck-Timestamp``: when the attempt was signed, whole Unix seconds (``1718035200``);
- ``X-Ondeck-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the secret, of
  ``<timestamp> "." <body bytes>``.

The timestamp is inside the signed content, so it cannot be changed without breaking the
signature, and a receiver that refuses timestamps older than a few minutes (:data:`TOLERANCE`)
refuses a captured request replayed later. Every attempt is signed afresh (a retry after a long
backoff is not stale); the request id in the body tells a receiver that it has seen an attempt
before. The secret is used as raw bytes, exactly as stored (no trimming): a Secret made with
``kubectl create secret generic NAME --from-literal=KEY=...`` holds no trailing newline.

Pure: no I/O; the clock is an argument.
"""
from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Ondeck-Signature"
TIMESTAMP_HEADER = "X-Ondeck-Timestamp"
SCHEME = "sha256="
# How far a receiver should let the timestamp be from its own clock (seconds), either way.
TOLERANCE = 300


class BadSignature(ValueError):
    """The request is not signed with the secret, or signed too long ago; the message says which."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Ondeck-Signature`` value of ``body`` signed at ``timestamp``."""
    if not secret:
        raise ValueError("an empty secret signs nothing")
    mac = hmac.new(secret, str(int(timestamp)).encode() + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def headers(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The two headers to send with ``body``, signed at ``now``."""
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: bytes, body: bytes, signature_header: str | None, timestamp_header: str | None, *,
           now: float, tolerance: float = TOLERANCE) -> int:
    """Check a received request; returns its timestamp, raises :class:`BadSignature` if it is not good.

    ``body`` must be the raw bytes received (parsing and re-serialising the JSON changes them).
    """
    if not signature_header or not timestamp_header:
        raise BadSignature(f"missing {SIGNATURE_HEADER if not signature_header else TIMESTAMP_HEADER} header")
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        raise BadSignature(f"{TIMESTAMP_HEADER} is not whole Unix seconds: {timestamp_header[:40]!r}") from None
    if not signature_header.startswith(SCHEME):
        raise BadSignature(f"{SIGNATURE_HEADER} does not start with {SCHEME!r}")
    # Compare before looking at the clock, in constant time: a forged request learns nothing either way.
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), signature_header.strip().encode()):
        raise BadSignature("signature does not match the body and timestamp")
    if abs(now - timestamp) > tolerance:
        raise BadSignature(f"timestamp is {abs(now - timestamp):.0f} s from now (more than {tolerance:g} s): a replay?")
    return timestamp
