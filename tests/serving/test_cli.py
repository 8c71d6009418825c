"""`ondeck serve` refuses bad arguments with one line and exit code 2, before listening."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/pkg"], "not an ondeck package"),
    (["{churn}", "--workers", "0"], "--workers must be at least 1"),
    (["{churn}", "--workers", "2", "--http-port", "0"], "the ports must be fixed"),
    (["{churn}:max_batch_size=x"], "max_batch_size must be an integer"),
    (["{churn}:colour=blue"], "unknown package option 'colour'"),
    (["{churn}", "{churn}"], "churn:v1 is given twice"),
    (["{churn}", "--payload-log-fraction", "0.5"], "needs --payload-log-dir"),
    (["{churn}", "--payload-log-fraction", "2", "--payload-log-dir", "/tmp"], "between 0 and 1"),
    (["{churn}", "--max-batch-size", "0"], "--max-batch-size must be at least 1"),
])
def test_bad_arguments(examples_dir, args, message):
    churn = str(examples_dir / "churn" / "v1")
    proc = subprocess.run([sys.executable, "-m", "ondeck.cli", "serve", *[a.format(churn=churn) for a in args]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_package_without_its_reference_profile(examples_dir, tmp_path):
    import shutil

    broken = tmp_path / "churn-v1"
    shutil.copytree(examples_dir / "churn" / "v1", broken)
    (broken / "reference.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "ondeck.cli", "serve", str(broken)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "reference.json is missing" in proc.stderr, proc.stderr


def test_a_port_already_taken(examples_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "ondeck.cli", "serve", str(examples_dir / "churn" / "v1"),
                               "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
