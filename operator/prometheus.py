"""Read counter windows from Prometheus over its HTTP API: the operator's side of :mod:`ondeck.windows`.

``ondeck run`` gets a window by subtracting two scrapes; the operator asks Prometheus for
``increase(metric{selector}[w])`` at the window's end, one query per metric, summed over the pods
(``sum without (pod, instance, job)``) and re-keyed by the metric name, so the answer is the same
:data:`ondeck.windows.Samples` form and the same functions turn it into decision inputs.

Safety: an unreachable Prometheus or an error answer raises :class:`PrometheusUnavailable`, which the
controllers turn into an inconclusive measurement (a pause, never a promotion). A query with no
series simply contributes nothing; the decision code calls a window without requests inconclusive.
"""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterable

from ondeck.windows import WANTED, Samples

TIMEOUT = 5.0
# Labels that tell pods apart; summed away so that replicas add up, as they do in ondeck run.
PER_POD = ("pod", "instance", "job")


class PrometheusUnavailable(Exception):
    """Prometheus could not answer (unreachable, timed out, or an error status)."""


class Prometheus:
    def __init__(self, url: str, *, timeout: float = TIMEOUT):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def increase(self, match: dict[str, str], start: float, end: float, metrics: Iterable[str] = WANTED) -> Samples:
        """Counter increases over ``[start, end)`` of the series matching ``match`` (label equality)."""
        if end <= start:
            return {}
        selector = ",".join(f'{k}="{_quote(v)}"' for k, v in sorted(match.items()))
        window = f"{max(1, round((end - start) * 1000))}ms"
        out: Samples = {}
        for metric in metrics:
            query = f"sum without ({', '.join(PER_POD)}) (increase({metric}{{{selector}}}[{window}]))"
            for labels, value in self.query(query, at=end):
                if math.isfinite(value):
                    out[(metric, tuple(sorted(labels.items())))] = value
        return out

    def query(self, promql: str, *, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector: ``[(labels, value)]``."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if data.get("resultType") != "vector":
            raise PrometheusUnavailable(f"expected a vector for {promql!r}, got {data.get('resultType')}")
        return [({k: v for k, v in r["metric"].items() if k != "__name__"}, float(r["value"][1]))
                for r in data.get("result", ())]

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 4xx/5xx carry Prometheus' JSON error
            raise PrometheusUnavailable(f"{self.url}: HTTP {exc.code}: {_error(exc)}") from None
        except (OSError, ValueError) as exc:
            raise PrometheusUnavailable(f"{self.url} unreachable: {getattr(exc, 'reason', exc)}") from None
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"{self.url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _error(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error", "")
    except (OSError, ValueError):
        return exc.reason
