"""Fixtures shared by every test area."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.cluster"]


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    """The example packages (churn v1/v2/v2-bad, cancer v1, data/), built once per session.

    ONDECK_EXAMPLES points at an already built copy (e.g. from `ondeck examples`) to save time.
    """
    prebuilt = os.environ.get("ONDECK_EXAMPLES")
    if prebuilt and (Path(prebuilt) / "churn" / "v1" / "ondeck.json").is_file():
        return Path(prebuilt)
    from ondeck.package.examples import build_examples

    out = tmp_path_factory.mktemp("examples")
    build_examples(out, log=lambda msg: None)
    return out
