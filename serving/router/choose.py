"""Which variant serves a request: header rules, sticky hashing, the exact weighted split, mirroring.

Pure: a config and a request's headers in, a variant name out; no I/O, no clock, no randomness.
Determinism is the point: the weighted split is a smooth weighted round-robin (nginx's), so any
window of consecutive unmatched requests splits as exactly as whole requests allow; and the sticky
hash is sha1, so a user lands on the same variant across router restarts and replicas.
"""
from __future__ import annotations

import hashlib
import re
from typing import Mapping

from ondeck.serving.router.config import RouterConfig

BUCKETS = 10_000  # sticky keys hash into [0, BUCKETS); a weight of w percent owns w * 100 of them
_MIRROR_SCALE = 1_000_000  # the shadow fraction in parts per million, so the sampler counts in integers


class RoutingTable:
    """The routing decisions of one config. Built anew on every reload; never mutated from outside.

    It keeps two counters (the round-robin state and the mirror accumulator), so one instance
    belongs to one event loop.
    """

    def __init__(self, config: RouterConfig):
        self._rules = tuple(
            (r.header, r.exact, re.compile(r.regex).search if r.regex is not None else None, r.variant)
            for r in config.rules
        )
        self._sticky_header = config.sticky.header if config.sticky else None
        self._sticky_cookie = config.sticky.cookie if config.sticky else None
        # Do the front-ends need to collect headers at all? Not for a plain weighted split.
        self.needs_headers = bool(self._rules) or config.sticky is not None

        weighted = [(v.name, v.weight) for v in config.variants if v.weight > 0]
        self._names = [name for name, _ in weighted]
        self._weights = [w for _, w in weighted]
        self._current = [0] * len(weighted)
        self._total = sum(self._weights)
        upper, self._bucket_upper = 0, []
        for name, w in weighted:
            upper += w * BUCKETS // 100
            self._bucket_upper.append((upper, name))

        self.shadow_variant = config.shadow.variant if config.shadow else None
        self._mirror_step = round(config.shadow.fraction * _MIRROR_SCALE) if config.shadow else 0
        self._mirror_acc: dict[str, int] = {}  # one sampler per variant: see mirror()

    def choose(self, headers: Mapping[str, str] | None = None) -> str:
        """The variant for a request; ``headers`` maps lower-case names to values."""
        if headers:
            for name, exact, search, variant in self._rules:
                value = headers.get(name)
                if value is not None and (value == exact if search is None else search(value) is not None):
                    return variant
            key = self.sticky_key(headers)
            if key is not None:
                return self.sticky(key)
        return self.next_weighted()

    def sticky_key(self, headers: Mapping[str, str]) -> str | None:
        if self._sticky_header is not None:
            return headers.get(self._sticky_header) or None
        if self._sticky_cookie is not None:
            return cookie_value(headers.get("cookie"), self._sticky_cookie)
        return None

    def sticky(self, key: str) -> str:
        """The variant owning ``key``'s bucket: stable for a key as long as the weights are."""
        bucket = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % BUCKETS
        for upper, name in self._bucket_upper:
            if bucket < upper:
                return name
        return self._bucket_upper[-1][1]

    def next_weighted(self) -> str:
        """Smooth weighted round-robin: every variant gains its weight, the richest is picked and pays the total."""
        current, weights = self._current, self._weights
        best = 0
        for i in range(len(current)):
            current[i] += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self._names[best]

    def mirror(self, variant: str) -> bool:
        """Should this request, served by ``variant``, also go to the shadow? True for exactly ``fraction`` of
        each variant's requests, evenly spread; never for the shadow variant's own.

        One sampler per variant: a single one, counting all requests, falls in step with the weighted
        split (both are deterministic; with 90/10 and 10% every tenth request is the canary's, or never is)
        and can leave a variant's requests unmirrored for good.
        """
        if not self._mirror_step or variant == self.shadow_variant:
            return False
        acc = self._mirror_acc.get(variant, 0) + self._mirror_step
        if acc >= _MIRROR_SCALE:
            self._mirror_acc[variant] = acc - _MIRROR_SCALE
            return True
        self._mirror_acc[variant] = acc
        return False


def cookie_value(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip('"') or None
    return None
