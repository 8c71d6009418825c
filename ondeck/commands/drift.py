"""`ondeck drift DIR LIVE`: check a file of live rows for drift against a package's reference."""
from __future__ import annotations

import argparse


def configure(parser) -> None:
    parser.add_argument("package", metavar="DIR", help="the model package (its reference.json is the baseline)")
    parser.add_argument("live", metavar="LIVE", help="live rows, .csv or .parquet, with the package's feature columns")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--min-effect", type=_non_negative, default=None, metavar="W",
                        help="smallest shift that counts, as chi distance over the reference bins "
                             "(Cohen's w; PSI is about w squared; default 0.1)")
    parser.add_argument("--alpha", type=_probability, default=None, metavar="A",
                        help="false-alarm level of the whole check, Holm-corrected across columns (default 0.01)")


def run(args) -> int:
    import json

    from ondeck.decide import DriftPolicy
    from ondeck.drift_check import check_file, format_table

    options = {k: v for k, v in (("min_effect", args.min_effect), ("alpha", args.alpha)) if v is not None}
    report = check_file(args.package, args.live, DriftPolicy(**options))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0  # the verdict is in the output, not the exit code


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _non_negative(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 2:
        raise argparse.ArgumentTypeError(f"must be in [0, 2), got {text}")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value
