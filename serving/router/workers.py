"""`ondeck route --workers N`: N router processes sharing the ports, one router to the outside.

A Python router is one thread, so a second core (or a fair share of a busy machine) needs a second
process. The process the user started becomes a supervisor: it spawns N workers, each a complete
router binding the same ports with SO_REUSEPORT (the kernel spreads connections over them), and
restarts a worker that dies. Three things would otherwise differ between workers:

- ``/metrics``: each worker writes a snapshot of its series into a shared directory every second,
  and the worker that answers a scrape adds the others' latest snapshots to its own live numbers
  (so the others' part is at most a second old).
- ``POST /admin/reload``: the worker that gets it applies the file now and asks the supervisor
  (SIGHUP) to have every worker check the file now too.
- The exact split and the shadow fraction are exact per worker, so over any 1,000 consecutive
  requests a variant's share is within N requests of its weight. Stickiness is a hash: unchanged.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from ondeck.serving.router.metrics import RouterMetrics, Snapshot

SNAPSHOT_SECONDS = 1.0
QUICK_DEATH_SECONDS = 2.0  # a worker that dies this soon after its start is failing, not crashing
MAX_QUICK_DEATHS = 3


class WorkerGroup:
    """What a worker knows about its siblings: where their metric snapshots are, who the supervisor is."""

    def __init__(self, index: int, state_dir: str | os.PathLike):
        self.index = index
        self.state_dir = Path(state_dir)

    def write_snapshot(self, metrics: RouterMetrics) -> None:
        tmp = self.state_dir / f".{self.index}.json"
        tmp.write_bytes(orjson.dumps(metrics.snapshot()))
        os.replace(tmp, self.state_dir / f"{self.index}.json")

    def peer_snapshots(self) -> list[Snapshot]:
        peers = []
        for path in self.state_dir.glob("*.json"):
            if path.stem != str(self.index) and not path.name.startswith("."):  # not our own, nor one being written
                try:
                    peers.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError):
                    pass  # a worker being restarted: its numbers are back within a second
        return peers

    def reload_all(self) -> None:
        os.kill(os.getppid(), signal.SIGHUP)


def supervise(worker_argv: list[str], workers: int) -> int:
    """Run ``workers`` copies of ``ondeck route`` (``worker_argv`` + the worker options) until SIGTERM/SIGINT."""
    state_dir = tempfile.mkdtemp(prefix="ondeck-route-")
    running: dict[int, tuple[subprocess.Popen, float]] = {}  # index -> (process, started)
    quick_deaths = 0
    stopping = False

    def start(index: int) -> None:
        argv = [sys.executable, "-m", "ondeck.cli", "route", *worker_argv,
                "--worker-index", str(index), "--worker-state", state_dir]
        running[index] = (subprocess.Popen(argv), time.monotonic())

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for proc, _ in running.values():
            proc.send_signal(signum)

    def reload_all(_signum, _frame) -> None:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload_all)
    for index in range(workers):
        start(index)
    status = 0
    try:
        while running:
            time.sleep(0.2)
            for index, (proc, started) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[index]
                if stopping:
                    continue
                print(f"ondeck route: worker {index} exited with {code}", file=sys.stderr, flush=True)
                quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH_SECONDS else 0
                if quick_deaths >= MAX_QUICK_DEATHS or code == 2:  # 2: the worker's own error (port taken ...)
                    status = code or 1
                    stop(signal.SIGTERM, None)
                else:
                    start(index)
    finally:
        for proc, _ in running.values():
            proc.kill()
        for path in Path(state_dir).glob("*"):
            path.unlink(missing_ok=True)
        os.rmdir(state_dir)
    return status
