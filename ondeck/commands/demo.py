"""`ondeck demo [--out DIR]`: a canary promoted, a bad canary rolled back, drift caught (docs/demo.md)."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="ondeck-demo", metavar="DIR",
                        help="where the example packages, manifests, runs, decisions.json and plots go "
                             "(default ./%(default)s; packages already there are reused)")
    parser.add_argument("--rate", type=float, default=None, metavar="RPS",
                        help="requests per second of generated traffic (default 100)")


def run(args) -> int:
    import time

    from ondeck.errors import UserError
    from ondeck.local import demo

    rate = demo.RATE if args.rate is None else args.rate
    if not 10 <= rate <= 2000:
        raise UserError("--rate must be between 10 and 2000 requests per second")
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] {line}", flush=True)

    outcomes = demo.run_demo(args.out, log=log, rate=rate)
    failed = [o.scenario.key for o in outcomes if not o.ok]
    if failed:
        log(f"scenario(s) that did not go as expected: {', '.join(failed)} (see the runs' logs under {args.out}/runs)")
        return 1
    return 0
