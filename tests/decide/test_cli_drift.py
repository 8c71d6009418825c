"""`ondeck drift DIR LIVE`: the offline check on the example data, and clean errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from ondeck.cli import main
from ondeck.package.examples import CHURN_FEATURES


def drift(capsys, *args):
    code = main(["drift", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_live_data_from_the_reference_population_shows_no_drift(examples_dir, capsys):
    code, out, _ = drift(capsys, examples_dir / "churn" / "v1", examples_dir / "data" / "churn-live.csv", "--json")
    report = json.loads(out)
    assert code == 0 and report["drift"] is False
    assert set(report["features"]) == set(CHURN_FEATURES)
    for entry in report["features"].values():
        assert {"statistic", "p_value", "p_adjusted", "chi_distance", "psi", "drift"} <= set(entry)
        assert entry["drift"] is False
    assert report["prediction"]["drift"] is False and {"class", "score"} <= set(report["prediction"])
    assert report["rows"] == report["rows_used"] == 5000 and report["rows_skipped"] == 0


def test_a_half_std_shift_in_monthly_charges_is_flagged_on_that_feature_only(examples_dir, capsys):
    code, out, _ = drift(capsys, examples_dir / "churn" / "v1", examples_dir / "data" / "churn-drifted.csv", "--json")
    report = json.loads(out)
    assert code == 0 and report["drift"] is True
    assert [f for f, e in report["features"].items() if e["drift"]] == ["monthly_charges"]
    charges = report["features"]["monthly_charges"]
    assert charges["p_adjusted"] < 1e-10 and charges["wasserstein_std"] == pytest.approx(0.5, abs=0.1)


def test_parquet_gives_the_same_verdicts_and_bad_rows_are_skipped_and_counted(examples_dir, tmp_path, capsys):
    live = pd.read_csv(examples_dir / "data" / "churn-drifted.csv")
    live.to_parquet(tmp_path / "live.parquet")
    code, out, _ = drift(capsys, examples_dir / "churn" / "v1", tmp_path / "live.parquet", "--json")
    from_parquet = json.loads(out)
    assert code == 0 and from_parquet["features"]["monthly_charges"]["drift"]
    live = live.astype({"age": object})
    live.loc[:9, "age"] = "unknown"
    live.to_csv(tmp_path / "dirty.csv", index=False)
    code, out, _ = drift(capsys, examples_dir / "churn" / "v1", tmp_path / "dirty.csv", "--json")
    dirty = json.loads(out)
    assert code == 0 and dirty["rows"] == 5000 and dirty["rows_skipped"] == 10 and dirty["rows_used"] == 4990
    assert [f for f, e in dirty["features"].items() if e["drift"]] == ["monthly_charges"]


def test_the_table_names_the_drifting_feature(examples_dir, capsys):
    code, out, _ = drift(capsys, examples_dir / "churn" / "v1", examples_dir / "data" / "churn-drifted.csv")
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("monthly_charges"))
    assert line.endswith("DRIFT")
    assert out.splitlines()[-1].startswith("DRIFT: drift in monthly_charges")


def test_a_file_that_does_not_match_the_package_exits_2_naming_the_columns(examples_dir, capsys):
    code, out, err = drift(capsys, examples_dir / "cancer" / "v1", examples_dir / "data" / "churn-live.csv")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "missing feature columns mean radius" in err


@pytest.mark.parametrize("name, content, message", [
    ("garbage.parquet", b"\x00\x01not parquet", "cannot read"),
    ("header-only.csv", b"tenure_months\n", "missing feature columns"),
    ("rows.json", b"{}", "must be .csv or .parquet"),
])
def test_unreadable_files_exit_2_with_one_line(examples_dir, tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    code, _, err = drift(capsys, examples_dir / "churn" / "v1", tmp_path / name)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_a_file_with_no_usable_rows_exits_2(examples_dir, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text(",".join(CHURN_FEATURES) + "\n")
    code, _, err = drift(capsys, examples_dir / "churn" / "v1", tmp_path / "empty.csv")
    assert code == 2 and "no rows the model can take" in err


def test_the_console_script_runs_it_too(examples_dir):
    res = subprocess.run([sys.executable, "-m", "ondeck.cli", "drift", str(examples_dir / "churn" / "v1"),
                          str(examples_dir / "data" / "churn-live.csv"), "--json", "--min-effect", "0.2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["drift"] is False and report["test"]["min_effect"] == 0.2
