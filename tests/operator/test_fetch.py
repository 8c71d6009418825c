"""The init container that fetches an http(s) model package and checks its sha256."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

from ondeck.operator.fetch import FetchError, fetch, main
from tests.helpers import free_port, wait_for


def _tar(path: Path, files: dict[str, bytes], prefix: str = "", symlink: str | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            link = tarfile.TarInfo(symlink)
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A static file server on loopback, as a real subprocess."""
    root = tmp_path_factory.mktemp("www")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(base + "/", timeout=1).status == 200, timeout=20, what="http.server")
        yield root, base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


PACKAGE = {"ondeck.json": b'{"format": "x"}', "model.onnx": b"onnx-bytes"}


@pytest.mark.parametrize("prefix", ["", "churn-v2/"], ids=["flat", "one-top-dir"])
def test_fetches_checks_and_unpacks(server, tmp_path, prefix):
    root, base = server
    sha = _tar(root / f"pkg{len(prefix)}.tar.gz", PACKAGE, prefix)
    dest = tmp_path / "models" / "canary"
    fetch(f"{base}/pkg{len(prefix)}.tar.gz", sha, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "ondeck.json"]
    assert (dest / "model.onnx").read_bytes() == b"onnx-bytes"


def test_wrong_checksum_unpacks_nothing(server, tmp_path):
    root, base = server
    _tar(root / "tampered.tar.gz", PACKAGE)
    dest = tmp_path / "m"
    with pytest.raises(FetchError, match="sha256 is [0-9a-f]{64}, expected 0{64}: refusing to serve it"):
        fetch(f"{base}/tampered.tar.gz", "0" * 64, dest)
    assert list(dest.iterdir()) == []


def test_links_in_the_archive_are_refused(server, tmp_path):
    root, base = server
    sha = _tar(root / "evil.tar.gz", PACKAGE, symlink="passwd")
    with pytest.raises(FetchError, match="'passwd' is not a file or directory"):
        fetch(f"{base}/evil.tar.gz", sha, tmp_path / "m")


def test_missing_archive_fails_at_once_with_the_status(server, tmp_path, capsys):
    _, base = server
    assert main(["--url", f"{base}/nope.tar.gz", "--sha256", "0" * 64, "--dest", str(tmp_path / "m")]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_a_restarted_fetch_starts_from_an_empty_directory(server, tmp_path):
    root, base = server
    sha = _tar(root / "again.tar.gz", PACKAGE)
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "half-written").write_text("x")
    fetch(f"{base}/again.tar.gz", sha, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "ondeck.json"]
