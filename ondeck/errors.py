"""The errors ondeck raises on purpose, each mapped once to an exit code or a protocol status."""
from __future__ import annotations


class OndeckError(Exception):
    """Base of every error that is the user's to fix (bad input, bad file, bad manifest).

    The CLI prints its message as one line and exits 2; servers answer it with a 4xx.
    """

    exit_code = 2


class UserError(OndeckError):
    """A bad command-line argument, file or manifest."""


class InvalidInput(OndeckError):
    """A request or a batch of rows the model cannot take.

    ``reason`` is a short stable code (used as a metric label: keep the set small); the message
    names the problem for a person.
    """

    status = 400  # HTTP status; the gRPC front-end maps 4xx to INVALID_ARGUMENT / NOT_FOUND

    def __init__(self, reason: str, message: str, status: int = 400):
        super().__init__(message)
        self.reason = reason
        self.status = status


class NotFound(InvalidInput):
    """An unknown model or version."""

    def __init__(self, message: str):
        super().__init__("not_found", message, status=404)
