"""`ondeck demo` as a user runs it: three scenarios, their decisions and the plots."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.local.conftest import ONDECK


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_demo_promotes_rolls_back_and_catches_drift(tmp_path, examples_dir):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "examples").symlink_to(examples_dir)  # built once per session; the demo reuses what is there
    done = subprocess.run(ONDECK + ["demo", "--out", str(out)], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    decisions = json.loads((out / "decisions.json").read_text())
    by_scenario = {}
    for d in decisions:
        assert {"time", "model", "action", "reason", "evidence"} <= set(d)
        by_scenario.setdefault(d["scenario"], []).append(d["action"])
    assert by_scenario["canary"][-1] == "promote" and "rollback" not in by_scenario["canary"]
    assert by_scenario["rollback"][-1] == "rollback"
    assert by_scenario["drift"][:2] == ["drift", "retrain"]
    drift = next(d for d in decisions if d["action"] == "drift")
    assert "monthly_charges" in drift["evidence"]["columns"]

    received = json.loads((out / "retrain-requests.json").read_text())
    assert len(received) == 1 and received[0]["body"]["model"] == "churn"  # once, though drift went on
    for name in ("weights.png", "quality.png", "drift.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name
        assert str(out / name) in done.stdout
    assert "as expected" in done.stdout and "NOT as expected" not in done.stdout
