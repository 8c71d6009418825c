"""`ondeck status / promote / abort` (not built yet)."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("name", help="ModelDeployment name")


def run(args) -> int:
    from ondeck.errors import UserError

    raise UserError(f"'ondeck {args.command}' is not built yet")
