"""`ondeck route` (not built yet)."""
from __future__ import annotations


def configure(parser) -> None:
    pass


def run(args) -> int:
    from ondeck.errors import UserError

    raise UserError("'ondeck route' is not built yet")
