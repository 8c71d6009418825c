"""Secrets for ``ondeck run``: a directory laid out like Secrets mounted as volumes.

There is no API server on one machine, so ``ondeck run --secrets-dir DIR`` reads the key a
``secretRef: {name: N, key: K}`` names from the file ``DIR/N/K``: the layout a Pod gets when each
Secret is mounted at ``DIR/<secret name>`` (one file per key), so the same manifest works unchanged.
The bytes are used exactly as stored (no trimming: ``printf %s "$KEY" > DIR/N/K``, not ``echo``).

The file is read at each attempt, like the operator reads the Secret, so a key written or rotated
while ``ondeck run`` runs is picked up at the next retry.
"""
from __future__ import annotations

from pathlib import Path

from ondeck.spec.model import SecretKeyRef


class SecretUnavailable(Exception):
    """The key cannot be had; the message says exactly what is missing (never a value)."""


def read(directory: str | Path | None, ref: SecretKeyRef) -> bytes:
    if directory is None:
        raise SecretUnavailable(f"Secret {ref.name!r} key {ref.key!r}: ondeck run reads Secret keys from files, "
                                f"--secrets-dir DIR/{ref.name}/{ref.key}, and was given no --secrets-dir")
    # Names are a Secret's and a key's (no '/' in either); refuse anything that would leave DIR.
    if "/" in ref.name or "/" in ref.key or ref.name in (".", "..") or ref.key in (".", ".."):
        raise SecretUnavailable(f"Secret {ref.name!r} key {ref.key!r} is not a Secret name and key")
    path = Path(directory) / ref.name / ref.key
    try:
        value = path.read_bytes()
    except FileNotFoundError:
        raise SecretUnavailable(f"Secret {ref.name!r} key {ref.key!r}: no file {path}") from None
    except OSError as exc:
        raise SecretUnavailable(f"Secret {ref.name!r} key {ref.key!r}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise SecretUnavailable(f"Secret {ref.name!r} key {ref.key!r}: {path} is empty")
    return value
