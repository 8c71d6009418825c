"""Scrape the servers' ``/metrics`` directly (``ondeck run`` has no Prometheus) and keep windows.

Each scrape of a replica is turned into the increase since that replica's previous scrape
(:func:`ondeck.windows.increase`) and added to its variant's running totals, so the totals only
grow: replicas add up, and a restarted server (new pid, counters from zero) simply counts on. A
window over ``[start, now)`` is then the totals now minus the totals *marked* at ``start``: the
controller marks the times a window may start at (an analysis run's last measurement, the last drift
look) and lets the others go.
"""
from __future__ import annotations

import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from ondeck import windows
from ondeck.experiment import AB_SERIES, SHADOW_SERIES
from ondeck.windows import Samples

SCRAPE_TIMEOUT = 2.0
RECENT_TICKS = 10  # per-tick increases kept for the live view's rates and p99


# What the decisions read (ondeck.windows.WANTED), plus what the A/B test and the shadow read: the
# servers' positive outcomes and the router's comparison counters (ondeck.experiment).
SCRAPED = (*windows.WANTED, *(s for s in (*AB_SERIES, *SHADOW_SERIES) if s not in windows.WANTED))


def scrape(address: str, timeout: float = SCRAPE_TIMEOUT) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as resp:
        return windows.parse_exposition(resp.read().decode(), SCRAPED)


class Counters:
    """Running counter totals per variant, marks to take windows from, and the last few ticks."""

    def __init__(self) -> None:
        self.totals: dict[str, Samples] = {}
        self.marks: dict[float, dict[str, Samples]] = {}
        self.recent: dict[str, deque[tuple[float, Samples]]] = {}
        self._last: dict[str, Samples] = {}  # per replica key: its previous scrape
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="scrape")

    def collect(self, now: float, replicas: Iterable[tuple[str, str, str]]) -> list[str]:
        """Scrape ``(variant, replica key, address)`` in parallel and fold the increases in.

        A replica that does not answer is skipped this time (its next scrape carries the increase);
        returns the addresses that failed.
        """
        replicas = list(replicas)
        results = list(self._pool.map(lambda r: _try_scrape(r[2]), replicas))
        failed = []
        tick: dict[str, Samples] = {}
        for (variant, key, address), samples in zip(replicas, results):
            if samples is None:
                failed.append(address)
                continue
            inc = windows.increase(samples, self._last.get(key, {}))
            self._last[key] = samples
            tick[variant] = windows.add(tick.get(variant, {}), inc)
        for variant, inc in tick.items():
            self.totals[variant] = windows.add(self.totals.get(variant, {}), inc)
            self.recent.setdefault(variant, deque(maxlen=RECENT_TICKS)).append((now, inc))
        return failed

    def mark(self, t: float) -> None:
        self.marks[t] = {v: dict(s) for v, s in self.totals.items()}

    def keep_marks(self, times: Iterable[float | None]) -> None:
        wanted = {t for t in times if t is not None}
        self.marks = {t: m for t, m in self.marks.items() if t in wanted}

    def since(self, start: float, variant: str) -> tuple[float, Samples]:
        """The increase of ``variant``'s counters since the mark at ``start``.

        Without that mark (``ondeck run`` restarted since), the window starts at the earliest mark
        there is; the start actually used is returned with it.
        """
        if start not in self.marks:
            start = min(self.marks) if self.marks else start
        base = self.marks.get(start, {}).get(variant, {})
        return start, windows.increase(self.totals.get(variant, {}), base)

    def recent_sum(self, variant: str) -> tuple[float, Samples]:
        """(seconds covered, summed increases) over the last few ticks of ``variant``."""
        ticks = self.recent.get(variant)
        if not ticks or len(ticks) < 2:
            return 0.0, {}
        return ticks[-1][0] - ticks[0][0], windows.add(*(inc for _, inc in list(ticks)[1:]))

    def forget(self, variant: str) -> None:
        self.recent.pop(variant, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _try_scrape(address: str) -> Samples | None:
    try:
        return scrape(address)
    except (OSError, ValueError):
        return None
