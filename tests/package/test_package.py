"""`ondeck package` and `ondeck examples`: conversion, parity, metadata, profile, bad input."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelPropagation

import ondeck
from ondeck.package.profile import bin_counts


def ondeck_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ondeck.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def fitted(tmp_path):
    x, y = make_classification(n_samples=600, n_features=5, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    est = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0))
    est.fit(frame, y)
    joblib.dump(est, tmp_path / "model.joblib")
    frame.assign(label=y).to_csv(tmp_path / "ref.csv", index=False)
    return tmp_path, est, frame


def test_package_writes_onnx_metadata_and_reference(fitted):
    tmp, est, frame = fitted
    res = ondeck_cli("package", "--estimator", tmp / "model.joblib", "--reference", tmp / "ref.csv",
                     "--name", "toy", "--version", "3", "--out", tmp / "pkg")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp / "pkg" / "ondeck.json").read_text())
    assert meta["name"] == "toy" and meta["version"] == "3" and meta["task"] == "classification"
    assert meta["inputs"][0]["features"] == [f"f{i}" for i in range(5)]  # the extra label column is not a feature
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert meta["classes"] == [0, 1]
    assert meta["parity"]["max_abs_diff"] <= 1e-4 and meta["parity"]["rows"] == 600
    lineage = meta["lineage"]
    assert lineage["estimator"].endswith("Pipeline") and "scikit-learn" in lineage["libraries"]
    assert lineage["reference_sha256"] == hashlib.sha256((tmp / "ref.csv").read_bytes()).hexdigest()

    ref = json.loads((tmp / "pkg" / "reference.json").read_text())
    f0 = ref["features"]["f0"]
    assert f0["kind"] == "numeric" and len(f0["bin_edges"]) == 9 and abs(sum(f0["bin_shares"]) - 1) < 1e-9
    # deciles: every bin holds about a tenth of the reference rows
    assert max(f0["bin_shares"]) < 0.12 and min(f0["bin_shares"]) > 0.08
    assert ref["prediction"]["class"]["categories"] == [0, 1]

    m = ondeck.load(tmp / "pkg")
    x32 = frame.to_numpy(np.float32)
    assert np.abs(m.predict_proba(frame) - est.predict_proba(pd.DataFrame(x32, columns=frame.columns))).max() <= 1e-4
    # the stored shares are exactly what bin_counts gives on the reference rows
    counts = bin_counts(f0["bin_edges"], frame["f0"].to_numpy(np.float32).astype(np.float64))
    assert np.allclose(counts / counts.sum(), f0["bin_shares"])


def test_regressor_package(tmp_path):
    x, y = make_regression(n_samples=300, n_features=4, random_state=1)
    frame = pd.DataFrame(x, columns=list("abcd"))
    est = LinearRegression().fit(frame, y)
    out = ondeck.package.build.package(est, frame, name="reg", version="1", out=tmp_path / "r")
    m = ondeck.load(out)
    assert m.task == "regression"
    assert np.abs(m.predict(frame) - est.predict(frame.astype(np.float32))).max() < 1e-3 * np.abs(y).max()
    with pytest.raises(ondeck.errors.UserError, match="regressor"):
        m.predict_proba(frame)


def test_parity_bar_is_enforced(fitted):
    tmp, _, _ = fitted
    res = ondeck_cli("package", "--estimator", tmp / "model.joblib", "--reference", tmp / "ref.csv", "--name", "toy",
                     "--version", "1", "--out", tmp / "pkg", "--parity-tolerance", "-1")
    assert res.returncode == 2
    assert "disagree" in res.stderr and "--parity-tolerance" in res.stderr
    assert not (tmp / "pkg").exists()


@pytest.mark.parametrize("case, message", [
    ("missing_estimator", "estimator file not found"),
    ("not_an_estimator", "does not hold a scikit-learn estimator"),
    ("unreadable", "cannot read estimator"),
    ("missing_reference", "reference file not found"),
    ("wrong_columns", "reference columns do not match the estimator: missing f3"),
    ("empty_reference", "has no rows"),
    ("unsupported", "cannot convert"),
])
def test_bad_input_exits_2_with_one_line_and_no_partial_dir(fitted, case, message):
    tmp, _, frame = fitted
    est, ref = tmp / "model.joblib", tmp / "ref.csv"
    if case == "missing_estimator":
        est = tmp / "nope.joblib"
    elif case == "not_an_estimator":
        joblib.dump({"weights": [1, 2]}, est := tmp / "dict.joblib")
    elif case == "unreadable":
        (est := tmp / "garbage.joblib").write_bytes(b"not a pickle at all")
    elif case == "missing_reference":
        ref = tmp / "nope.csv"
    elif case == "wrong_columns":
        frame.drop(columns=["f3"]).to_csv(ref := tmp / "ref2.csv", index=False)
    elif case == "empty_reference":
        frame.iloc[:0].to_csv(ref := tmp / "ref3.csv", index=False)
    elif case == "unsupported":
        # a real scikit-learn classifier that skl2onnx has no converter for
        joblib.dump(LabelPropagation().fit(frame, np.arange(len(frame)) % 2), est := tmp / "odd.joblib")
    res = ondeck_cli("package", "--estimator", est, "--reference", ref, "--name", "toy", "--version", "1", "--out", tmp / "pkg")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp / "pkg").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".pkg.")]  # no temporary leftovers


def test_examples_are_deterministic_and_ordered_by_quality(examples_dir, tmp_path):
    from ondeck.package.examples import build_examples

    metas = {v: json.loads((examples_dir / "churn" / v / "ondeck.json").read_text()) for v in ("v1", "v2", "v2-bad")}
    acc = {v: m["evaluation"]["accuracy"] for v, m in metas.items()}
    assert acc["v2"] > acc["v1"] > acc["v2-bad"] + 0.05, acc
    v1 = metas["v1"]["lineage"]["params"]
    assert v1["n_estimators"] == 100 and v1["max_depth"] == 8
    assert len(metas["v1"]["inputs"][0]["features"]) == 20
    assert (examples_dir / "cancer" / "v1" / "model.onnx").is_file()
    ref = json.loads((examples_dir / "churn" / "v1" / "reference.json").read_text())
    assert ref["features"]["region"]["kind"] == "categorical"

    again = tmp_path / "again"
    build_examples(again, log=lambda m: None)
    for rel in ("churn/v1/model.onnx", "churn/v2/reference.json", "cancer/v1/model.onnx"):
        assert (again / rel).read_bytes() == (examples_dir / rel).read_bytes(), rel
