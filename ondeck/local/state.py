"""The state directory of one ``ondeck run``: what a restart resumes from and what ``ondeck status`` reads.

Layout (default ``./.ondeck/<name>/``)::

    state.json      rollout and monitor state, decisions, variants with their pids and ports
    router.yaml     the router's config (what the ConfigMap is in a cluster)
    commands/       one file per ``ondeck promote`` / ``ondeck abort``, taken by the next tick
    series.jsonl    one line per tick: weights, rates, latency, drift statistics (for plots)
    logs/           every child's output

Commands go through files rather than a socket so that they need nothing listening: the command
writes ``commands/<id>.json`` atomically, the run's loop takes it on its next tick (within a second)
and records the outcome under ``lastCommands`` in ``state.json``, where the command waits for it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

COMMANDS = ("promote", "abort")
SERIES_MAX_BYTES = 64 << 20  # series.jsonl is rotated to series.jsonl.1 past this


def default_dir(name: str) -> Path:
    return Path(".ondeck") / name


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """Atomically (temp file + rename): a reader never sees half a file."""
    # One write of the whole text: json.dump would write it piecemeal, slowly.
    text = json.dumps(data, indent=indent, separators=None if indent else (",", ":"), default=_jsonable)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the state from the user's other tools
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class StateDir:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self.state_file = self.path / "state.json"
        self.router_file = self.path / "router.yaml"
        self.commands_dir = self.path / "commands"
        self.series_file = self.path / "series.jsonl"
        self.logs_dir = self.path / "logs"

    def create(self) -> None:
        for d in (self.path, self.commands_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return self.state_file.is_file()

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            from ondeck.errors import UserError

            raise UserError(f"{self.state_file} is not valid JSON ({exc}); move it away to start afresh") from None

    def save(self, state: dict[str, Any]) -> None:
        write_json(self.state_file, state)

    # --- commands ----------------------------------------------------------------------------------

    def post_command(self, command: str) -> str:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}")
        command_id = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        self.commands_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.commands_dir / f"{command_id}.json", {"id": command_id, "command": command})
        return command_id

    def take_commands(self) -> list[dict[str, Any]]:
        """The commands waiting, oldest first; each is removed as it is taken."""
        out = []
        try:
            files = sorted(p for p in self.commands_dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            return out
        for p in files[:100]:
            try:
                cmd = json.loads(p.read_text())
            except (OSError, ValueError):
                cmd = None
            p.unlink(missing_ok=True)
            if isinstance(cmd, dict) and cmd.get("command") in COMMANDS:
                out.append(cmd)
        return out

    # --- series ------------------------------------------------------------------------------------

    def append_series(self, record: dict[str, Any]) -> None:
        try:
            if self.series_file.stat().st_size > SERIES_MAX_BYTES:
                os.replace(self.series_file, self.series_file.with_suffix(".jsonl.1"))
        except FileNotFoundError:
            pass
        with open(self.series_file, "a") as f:
            f.write(json.dumps(record, default=_jsonable, separators=(",", ":")) + "\n")

    def read_series(self) -> list[dict[str, Any]]:
        out = []
        for path in (self.series_file.with_suffix(".jsonl.1"), self.series_file):
            if path.is_file():
                out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return out
