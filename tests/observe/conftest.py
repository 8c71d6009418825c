"""Fixtures of the observe tests: helm, and the chart rendered with given values."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cluster import K8S_BIN
from tests.observe.sources import CHART


@dataclass(frozen=True)
class Helm:
    """The pinned helm that scripts/k8s-bin builds (instant once cached, as in CI)."""

    path: Path

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.path), *args], input=input, capture_output=True, text=True,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def template(self, values: dict | None = None, *, release: str = "ondeck",
                 namespace: str = "ondeck-system", check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm template` of the chart with ``values`` (on top of values.yaml)."""
        return self("template", release, str(CHART), "--namespace", namespace, "--values", "-",
                    input=yaml.safe_dump(values or {}), check=check)

    def render(self, values: dict | None = None, **kwargs) -> list[dict]:
        """The chart's objects as `helm template` writes them."""
        return [doc for doc in yaml.safe_load_all(self.template(values, **kwargs).stdout) if doc]


@pytest.fixture(scope="session")
def helm() -> Helm:
    bin_dir = os.environ.get("ONDECK_K8S_BIN")
    if not bin_dir:
        proc = subprocess.run([str(K8S_BIN)], capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            pytest.fail(f"scripts/k8s-bin failed:\n{proc.stderr[-3000:]}", pytrace=False)
        bin_dir = proc.stdout.strip().splitlines()[-1]
    path = Path(bin_dir) / "helm"
    if not path.is_file():
        pytest.fail(f"no helm in {bin_dir}", pytrace=False)
    return Helm(path)
