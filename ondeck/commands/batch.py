"""`ondeck batch`: score a CSV or Parquet file offline, streaming in chunks."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("package", metavar="DIR", help="model package directory")
    parser.add_argument("--input", required=True, metavar="FILE", help="rows to score (.csv or .parquet)")
    parser.add_argument("--output", required=True, metavar="FILE.parquet", help="predictions, one row per valid input row")
    parser.add_argument("--errors", metavar="FILE.csv", help="invalid rows with their row number and reason")
    parser.add_argument("--passthrough", default="", metavar="COLS",
                        help="comma-separated input columns copied to the output (ids, keys)")
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="rows per chunk (default 65536)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    from ondeck.batch import score_file
    from ondeck.errors import UserError

    if args.chunk_rows < 1:
        raise UserError("--chunk-rows must be at least 1")
    passthrough = tuple(c for c in args.passthrough.split(",") if c)
    summary = score_file(args.package, args.input, args.output, args.errors, chunk_rows=args.chunk_rows,
                         passthrough=passthrough, progress=not args.no_progress)
    print(summary.line(args.output, args.errors))
    return 0
