"""The other tools on the same streams: Evidently's default DataDriftPreset, alibi-detect's KSDrift and
its CVMDriftOnline. Runs in its own environment (benchmarks/.venvs/drift-tools) so that their pins
cannot bend ondeck's; called by bench.py, which reads the JSON this writes.

    tools.py POOLS.npz OUT.json [--quick]
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import streams  # noqa: E402

warnings.filterwarnings("ignore")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KS_EVERY = 12            # KS looks once an hour (every 12th window) on the long runs
EVIDENTLY_EVERY = 288    # Evidently once a day: one report takes seconds
CVM_EVERY = 3            # CVMDriftOnline is fed one row every 15 minutes ...
CVM_BOOTSTRAPS = 60_000  # its threshold calibration needs >= ERT x features simulated streams
CVM_REFERENCE_ROWS = 500
CVM_WARMUP = 60          # rows fed before a change (its windows must fill first)
DELAY_REPLICATES = 5
DELAY_MAX_WINDOWS = 12   # fixed-sample tools: give up an hour after the change
CVM_MAX_ROWS = 2000      # CVMDriftOnline: give up after ~3 weeks of its feed


class Tools:
    def __init__(self, pools: dict[str, np.ndarray], columns: list[str], quick: bool):
        from alibi_detect.cd import CVMDriftOnline, KSDrift

        self.pools, self.columns, self.quick = pools, columns, quick
        self.looks = streams.DAYS * streams.LOOKS_PER_DAY // (10 if quick else 1)
        self.cvm_ert = self.looks // CVM_EVERY  # told to expect one false alarm in the 30 days
        self.reference = pools["reference"].astype(np.float32)
        self.ks = KSDrift(self.reference, p_val=0.05)
        started = time.perf_counter()
        self.cvm = CVMDriftOnline(self.reference[:CVM_REFERENCE_ROWS], ert=self.cvm_ert, window_sizes=[10, 50],
                                  n_bootstraps=CVM_BOOTSTRAPS // (10 if quick else 1), verbose=False)
        self.cvm_setup_seconds = time.perf_counter() - started
        self.ref_frame = pd.DataFrame(pools["reference"], columns=columns)

    def rows(self, scenario: str, replicate: int, window: int, shifted: str | None, changes_at: int | None = None,
             rows: int = streams.ROWS_PER_WINDOW) -> np.ndarray:
        base_idx, shift_idx = streams.window_rows(scenario, replicate, window, len(self.pools["base"]), rows, changes_at)
        parts = [self.pools["base"][base_idx]]
        if shifted:
            parts.append(self.pools[shifted][shift_idx])
        return np.concatenate(parts)

    # -- one check per tool: the set of columns it flags ----------------------------------------------
    def ks_flags(self, x: np.ndarray) -> set[str]:
        out = self.ks.predict(x.astype(np.float32))["data"]
        threshold = out["threshold"]  # Bonferroni-corrected level per feature
        return {c for c, p in zip(self.columns, out["p_val"]) if p < threshold}

    def evidently_flags(self, x: np.ndarray) -> tuple[set[str], bool]:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        snap = Report([DataDriftPreset()]).run(current_data=pd.DataFrame(x, columns=self.columns),
                                               reference_data=self.ref_frame)
        flagged, dataset = set(), False
        for m in snap.dict()["metrics"]:
            cfg = m["config"]
            if cfg["type"].endswith("ValueDrift") and m["value"] is not None:
                # Evidently's rule: a distance drifts above its threshold, a p-value below it.
                is_distance = "distance" in cfg["method"].lower() or "divergence" in cfg["method"].lower()
                if (m["value"] >= cfg["threshold"]) if is_distance else (m["value"] < cfg["threshold"]):
                    flagged.add(cfg["column"])
            elif cfg["type"].endswith("DriftedColumnsCount"):
                dataset = m["value"]["share"] >= cfg["drift_share"]
        return flagged, dataset

    # -- scenarios ------------------------------------------------------------------------------------
    def no_drift(self, scenario: str, rows: int) -> dict:
        looks = self.looks
        out: dict = {}
        started = time.perf_counter()
        ks_checks = list(range(0, looks, KS_EVERY))
        ks_alarms = sum(bool(self.ks_flags(self.rows(scenario, 0, w, None, rows=rows))) for w in ks_checks)
        out["ks"] = {"checks": len(ks_checks), "alarms": ks_alarms, "every_windows": KS_EVERY,
                     "seconds": time.perf_counter() - started}
        started = time.perf_counter()
        ev_checks = list(range(0, looks, EVIDENTLY_EVERY))
        any_col = dataset = 0
        for w in ev_checks:
            flagged, ds = self.evidently_flags(self.rows(scenario, 0, w, None, rows=rows))
            any_col += bool(flagged)
            dataset += ds
        out["evidently"] = {"checks": len(ev_checks), "alarms": any_col, "dataset_drift": dataset,
                            "every_windows": EVIDENTLY_EVERY, "seconds": time.perf_counter() - started}
        if scenario == "none":
            started = time.perf_counter()
            self.cvm.reset_state()
            alarms = fed = 0
            for w in range(0, looks, CVM_EVERY):
                fed += 1
                if self.cvm.predict(self.rows(scenario, 0, w, None, rows=rows)[0].astype(np.float32))["data"]["is_drift"]:
                    alarms += 1
                    self.cvm.reset_state()
            out["cvm_online"] = {"rows_fed": fed, "alarms": alarms, "every_windows": CVM_EVERY, "ert": self.cvm_ert,
                                 "setup_seconds": self.cvm_setup_seconds, "seconds": time.perf_counter() - started}
        out["looks_simulated"] = looks
        return out

    def delays(self, scenario: str, feature: str) -> dict:
        """Minutes from the change to the end of the first check that flags the shifted feature."""
        out: dict = {"ks": [], "evidently": [], "cvm_online": []}
        replicates = 2 if self.quick else DELAY_REPLICATES
        at = streams.WARMUP_WINDOWS
        for r in range(replicates):
            change = (at + streams.change_fraction(scenario, r)) * streams.INTERVAL
            for tool, flags in (("ks", self.ks_flags), ("evidently", lambda x: self.evidently_flags(x)[0])):
                delay = None
                for w in range(at, at + DELAY_MAX_WINDOWS):
                    if feature in flags(self.rows(scenario, r, w, scenario, changes_at=at)):
                        delay = ((w + 1) * streams.INTERVAL - change) / 60
                        break
                out[tool].append(delay)
            # CVMDriftOnline: one row every CVM_EVERY windows, CVM_WARMUP rows before the change.
            self.cvm.reset_state()
            cvm_at = CVM_WARMUP * CVM_EVERY
            change = (cvm_at + streams.change_fraction(scenario, r)) * streams.INTERVAL
            delay = None
            for k in range(CVM_WARMUP + CVM_MAX_ROWS):
                w = k * CVM_EVERY
                x = self.rows(scenario, r, w, scenario, changes_at=cvm_at)[-1:].astype(np.float32)
                res = self.cvm.predict(x)["data"]
                if res["is_drift"] and w >= cvm_at:
                    delay = ((w + 1) * streams.INTERVAL - change) / 60
                    break
                if res["is_drift"]:
                    self.cvm.reset_state()  # a false alarm before the change: carry on
            out["cvm_online"].append(delay)
        return out


def main(argv: list[str]) -> int:
    pools_path, out_path = Path(argv[0]), Path(argv[1])
    quick = "--quick" in argv
    data = np.load(pools_path, allow_pickle=False)
    columns = [str(c) for c in data["columns"]]
    pools = {k: data[k] for k in data.files if k != "columns"}
    import alibi_detect
    import evidently

    tools = Tools(pools, columns, quick)
    result = {"versions": {"evidently": evidently.__version__, "alibi-detect": alibi_detect.__version__},
              "settings": {"ks_every": KS_EVERY, "evidently_every": EVIDENTLY_EVERY, "cvm_every": CVM_EVERY,
                           "cvm_ert": tools.cvm_ert, "cvm_bootstraps": CVM_BOOTSTRAPS, "cvm_reference_rows": CVM_REFERENCE_ROWS,
                           "delay_replicates": DELAY_REPLICATES, "delay_max_windows": DELAY_MAX_WINDOWS},
              "none": tools.no_drift("none", streams.ROWS_PER_WINDOW),
              "low_traffic": tools.no_drift("low_traffic", streams.INTERVAL),
              "delay": {name: tools.delays(name, next(iter(shift))) for name, (_, shift) in streams.SHIFTS.items()}}
    result["cpu_seconds"] = time.process_time()
    out_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
