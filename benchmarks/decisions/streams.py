"""The simulated live streams every tool sees: which pool rows fall in which window.

numpy only, so that the ondeck side (bench.py) and the other tools' side (tools.py, in its own
environment) draw exactly the same rows for the same window. A stream is rows resampled from a pool
(the churn example's unseen rows, optionally shifted); a drift scenario switches from the base pool
to a shifted pool at a change point somewhere inside a window.
"""
from __future__ import annotations

import numpy as np

INTERVAL = 300                 # seconds between looks
ROWS_PER_SECOND = 50
ROWS_PER_WINDOW = INTERVAL * ROWS_PER_SECOND
LOOKS_PER_DAY = 86400 // INTERVAL
DAYS = 30

# name -> (label, shift passed to ondeck.package.examples.churn_frame)
SHIFTS = {
    "mean_025": ("monthly_charges +0.25 std", {"monthly_charges": 0.25}),
    "mean_05": ("monthly_charges +0.5 std", {"monthly_charges": 0.5}),
    "mean_1": ("monthly_charges +1 std", {"monthly_charges": 1.0}),
    "region_03": ("region: 30% of rows up a level", {"region": 0.3}),
}
SCENARIO_IDS = {"none": 0, "low_traffic": 1, **{name: 10 + i for i, name in enumerate(SHIFTS)}}
WARMUP_WINDOWS = 12            # an hour of no drift before each change


def change_fraction(scenario: str, replicate: int) -> float:
    """Where in the change window the shift starts (0 = at its start), the same for every tool."""
    return float(np.random.default_rng([SCENARIO_IDS[scenario], replicate, 99]).random())


def window_rows(scenario: str, replicate: int, window: int, pool_size: int, rows: int = ROWS_PER_WINDOW,
                changes_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pool row indices of one window: ``(base_rows, shifted_rows)``.

    Before the change window every row comes from the base pool, after it from the shifted pool;
    in the change window the rows after the change point (a fraction of the window) are shifted.
    """
    rng = np.random.default_rng([SCENARIO_IDS[scenario], replicate, window])
    idx = rng.integers(0, pool_size, size=rows)
    if changes_at is None or window < changes_at:
        return idx, idx[:0]
    if window > changes_at:
        return idx[:0], idx
    cut = int(round(rows * change_fraction(scenario, replicate)))
    return idx[:cut], idx[cut:]
