"""The router's Prometheus series, named exactly as docs/metrics.md says.

A small store of plain dicts rather than prometheus_client, for two reasons. The request path
touches two series per request, and a dict increment costs a fraction of prometheus_client's label
lookup, lock and bucket loop. And with ``--workers N`` every worker serves ``/metrics`` for the
whole router: a snapshot of this store is plain data that the workers exchange (see
:mod:`ondeck.serving.router.workers`) and sum.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from ondeck.serving.router.compare import Pair

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ABS_DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

_V = ("model", "variant", "version")
_P = ("model", "primary", "shadow")
# name -> (type, label names, help, histogram buckets)
SERIES: dict[str, tuple[str, tuple[str, ...], str, tuple[float, ...]]] = {
    "ondeck_router_requests_total": ("counter", _V + ("protocol", "code"),
                                     "requests answered to clients, by the variant that served them", ()),
    "ondeck_router_request_duration_seconds": ("histogram", _V + ("protocol",), "client-side latency through the router",
                                               LATENCY_BUCKETS),
    "ondeck_router_upstream_errors_total": ("counter", _V + ("endpoint", "kind"), "failed upstream attempts", ()),
    "ondeck_router_endpoint_ejections_total": ("counter", _V + ("endpoint",), "passive health ejections", ()),
    "ondeck_router_weight": ("gauge", _V, "current weight, percent", ()),
    "ondeck_router_config_reloads_total": ("counter", ("result",), "config reloads (summed over worker processes)", ()),
    "ondeck_router_feedback_requests_total": ("counter", ("model", "code"),
                                              "feedback requests answered (each sent to every primary variant)", ()),
    "ondeck_router_feedback_items_total": ("counter", ("model", "result"),
                                           "feedback items by result: matched, duplicate, unmatched (by no variant)", ()),
    "ondeck_shadow_requests_total": ("counter", _P + ("outcome",), "mirrored requests", ()),
    "ondeck_shadow_agreement_total": ("counter", _P, "compared pairs where both predicted the same class", ()),
    "ondeck_shadow_abs_diff": ("histogram", _P, "|primary score - shadow score| per compared pair", ABS_DIFF_BUCKETS),
}

Snapshot = dict[str, list[list]]  # name -> [[label values..., value]]; a histogram's value is [bucket counts..., sum]


class RouterMetrics:
    def __init__(self, model: str):
        self.model = model
        self._series: dict[str, dict[tuple[str, ...], Any]] = {name: {} for name in SERIES}
        # The hot path: (variant, version, protocol, code) -> [count, sum, count per latency bucket..., above].
        # Folded into the two documented series by snapshot().
        self._answered: dict[tuple[str, str, str, int], list] = {}
        for result in ("ok", "error"):  # both exist from the start, so rate() sees the first error
            self._series["ondeck_router_config_reloads_total"][(result,)] = 0.0

    def set_model(self, model: str) -> None:
        if model != self.model:
            self.snapshot()  # fold what was answered under the old name first
            self.model = model

    # --- recording ------------------------------------------------------------------------

    def answered(self, variant: str, version: str, protocol: str, code: int, seconds: float) -> None:
        key = (variant, version, protocol, code)
        series = self._answered.get(key)
        if series is None:
            series = self._answered[key] = [0, 0.0] + [0] * (len(LATENCY_BUCKETS) + 1)
        series[0] += 1
        series[1] += seconds
        series[2 + bisect_left(LATENCY_BUCKETS, seconds)] += 1  # bucket le=b holds b itself: bisect_left

    def upstream_error(self, variant: str, version: str, endpoint: str, kind: str) -> None:
        self._inc("ondeck_router_upstream_errors_total", (self.model, variant, version, endpoint, kind))

    def ejected(self, variant: str, version: str, endpoint: str) -> None:
        self._inc("ondeck_router_endpoint_ejections_total", (self.model, variant, version, endpoint))

    def set_weights(self, weights: dict[tuple[str, str], int]) -> None:
        """``{(variant, version): percent}``; variants no longer configured lose their series."""
        self._series["ondeck_router_weight"] = {(self.model, v, ver): float(w) for (v, ver), w in weights.items()}

    def reloaded(self, ok: bool) -> None:
        self._inc("ondeck_router_config_reloads_total", ("ok" if ok else "error",))

    def feedback_answered(self, code: int) -> None:
        self._inc("ondeck_router_feedback_requests_total", (self.model, str(code)))

    def feedback_items(self, matched: int, duplicates: int, unmatched: int) -> None:
        for result, n in (("matched", matched), ("duplicate", duplicates), ("unmatched", unmatched)):
            self._inc("ondeck_router_feedback_items_total", (self.model, result), float(n))

    def shadow(self, primary: str, shadow: str, outcome: str) -> None:
        self._inc("ondeck_shadow_requests_total", (self.model, primary, shadow, outcome))

    def compared(self, primary: str, shadow: str, pairs: Sequence[Pair]) -> None:
        """Count compared pairs of ``primary`` and ``shadow`` (a merged burst's, or one)."""
        labels = (self.model, primary, shadow)
        self._inc("ondeck_shadow_requests_total", labels + ("compared",), len(pairs))
        self._inc("ondeck_shadow_agreement_total", labels, sum(1.0 for p in pairs if p.agree))
        for p in pairs:
            if p.abs_diff is not None:
                self._observe("ondeck_shadow_abs_diff", labels, p.abs_diff)

    def _inc(self, name: str, labels: tuple[str, ...], by: float = 1.0) -> None:
        series = self._series[name]
        series[labels] = series.get(labels, 0.0) + by

    def _observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        buckets = SERIES[name][3]
        counts = self._series[name].get(labels)
        if counts is None:
            counts = self._series[name][labels] = [0] * (len(buckets) + 1) + [0.0]
        counts[bisect_left(buckets, value)] += 1
        counts[-1] += value

    # --- reading --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This process's series as plain data (JSON-able)."""
        answered, self._answered = self._answered, {}
        requests = self._series["ondeck_router_requests_total"]
        duration = self._series["ondeck_router_request_duration_seconds"]
        for (variant, version, protocol, code), s in answered.items():
            key = (self.model, variant, version, protocol, str(code))
            requests[key] = requests.get(key, 0.0) + s[0]
            counts = duration.setdefault((self.model, variant, version, protocol), [0] * (len(LATENCY_BUCKETS) + 1) + [0.0])
            for i, n in enumerate(s[2:]):
                counts[i] += n
            counts[-1] += s[1]
        return {name: [[*labels, value] for labels, value in series.items()] for name, series in self._series.items()}

    def exposition(self, peers: Iterable[Snapshot] = ()) -> bytes:
        """Prometheus text format of this process's series plus ``peers``' (other workers), summed.

        Gauges (the weights) are this process's own: every worker runs the same config.
        """
        merged = {name: {tuple(row[:-1]): row[-1] for row in rows} for name, rows in self.snapshot().items()}
        for peer in peers:
            for name, rows in peer.items():
                if name not in merged or SERIES[name][0] == "gauge":
                    continue
                series = merged[name]
                for row in rows:
                    labels, value = tuple(row[:-1]), row[-1]
                    old = series.get(labels)
                    if old is None:
                        series[labels] = value
                    elif isinstance(value, list):
                        series[labels] = [a + b for a, b in zip(old, value)]
                    else:
                        series[labels] = old + value
        return "".join(_render(name, series) for name, series in merged.items()).encode()


def _render(name: str, series: dict[tuple[str, ...], Any]) -> str:
    kind, label_names, help_text, buckets = SERIES[name]
    lines = [f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"]
    for labels, value in series.items():
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(label_names, labels))
        if kind != "histogram":
            lines.append(f"{name}{{{text}}} {float(value)!r}\n")
            continue
        cumulative = 0
        for bound, n in zip(buckets + (float("inf"),), value[:-1]):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_bucket{{{text},le="{le}"}} {float(cumulative)!r}\n')
        lines.append(f"{name}_count{{{text}}} {float(cumulative)!r}\n{name}_sum{{{text}}} {float(value[-1])!r}\n")
    return "".join(lines)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
