"""The init container of an http(s) model: download the package archive, check it, unpack it.

``python -m ondeck.operator.fetch --url URL --sha256 HEX --dest DIR``

The archive (``.tar.gz``, ``.tgz`` or ``.tar``) must hash to ``--sha256``, or nothing is unpacked and
the container fails (the pod stays in Init, and the Deployment never turns Ready: a wrong model is
never served). Unpacking refuses links and paths leaving ``DIR``. An archive holding one top-level
directory is unpacked with that directory stripped, so ``DIR/ondeck.json`` exists either way.
Transient download failures are retried a bounded number of times.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
ATTEMPTS = 4


class FetchError(Exception):
    pass


def fetch(url: str, sha256: str, dest: Path, *, timeout: float = 600, max_bytes: int = 16 << 30) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for leftover in dest.iterdir():  # a restarted init container starts over
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "package.tar"
        _download(url, archive, timeout=timeout, max_bytes=max_bytes)
        digest = _sha256(archive)
        if digest != sha256.lower():
            raise FetchError(f"{url}: sha256 is {digest}, expected {sha256.lower()}: refusing to serve it")
        unpacked = Path(tmp) / "unpacked"
        _unpack(archive, unpacked)
        root = _package_root(unpacked)
        for item in root.iterdir():
            shutil.move(str(item), dest / item.name)
    return dest


def _download(url: str, to: Path, *, timeout: float, max_bytes: int) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(to, "wb") as out:
                size = 0
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{url}: larger than {max_bytes} bytes")
                    out.write(chunk)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == ATTEMPTS:
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == ATTEMPTS:
                raise FetchError(f"{url}: {getattr(exc, 'reason', exc)}") from None
        time.sleep(2 ** attempt)  # back off before the next (bounded) attempt


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _unpack(archive: Path, to: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise FetchError(f"archive entry {member.name!r} is not a file or directory")
            tar.extractall(to, filter="data")  # "data" refuses absolute paths and '..'
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot unpack the archive: {exc}") from None


def _package_root(unpacked: Path) -> Path:
    entries = list(unpacked.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not (unpacked / "ondeck.json").exists():
        return entries[0]
    return unpacked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ondeck.operator.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    try:
        fetch(args.url, args.sha256, args.dest, timeout=args.timeout)
    except FetchError as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 1
    print(f"fetch: {args.url} -> {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
