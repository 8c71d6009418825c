"""`ondeck examples`: the example packages, built offline and deterministically."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="where to write churn/v1, churn/v2, churn/v2-bad, cancer/v1 and data/")


def run(args) -> int:
    import sys

    from ondeck.package.examples import build_examples

    build_examples(args.out, log=lambda msg: print(msg, file=sys.stderr))
    return 0
