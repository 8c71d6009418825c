"""`ondeck batch`: chunked offline scoring of CSV and Parquet, invalid rows reported."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ondeck
from ondeck.batch import score_file


def test_csv_and_parquet_give_the_same_predictions(examples_dir, tmp_path):
    live = pd.read_csv(examples_dir / "data" / "churn-live.csv")
    live.to_parquet(tmp_path / "live.parquet")
    pkg = examples_dir / "churn" / "v1"
    a = score_file(pkg, examples_dir / "data" / "churn-live.csv", tmp_path / "a.parquet", chunk_rows=1000, progress=False)
    b = score_file(pkg, tmp_path / "live.parquet", tmp_path / "b.parquet", chunk_rows=777, progress=False)
    assert a.rows == b.rows == a.scored == len(live) and a.invalid == 0
    out_a, out_b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert list(out_a["row"]) == list(range(len(live)))
    expected = ondeck.load(pkg).predict_proba(live)
    assert np.array_equal(out_a[["proba_0", "proba_1"]].to_numpy(), expected)
    assert np.array_equal(out_b[["proba_0", "proba_1"]].to_numpy(), expected)
    assert list(out_a.columns) == ["row", "label", "proba_0", "proba_1"]


def test_invalid_rows_go_to_the_errors_file(examples_dir, tmp_path):
    text = (examples_dir / "data" / "churn-live.csv").read_text().splitlines()
    header, rows = text[0], text[1:11]
    cols = header.split(",")
    age = cols.index("age")
    broken = rows[3].split(",")
    broken[age] = "forty"
    rows[3] = ",".join(broken)
    empty = rows[7].split(",")
    empty[age] = ""
    rows[7] = ",".join(empty)
    (tmp_path / "in.csv").write_text("\n".join([header, *rows]) + "\n")
    s = score_file(examples_dir / "churn" / "v1", tmp_path / "in.csv", tmp_path / "out.parquet",
                   tmp_path / "errors.csv", chunk_rows=4, progress=False, passthrough=("churned",))
    assert (s.rows, s.scored, s.invalid) == (10, 8, 2)
    errors = pd.read_csv(tmp_path / "errors.csv")
    assert list(errors["row"]) == [3, 7]
    assert all("feature 'age' is nan" in r for r in errors["reason"])
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out["row"]) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert "churned" in out.columns


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ondeck.cli", "batch", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case, message", [
    ("missing_input", "input file not found"),
    ("wrong_schema", "does not match the package: missing feature column"),
    ("bad_suffix", "output must be a .parquet file"),
    ("not_parquet", "cannot read"),
    ("bad_package", "not an ondeck package"),
])
def test_cli_bad_paths_and_schema_exit_2(examples_dir, tmp_path, case, message):
    pkg, inp, out = examples_dir / "churn" / "v1", examples_dir / "data" / "churn-live.csv", tmp_path / "o.parquet"
    if case == "missing_input":
        inp = tmp_path / "none.csv"
    elif case == "wrong_schema":
        pd.read_csv(inp).drop(columns=["age", "region"]).to_csv(inp := tmp_path / "w.csv", index=False)
    elif case == "bad_suffix":
        out = tmp_path / "o.csv"
    elif case == "not_parquet":
        (inp := tmp_path / "x.parquet").write_text("hello")
    elif case == "bad_package":
        pkg = tmp_path
    res = run_cli(pkg, "--input", inp, "--output", out, "--no-progress")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_cli_prints_summary(examples_dir, tmp_path):
    res = run_cli(examples_dir / "cancer" / "v1", "--input", tmp_path / "c.csv", "--output", tmp_path / "o.parquet")
    assert res.returncode == 2  # input missing
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.to_csv(tmp_path / "c.csv", index=False)
    res = run_cli(examples_dir / "cancer" / "v1", "--input", tmp_path / "c.csv", "--output", tmp_path / "o.parquet", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "scored 569 of 569 rows" in res.stdout
