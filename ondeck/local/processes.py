"""The child processes of ``ondeck run``: an ``ondeck serve`` per variant replica, ``ondeck route`` in front.

Processes instead of pods. Servers listen on ports the kernel picks (port 0) and say which in their
first log line, so two runs (or another engineer's servers) never race for a port. Every child runs
in its own session (a Ctrl-C in the terminal reaches ``ondeck run`` alone, which then stops the
children in order) and is told by the kernel to terminate if ``ondeck run`` dies without stopping
it (``PR_SET_PDEATHSIG``), so a killed run leaves no orphans behind.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

ONDECK = [sys.executable, "-m", "ondeck.cli"]
# Set in every child's environment: on restart, a child still alive from an earlier run of the same
# state directory is recognised by it (and only such a child is stopped).
STATE_DIR_ENV = "ONDECK_RUN_STATE_DIR"
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

_SERVE_READY = re.compile(r"serving .* http=\S+:(\d+) grpc=\S+:(\d+)")
_ROUTE_READY = re.compile(r"REST on \S+:(\d+)(?:, gRPC on \S+:(\d+))?")
_PR_SET_PDEATHSIG = 1


class ChildFailed(Exception):
    """A child exited or did not become ready; the message ends with its last log line and the log's path."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a killed `ondeck run` may leave children; Ctrl-C still stops them


class Child:
    """One ``ondeck serve`` or ``ondeck route`` process, its log file and the ports it bound."""

    def __init__(self, role: str, name: str, argv: list[str], log_path: Path, state_dir: Path, ready_path: str):
        self.role, self.name, self.argv, self.log_path = role, name, argv, log_path
        self.state_dir = state_dir
        self.ready_path = ready_path
        self.http: int | None = None  # as the child announced them: proof that this child bound them
        self.grpc: int | None = None
        self.popen: subprocess.Popen | None = None
        self.restarts = 0
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http}"

    @property
    def grpc_address(self) -> str | None:
        return f"127.0.0.1:{self.grpc}" if self.grpc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.http = self.grpc = None
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent, env={**os.environ, STATE_DIR_ENV: str(self.state_dir)})

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_bytes()[self._log_offset:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def last_words(self) -> str:
        """The last line the child wrote (its error, usually) and where the rest is."""
        tail = self.log_tail(1)
        return f"{tail or 'no output'} (log: {self.log_path})"

    def poll_ready(self) -> bool:
        """True once the child said which ports it bound and answers its readiness path."""
        if not self.alive():
            raise ChildFailed(f"{self.describe()} exited with code {self.popen.returncode if self.popen else '?'}: "
                              f"{self.last_words()}")
        if self.http is None:
            match = (_SERVE_READY if self.role == "server" else _ROUTE_READY).search(self.log_tail(50))
            if not match:
                return False
            self.http = int(match.group(1))
            self.grpc = int(match.group(2)) if match.group(2) else None
        try:
            with urllib.request.urlopen(f"http://{self.http_address}{self.ready_path}", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        stop_all([self], timeout)

    def describe(self) -> str:
        what = self.role if self.name == self.role else f"{self.role} {self.name}"
        return what + (f" (pid {self.pid})" if self.pid else "")

    def to_dict(self) -> dict:
        return {"pid": self.pid, "http": self.http, "grpc": self.grpc, "log": str(self.log_path),
                "restarts": self.restarts}


def server(state_dir: Path, variant: str, replica: int, package: str, *, max_batch_size: int,
           max_batch_delay_us: int, payload_log_fraction: float = 0.0) -> Child:
    argv = ONDECK + ["serve", package, "--variant", variant, "--host", "127.0.0.1", "--http-port", "0",
                     "--grpc-port", "0", "--max-batch-size", str(max_batch_size),
                     "--max-batch-delay-us", str(max_batch_delay_us)]
    if payload_log_fraction > 0:
        argv += ["--payload-log-dir", str(state_dir / "payload" / f"{variant}-{replica}"),
                 "--payload-log-fraction", str(payload_log_fraction)]
    return Child("server", f"{variant}-{replica}", argv, state_dir / "logs" / f"{variant}-{replica}.log", state_dir,
                 "/v2/health/ready")


def router(state_dir: Path, config: Path, host: str, http_port: int, grpc_port: int | None) -> Child:
    argv = ONDECK + ["route", "--config", str(config), "--host", host, "--http-port", str(http_port)]
    if grpc_port is not None:
        argv += ["--grpc-port", str(grpc_port)]
    return Child("router", "router", argv, state_dir / "logs" / "router.log", state_dir, "/healthz")


def wait_ready(children: list[Child], timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Wait until every child is ready; ChildFailed (with its log) if one exits or ``timeout`` passes."""
    deadline = clock() + timeout
    pending = list(children)
    while pending:
        pending = [c for c in pending if not c.poll_ready()]
        if not pending:
            return
        if clock() >= deadline:
            names = ", ".join(c.describe() for c in pending)
            raise ChildFailed(f"{names} not ready after {timeout:.0f}s: {pending[0].last_words()}")
        time.sleep(0.1)  # polling a readiness endpoint: nothing to wait on but time


def stop_all(children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to all at once (they drain in parallel), a bounded wait, then SIGKILL for stragglers."""
    live = [c for c in children if c.alive()]
    for c in live:
        c.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in live:
        try:
            c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.popen.kill()
            c.popen.wait(timeout=timeout)


def stop_leftovers(pids: list[int], state_dir: Path) -> list[int]:
    """Stop children of an earlier run of ``state_dir`` that are still alive; returns their pids.

    Only a process whose environment names this state directory is touched: a recorded pid may
    have been reused by anything since.
    """
    stopped = []
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{STATE_DIR_ENV}={state_dir}".encode() not in environ:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(pid)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in stopped:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # not our child: no wait() possible, only polling
        if Path(f"/proc/{pid}").exists():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return stopped


def run_alive(state: dict) -> bool:
    """Whether the ``ondeck`` process a state file names is still running (its pid may have been reused)."""
    pid = state.get("pid")
    if not (state.get("running") and pid_alive(pid)):
        return False
    try:
        return b"ondeck" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: trust the pid


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
