"""Feedback: true labels sent after the fact, joined to the predictions this server made.

Each worker keeps the last ``capacity`` predicted rows of each model in a ring in shared memory
(one writer per ring, no locks): request id hash, row, predicted class, score. A feedback request
may land on any worker; it searches every worker's ring, so predictions served by one worker are
joined by another. The oldest rows fall out first (bounded memory); a row takes feedback once.

Counted per docs/metrics.md: ``ondeck_feedback_total``, ``..._correct_total`` (classifiers),
``..._absolute_error_total`` (regressors), ``..._positive_total`` (a truth of class 1 / value 1: a
conversion, when feedback reports 0/1 outcomes) on the version that served the row, and
``..._unmatched_total`` for ids that match nothing (too old, never served, or a typo).

Behind the router, a feedback request goes to every variant (only the one that served a row holds
it) with :data:`FANOUT_HEADER` set: then ids a server does not hold are not counted as unmatched
there, since another variant may hold them; the router counts the ids no variant matched, once.
"""
from __future__ import annotations

import hashlib
import math
import mmap
from dataclasses import dataclass
from typing import Any

import numpy as np

from ondeck.errors import InvalidInput
from ondeck.serving.protocol.tensors import BAD_REQUEST

FANOUT_HEADER = b"x-ondeck-feedback-fanout"  # lower case: the servers' header dicts are
RECORD = np.dtype([("key", "<u8"), ("row", "<i8"), ("cls", "<i8"), ("score", "<f8"), ("used", "<u8")])


def key_of(request_id: str) -> int:
    """A request id as a non-zero 64-bit key (0 marks an empty slot)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little") or 1


class SharedRings:
    """``models x workers`` rings of ``capacity`` records in one shared memory map."""

    def __init__(self, models: int, workers: int, capacity: int, fd: int | None = None):
        from ondeck.serving.metrics import memfd

        nbytes = max(RECORD.itemsize, models * workers * capacity * RECORD.itemsize)
        self.fd = fd if fd is not None else memfd("ondeck-feedback", nbytes)
        self._map = mmap.mmap(self.fd, nbytes)
        self.all = np.frombuffer(self._map, dtype=RECORD)[: models * workers * capacity].reshape(models, workers, capacity)

    def store(self, model_index: int, worker: int) -> "PredictionStore":
        return PredictionStore(self.all[model_index], worker)


class PredictionStore:
    """One model's rings: this worker writes its own, feedback reads them all."""

    def __init__(self, rings: np.ndarray, worker: int):
        self.rings = rings
        self.mine = rings[worker]
        self._pos = 0

    def record(self, keys: list[int], counts: list[int], cls: np.ndarray | None, score: np.ndarray) -> None:
        """The rows of one model run: request ``keys[i]`` had ``counts[i]`` rows, in order."""
        cap = self.mine.shape[0]
        n = int(score.shape[0])
        if cap == 0:
            return
        if n == 1:  # the common unbatched case, without the array work
            self.mine[self._pos] = (keys[0], 0, int(cls[0]) if cls is not None else -1, float(score[0]), 0)
            self._pos = (self._pos + 1) % cap
            return
        rec = np.empty(n, RECORD)
        counts_a = np.asarray(counts)
        rec["key"] = np.repeat(np.asarray(keys, dtype=np.uint64), counts_a)
        rec["row"] = np.arange(n) - np.repeat(np.cumsum(counts_a) - counts_a, counts_a)
        rec["cls"] = cls if cls is not None else -1
        rec["score"] = score
        rec["used"] = 0
        at = (self._pos + np.arange(n)) % cap if self._pos + n > cap else slice(self._pos, self._pos + n)
        if n > cap:  # more rows than the ring holds: keep the newest
            rec, at = rec[-cap:], slice(0, cap)
            self._pos = 0
        else:
            self._pos = (self._pos + n) % cap
        self.mine[at] = rec

    def find(self, wanted: dict[tuple[int, int], Any]) -> dict[tuple[int, int], tuple[int, int]]:
        """Where each wanted (key, row) sits: ``(worker, slot)``; the newest wins."""
        keys = np.fromiter((k for k, _ in wanted), dtype=np.uint64, count=len(wanted))
        found: dict[tuple[int, int], tuple[int, int]] = {}
        for w in range(self.rings.shape[0]):
            ring = self.rings[w]
            for slot in np.flatnonzero(np.isin(ring["key"], keys)):
                rec = ring[slot]
                k = (int(rec["key"]), int(rec["row"]))
                if k in wanted:
                    found[k] = (w, int(slot))
        return found

    def take(self, where: tuple[int, int], key: int) -> np.void | None:
        """The record at ``where``, marked as having had its feedback; None if it already had."""
        rec = self.rings[where]
        if int(rec["used"]) == key:
            return None
        self.rings[where[0]]["used"][where[1]] = key  # the key, so a reused slot does not look used
        return rec


@dataclass
class Item:
    id: str
    row: int
    truth: Any
    key: int


def parse_items(doc: Any) -> list[Item]:
    """``{"items": [{"id": ..., "truth": ..., "row": 0}, ...]}`` -> items, or InvalidInput naming the bad one."""
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidInput(BAD_REQUEST, 'feedback is {"items": [{"id": "<request id>", "truth": <label or value>}, ...]}')
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("id"), str) or not it["id"] or "truth" not in it:
            raise InvalidInput(BAD_REQUEST, f"items[{i}] needs an 'id' (the request id) and a 'truth'")
        row = it.get("row", 0)
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise InvalidInput(BAD_REQUEST, f"items[{i}] has row {row!r}; a row is a non-negative integer")
        out.append(Item(it["id"], row, it["truth"], key_of(it["id"])))
    return out


def truth_code(i: int, truth: Any, classes: list[Any] | None) -> float:
    """The class index (classifiers) or the value (regressors) a truth stands for."""
    if classes is not None:
        for code, label in enumerate(classes):
            if truth == label and type(truth) is not bool:
                return code
        raise InvalidInput(BAD_REQUEST, f"items[{i}] has truth {truth!r}, not one of the classes {classes}")
    if isinstance(truth, bool) or not isinstance(truth, (int, float)) or not math.isfinite(truth):
        raise InvalidInput(BAD_REQUEST, f"items[{i}] has truth {truth!r}; this model predicts a number")
    return float(truth)
