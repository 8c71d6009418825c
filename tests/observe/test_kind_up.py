"""scripts/kind-up needs Docker, which CI has not: it is syntax-checked here, never run."""
from __future__ import annotations

import subprocess

from tests.observe.sources import REPO

KIND_UP = REPO / "scripts" / "kind-up"


def test_kind_up_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(KIND_UP)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_kind_up_explains_itself_without_docker() -> None:
    proc = subprocess.run([str(KIND_UP), "--help"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "charts/ondeck" in proc.stdout and "Prometheus" in proc.stdout
