"""`ondeck.load`: in-process prediction with the server's validation rules."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ondeck
from ondeck.errors import InvalidInput, UserError


@pytest.fixture(scope="module")
def churn(examples_dir):
    return ondeck.load(examples_dir / "churn" / "v1"), pd.read_csv(examples_dir / "data" / "churn-live.csv")


def test_predict_numpy_and_dataframe_agree(churn):
    model, live = churn
    frame = live[model.features]
    by_frame = model.predict_proba(frame)
    by_array = model.predict_proba(frame.to_numpy())
    assert by_frame.shape == (len(live), 2) and np.allclose(by_frame.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(by_frame, by_array)
    assert set(np.unique(model.predict(frame))) <= {0, 1}
    # columns are matched by name, not position
    shuffled = frame[frame.columns[::-1]]
    assert np.array_equal(model.predict_proba(shuffled), by_frame)
    # a single row as a flat vector
    assert model.predict_proba(frame.iloc[0].to_numpy()).shape == (1, 2)
    # the model is genuinely predictive on live rows
    assert (model.predict(frame) == live["churned"]).mean() > 0.8


@pytest.mark.parametrize("bad, reason, message", [
    (np.zeros((0, 20)), "zero_rows", "zero rows"),
    (np.zeros((2, 19)), "feature_count", "expected 20 features (tenure_months, monthly_charges"),
    (np.zeros((2, 3, 4)), "shape", "expected rows of shape"),
    ([["a"] * 20], "non_numeric", "rows must be numbers"),
])
def test_bad_rows_are_rejected_with_reason(churn, bad, reason, message):
    model, _ = churn
    with pytest.raises(InvalidInput) as err:
        model.predict(bad)
    assert err.value.reason == reason and message in str(err.value)


def test_nan_policy(churn, examples_dir):
    model, live = churn
    x = live[model.features].to_numpy(np.float32)[:3].copy()
    x[1, 4] = np.nan
    with pytest.raises(InvalidInput, match="row 1 feature 'support_calls' is nan"):
        model.predict(x)
    permissive = ondeck.load(examples_dir / "churn" / "v1", nan_policy="allow")
    assert permissive.predict(x).shape == (3,)


def test_dataframe_missing_column_and_non_numeric(churn):
    model, live = churn
    with pytest.raises(InvalidInput, match="missing feature column: age"):
        model.predict(live.drop(columns=["age"]))
    bad = live[model.features].head(3).astype(object)
    bad.loc[1, "age"] = "forty"
    with pytest.raises(InvalidInput, match="feature 'age' has a non-numeric value 'forty'"):
        model.predict(bad)


def test_not_a_package(tmp_path):
    with pytest.raises(UserError, match="not an ondeck package"):
        ondeck.load(tmp_path)
